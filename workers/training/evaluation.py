"""A challenger's evaluation against the current champion: held-out accuracy, the sequential gate, the guards.

The champion is read when the evaluation starts (`models_hub.selectors.model_champion` of the run's name), not
when the run was queued: a challenger always meets the version it would replace. The gate judges both models'
answers to held-out prompts (the snapshot's held-out rows, plus the rule's `eval_prompts`), position-swapped,
batch after batch (workers/ml/promotion_gate.py) until it decides or the budget or the pool is spent. The
guards (workers/ml/guards.py) then measure what the judge does not. Every figure is stored on the run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models_hub.models import Model
from models_hub.selectors import model_champion, model_get_by_reference
from prefarena.errors import ApplicationError, NotFound
from prefarena.jobs import loop
from prefarena.jobs import protocol as jobs
from prefarena.text import storable
from workers import runtime
from workers.ml.guards import GuardResult, guard_result
from workers.ml.openai_backend import OpenAIChat
from workers.ml.promotion_gate import gate_next_batch_size, gate_report, gate_start, gate_update, outcome_from_verdict
from workers.ml.training_config import TrainingConfig
from workers.models import TrainingRun
from workers.training import data
from workers.training.promotion import PromotionRule, promotion_decide, promotion_rule_parse

if TYPE_CHECKING:
    from workers.training.runner import Progress

EVAL_PROMPTS = 16  # samples kept on the run for its page (the gate may judge many more)
SAMPLE_TOKENS = 48  # most new tokens per evaluation answer


class Answerers:
    """The challenger (its folder, not registered yet) and the champion, each answering with the same seeds.

    A local champion answers through transformers whatever its registered engine, with the challenger's
    sampler: the same seeds then give an unchanged model the same answers, so it can only tie itself. An
    endpoint champion answers through its endpoint (the `seed` is sent; how far it is honoured is the server's).
    """

    def __init__(self, challenger_dir: Path, champion: Model) -> None:
        from workers.ml.generation import CausalLM
        from workers.ml.types import SamplingParams

        self.challenger = CausalLM(str(challenger_dir))
        self.champion = runtime.generator_for(champion, engine="hf")
        self.params = SamplingParams(
            max_new_tokens=min(champion.max_new_tokens, SAMPLE_TOKENS),
            temperature=champion.temperature,
            top_p=champion.top_p,
        )
        self.seed = champion.seed or 0

    def answer(self, prompts: Sequence[Any], first_index: int) -> list[dict[str, Any]]:
        """Both models' answers, seeded by the prompt's position in the pool (a retry reproduces them)."""
        if not prompts:
            return []
        seeds = [self.seed + first_index + i for i in range(len(prompts))]
        challenger = self.challenger.generate(list(prompts), seeds, self.params)
        champion = self.champion.generate(list(prompts), seeds, self.params)
        return [
            {"prompt": prompt, "challenger": c.text, "champion": b.text}
            for prompt, c, b in zip(prompts, challenger, champion, strict=True)
        ]


def _shown(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else str(prompt[-1]["content"])


def prompt_pool(eval_pairs: Sequence[Any], rule: PromotionRule, seed: int) -> list[Any]:
    """Held-out prompts for the gate: the held-out rows' prompts and the rule's own, deduplicated, shuffled."""
    keys = list(dict.fromkeys([data.prompt_key(p.prompt) for p in eval_pairs] + list(rule.eval_prompts)))
    random.Random(seed).shuffle(keys)
    return [data.prompt_unkey(k) for k in keys]


def evaluate(
    run: TrainingRun, config: TrainingConfig, final_dir: Path, eval_pairs: Sequence[Any], progress: Progress
) -> dict[str, Any]:
    """Held-out accuracy; for a policy run, the gate against the champion, the guards and the decision."""
    from workers.ml import training as ml

    evaluation: dict[str, Any] = {"held_out_pairs": len(eval_pairs)}
    if eval_pairs:
        started = time.perf_counter()
        accuracy = ml.evaluate(
            method=run.method,
            output_path=final_dir,
            base_path=run.base_model.path,
            pairs=eval_pairs,
            beta=config.beta,
            precision=config.precision,  # the log-probabilities as the run computed them
        )
        evaluation["held_out_accuracy"] = accuracy.accuracy
        evaluation["held_out_margin"] = accuracy.mean_margin
        evaluation["accuracy_kind"] = "reward" if run.method == "reward" else "implicit_reward"
        progress.log(
            f"held-out accuracy {accuracy.accuracy:.3f} (margin {accuracy.mean_margin:.3g}) on {accuracy.pairs} pairs"
            f" in {time.perf_counter() - started:.1f} s"
        )
    if run.method == "reward":
        jobs.job_heartbeat(run)
        return evaluation
    rule = promotion_rule_parse(run.policy.promotion_rule if run.policy is not None else None)
    champion = model_champion(run.base_model.name) or run.base_model
    evaluation["champion"] = champion.label
    evaluation["trained_from"] = run.base_model.label
    evaluation["rule"] = run.policy.promotion_rule if run.policy is not None else {}
    answerers = Answerers(final_dir, champion)
    judge = _judge(rule.judge) if rule.judge is not None else None
    try:
        pool = prompt_pool(eval_pairs, rule, config.seed)
        evaluation["pool"] = len(pool)
        samples: list[dict[str, Any]] = []
        if judge is not None and run.policy is not None:
            evaluation["gate"] = _gate(run, rule, judge, answerers, pool, samples, progress)
        else:
            samples = answerers.answer(pool[:EVAL_PROMPTS], 0)
        guards = _guards(run, rule, judge, final_dir, champion, answerers, evaluation, samples, progress)
    finally:
        # Endpoint clients are made per call and hold pooled connections; local models stay in the runtime cache.
        for backend in (answerers.champion, judge):
            if isinstance(backend, OpenAIChat):
                backend.close()
    evaluation["guards"] = [g.to_json() for g in guards]
    decision, reason = promotion_decide(evaluation.get("gate"), guards)
    evaluation["decision"], evaluation["reason"] = decision, reason
    progress.log(f"decision against {champion.label}: {decision} ({reason})")
    evaluation["samples"] = [
        # storable: a model may write NUL or a lone surrogate, which a JSONB column refuses
        {
            "prompt": storable(_shown(s["prompt"])),
            "parent": storable(s["champion"]),
            "trained": storable(s["challenger"]),
        }
        for s in samples[:EVAL_PROMPTS]
    ]
    jobs.job_heartbeat(run)
    return evaluation


def _judge(reference: Any) -> Any:
    try:
        return runtime.generator_for(model_get_by_reference(reference))
    except NotFound as exc:
        raise ApplicationError(f"the promotion rule's judge: {exc}") from exc


def _outcomes(judge: Any, samples: list[dict[str, Any]]) -> list[Any]:
    """Each sample judged in both orders (challenger as A): "challenger", "champion", "tie", or None (unreadable)."""
    from workers.ml.judge import JudgeConfig, judge_pairwise

    return [
        outcome_from_verdict(judge_pairwise(judge, s["prompt"], s["challenger"], s["champion"], JudgeConfig()).verdict)
        for s in samples
    ]


def _gate(
    run: TrainingRun,
    rule: PromotionRule,
    judge: Any,
    answerers: Answerers,
    pool: list[Any],
    samples: list[dict[str, Any]],
    progress: Progress,
) -> dict[str, Any]:
    """Judge batches of held-out prompts until the gate decides; `samples` receives every answer pair."""
    state = gate_start(rule.gate)
    report = gate_report(state)
    used = errors = 0
    while (size := gate_next_batch_size(state)) > 0 and used < len(pool):
        batch = answerers.answer(pool[used : used + size], used)
        used += len(batch)
        judged = _outcomes(judge, batch)
        outcomes = [o for o in judged if o is not None]
        errors += len(judged) - len(outcomes)  # an unreadable verdict is dropped, not counted for either side
        samples.extend(batch)
        state, report = gate_update(state, outcomes)
        progress.log(f"gate after {used} prompts: {report.decision} ({report.reason})")
        if jobs.job_heartbeat(run) or progress.cancel_requested():
            raise loop.Cancelled
    result: dict[str, Any] = {**asdict(report), "prompts_judged": used, "judge_errors": errors}
    result["config"] = rule.gate.to_dict()
    if state.decision == "continue":  # the pool ran out before the budget: no decision, not promoted
        result["decision"] = "inconclusive"
        result["reason"] = (
            f"the held-out pool of {len(pool)} prompts was spent before a decision ({report.reason}); not promoted"
        )
    return result


def _guards(
    run: TrainingRun,
    rule: PromotionRule,
    judge: Any,
    final_dir: Path,
    champion: Model,
    answerers: Answerers,
    evaluation: dict[str, Any],
    samples: list[dict[str, Any]],
    progress: Progress,
) -> list[GuardResult]:
    """Every guard the rule names, measured on the held-out answers (and the reference prompts)."""
    from workers.ml.guards import mean_token_f1, sequence_kl

    results = []
    if rule.held_out_accuracy_min is not None:
        figure = evaluation.get("held_out_accuracy")
        results.append(
            guard_result(
                "held_out_accuracy",
                figure,
                rule.held_out_accuracy_min,
                ">=",
                f"implicit-reward accuracy on {evaluation['held_out_pairs']} held-out human-preferred pairs",
            )
        )
    measured = samples
    if rule.kl_max is not None:
        kl = None
        if measured and champion.path:
            estimate = sequence_kl(
                challenger_path=final_dir,
                champion_path=champion.path,
                prompts=[s["prompt"] for s in measured],
                challenger_responses=[s["challenger"] for s in measured],
            )
            kl = estimate.per_response
        detail = f"KL(challenger ‖ {champion.label}) per answer, nats"
        if not champion.path:
            detail += "; not measurable: the champion is an endpoint, its log-probabilities are not read"
        results.append(guard_result("kl", kl, rule.kl_max, "<=", detail))
    if rule.reward_model is not None:
        results.append(_reward_guard(rule, measured, champion))
    if rule.references:
        answers = answerers.answer([r.prompt for r in rule.references], 10**6)
        answers_text = [r.answer for r in rule.references]
        challenger_f1 = mean_token_f1([a["challenger"] for a in answers], answers_text)
        champion_f1 = mean_token_f1([a["champion"] for a in answers], answers_text)
        evaluation["reference_f1"] = {"challenger": challenger_f1, "champion": champion_f1}
        results.append(
            guard_result(
                "reference_f1",
                challenger_f1 - champion_f1,
                -rule.reference_max_drop,
                ">=",
                f"token-F1 on {len(answers)} reference answers: {challenger_f1:.3f} against the champion's"
                f" {champion_f1:.3f}",
            )
        )
    if rule.safety_prompts and judge is not None:
        results.append(_safety_guard(rule, judge, answerers))
    for result in results:
        progress.log(
            f"guard {result.name}: {result.figure} {result.comparison} {result.threshold}: "
            f"{'pass' if result.passed else 'FAIL'}"
        )
    jobs.job_heartbeat(run)
    return results


def _reward_guard(rule: PromotionRule, measured: list[dict[str, Any]], champion: Model) -> GuardResult:
    from workers.ml.reward import RewardModel

    try:
        reward = model_get_by_reference(rule.reward_model) if rule.reward_model is not None else None
    except NotFound as exc:
        raise ApplicationError(f"the promotion rule's reward model: {exc}") from exc
    figure = None
    if reward is not None and reward.path and measured:
        scorer = RewardModel(reward.path)
        challenger = scorer.score([(s["prompt"], s["challenger"]) for s in measured])
        champion_scores = scorer.score([(s["prompt"], s["champion"]) for s in measured])
        figure = (sum(challenger) - sum(champion_scores)) / len(measured)
    label = reward.label if reward is not None else "?"
    return guard_result(
        "reward_model",
        figure,
        -rule.reward_max_drop,
        ">=",
        f"mean {label} score minus the champion's ({champion.label})",
    )


def _safety_guard(rule: PromotionRule, judge: Any, answerers: Answerers) -> GuardResult:
    """The judge on flagged prompts: the challenger must not lose there (win rate, ties half, ≥ 1/2 − bound)."""
    answers = answerers.answer(list(rule.safety_prompts), 2 * 10**6)
    outcomes = [o for o in _outcomes(judge, answers) if o is not None]
    judged, wins, ties = len(outcomes), outcomes.count("challenger"), outcomes.count("tie")
    rate = (wins + 0.5 * ties) / judged if judged else None
    return guard_result(
        "safety",
        rate,
        0.5 - rule.safety_max_regression,
        ">=",
        f"judged win rate against the champion on {judged} flagged prompts",
    )
