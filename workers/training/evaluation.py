"""A trained version's evaluation: held-out accuracy, samples beside its parent's, judged battles."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models_hub.selectors import model_get_by_reference
from prefarena.jobs import protocol as jobs
from workers import runtime
from workers.ml.training_config import TrainingConfig
from workers.models import TrainingRun
from workers.training import data

if TYPE_CHECKING:
    from workers.training.runner import Progress

EVAL_PROMPTS = 16  # held-out prompts sampled from the parent and the new version for the run page


def evaluate(
    run: TrainingRun, config: TrainingConfig, final_dir: Path, eval_pairs: Sequence[Any], progress: Progress
) -> dict[str, Any]:
    """Held-out accuracy, and responses of the parent and the new version on held-out prompts."""
    from workers.ml import training as ml

    evaluation: dict[str, Any] = {"held_out_pairs": len(eval_pairs)}
    if eval_pairs:
        started = time.perf_counter()
        accuracy = ml.evaluate(
            method=run.method, output_path=final_dir, base_path=run.base_model.path, pairs=eval_pairs, beta=config.beta
        )
        evaluation["held_out_accuracy"] = accuracy.accuracy
        evaluation["held_out_margin"] = accuracy.mean_margin
        evaluation["accuracy_kind"] = "reward" if run.method == "reward" else "implicit_reward"
        progress.log(
            f"held-out accuracy {accuracy.accuracy:.3f} (margin {accuracy.mean_margin:.3g}) on {accuracy.pairs} pairs"
            f" in {time.perf_counter() - started:.1f} s"
        )
    rule = (run.policy.promotion_rule if run.policy is not None else None) or {}
    if run.method != "reward" and eval_pairs:
        prompts = list(dict.fromkeys(data.prompt_key(p.prompt) for p in eval_pairs))[:EVAL_PROMPTS]
        evaluation["samples"] = paired_samples(run, final_dir, [data.prompt_unkey(p) for p in prompts])
        if rule.get("judge"):
            evaluation["battles"] = judged_battles(rule["judge"], evaluation["samples"])
            progress.log(f"battles against the parent: {evaluation['battles']}")
            flagged = [str(p) for p in rule.get("safety_prompts") or []][:EVAL_PROMPTS]
            if flagged:
                safety = judged_battles(rule["judge"], paired_samples(run, final_dir, flagged))
                # A regression: the judge prefers the parent on flagged prompts (win rate below one half).
                safety["regression"] = max(0.0, 0.5 - safety["win_rate"]) if safety["judged"] else None
                evaluation["safety"] = safety
    jobs.job_heartbeat(run)
    return evaluation


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties count half a win)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def judged_battles(judge_reference: Any, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The trained version (A) against its parent (B) on the same prompts, judged position-swapped."""
    from workers.ml.judge import JudgeConfig, judge_pairwise

    judge = model_get_by_reference(judge_reference)
    backend = runtime.generator_for(judge)
    wins = losses = ties = errors = 0
    for sample in samples:
        verdict = judge_pairwise(backend, sample["prompt"], sample["trained"], sample["parent"], JudgeConfig())
        if verdict.verdict == "a":
            wins += 1
        elif verdict.verdict == "b":
            losses += 1
        elif verdict.verdict == "tie":
            ties += 1
        else:
            errors += 1
    judged = wins + losses + ties
    low, high = wilson_interval(wins + 0.5 * ties, judged)
    return {
        "judge": judge.label,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "errors": errors,
        "judged": judged,
        "win_rate": (wins + 0.5 * ties) / judged if judged else 0.0,
        "win_rate_ci_low": low if judged else None,
        "win_rate_ci_high": high if judged else None,
    }


def paired_samples(run: TrainingRun, final_dir: Path, prompts: list[Any]) -> list[dict[str, Any]]:
    """The same seeded samples from the parent and the new version, for the run page and tests."""
    from workers.ml.generation import CausalLM
    from workers.ml.types import SamplingParams

    base = run.base_model
    params = SamplingParams(max_new_tokens=min(base.max_new_tokens, 48), temperature=base.temperature, top_p=base.top_p)
    seeds = list(range(len(prompts)))
    parent = CausalLM(base.path).generate(prompts, seeds, params)
    child = CausalLM(str(final_dir)).generate(prompts, seeds, params)
    return [
        {"prompt": prompt if isinstance(prompt, str) else prompt[-1]["content"], "parent": a.text, "trained": b.text}
        for prompt, a, b in zip(prompts, parent, child, strict=True)
    ]
