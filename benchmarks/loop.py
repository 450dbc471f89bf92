"""The closed loop, K rounds, on the tiny models with a rule judge: does it improve the model, soundly?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/loop.py --rounds 3
    .venv/bin/python benchmarks/loop.py --rounds 3 --no-guards      # what the judge alone would promote

Each round, as a team runs the platform (in-process here; the same services and job bodies the workers run):
1. **generate**: the current champion answers the round's prompts twice (two seeds), stored as an item each;
2. **annotate**: scripted annotators follow the rule "prefer the answer containing the word *and*" (both or
   neither: no judgment);
3. **snapshot**: the retraining policy fires (`retrain_policy_fire`: compare-and-set, snapshot row, run row) and
   the snapshot is built (`snapshot_build`, the default-queue task body);
4. **train + evaluate**: the run (`training_run_execute`, the gpu task body) trains DPO from the champion and
   meets the champion: the sequential gate judged by a rule judge (an OpenAI-compatible server applying the same
   rule), the guards (token-F1 against reference answers, KL), the decision;
5. **measure**, outside the platform's own evaluation: the champion after the round answers **fresh** prompts
   (questions of the corpus never used as training, evaluation or guard prompts) and is scored for the rule
   (share of answers containing "and") and for content (token-F1 against those questions' reference answers).

Printed per round: the champion, the decision with the gate's figures and the guards, the rule-following rate
and the content score on fresh prompts, and the seconds of each stage. PostgreSQL only, in its own database
`prefarena_bench_loop`; Celery on `memory://` (nothing is sent: every task body runs here).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak

DEFAULT_DB_NAME = "prefarena_bench_loop"
AND = re.compile(r"\band\b", re.IGNORECASE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL server")
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="DPO steps per round")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--no-guards", action="store_true", help="promote on the judge's gate alone")
    parser.add_argument("--kl-max", type=float, default=60.0, help="KL guard bound, nats per answer")
    return parser.parse_args(argv)


def setup_django(url: str, work: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-never-used-to-serve-requests-0123456789")
    os.environ["ALLOWED_HOSTS"] = "localhost"
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"
    os.environ["PREFARENA_TRAINING_DIR"] = str(work / "training")
    os.environ["PREFARENA_SNAPSHOT_DIR"] = str(work / "snapshots")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")
    import django
    from django.core.management import call_command

    django.setup()
    if _migrated():  # a dedicated database: each run starts empty
        call_command("flush", "--no-input", verbosity=0)
    call_command("migrate", verbosity=0)


def _migrated() -> bool:
    from django.db import connection

    return "django_migrations" in connection.introspection.table_names()


def rule_judge(body: dict[str, Any]) -> str:
    """The judge's rule, the annotators' too: the answer containing "and" wins; both or neither: a tie."""
    prompt = body["messages"][-1]["content"]
    first, _, second = prompt.partition("[The Start of Assistant B's Answer]")
    first = first.rsplit("[The Start of Assistant A's Answer]", 1)[-1]
    a, b = bool(AND.search(first)), bool(AND.search(second))
    if a != b:
        return "Assistant A is better. [[A]]" if a else "Assistant B is better. [[B]]"
    return "Equal. [[C]]"


def prompts_split() -> dict[str, Any]:
    """Prompt sets: training (annotated), evaluation (the gate), guard references, fresh (measured only).

    The corpus is small (35 sentences, 24 questions), so training and evaluation prompts are the sentences under
    different templates; the fresh questions (half the corpus questions) are never shown to the platform.
    """
    from workers.ml.tiny import corpus_load

    corpus = corpus_load()
    qa = corpus.qa_pairs
    half = len(qa) // 2
    train_templates = ["Tell me something about this: {}", "Say more: {}", "Explain: {}", "Go on: {}"]
    eval_templates = ["What do you think? {}", "Is this true? {}", "Comment on: {}"]
    return {
        "train": [t.format(s) for t in train_templates for s in corpus.sentences]
        + [f"Please answer: {q}" for q, _ in qa[:half]],
        "eval": [t.format(s) for t in eval_templates for s in corpus.sentences],
        "references": [{"prompt": q, "answer": a} for q, a in qa[:half]],
        "fresh": qa[half:],
    }


def champion_answers(champion: Any, prompts: list[str], seed: int) -> list[str]:
    from workers import runtime
    from workers.ml.types import SamplingParams

    params = SamplingParams(max_new_tokens=48, temperature=champion.temperature, top_p=champion.top_p)
    generator = runtime.generator_for(champion)
    return [c.text for c in generator.generate(prompts, [seed + i for i in range(len(prompts))], params)]


def annotate(campaign: Any, champion: Any, prompts: list[str], round_no: int) -> dict[str, int]:
    """Two samples of the champion per prompt; the scripted annotators judge by the rule."""
    from annotations import services as annotation_services
    from annotations.models import Prompt, Response
    from prefarena.text import storable

    first = champion_answers(champion, prompts, seed=1000 * round_no)
    second = champion_answers(champion, prompts, seed=1000 * round_no + 500)
    judged = skipped = 0
    for text, a, b in zip(prompts, first, second, strict=True):
        has_a, has_b = bool(AND.search(a)), bool(AND.search(b))
        if has_a == has_b or a.strip() == b.strip():
            skipped += 1
            continue
        prompt = Prompt.objects.create(content=text)
        responses = [
            Response.objects.create(prompt=prompt, text=storable(t), model_name=f"{champion.label}#{n}")
            for n, t in enumerate((a, b))
        ]
        annotation_services.judgment_record_external(
            campaign=campaign,
            prompt=prompt,
            responses=responses,
            source="llm",
            choice="a" if has_a else "b",
            judge_name="rule-annotators",
        )
        judged += 1
    return {"judged": judged, "skipped": skipped}


def measure(champion: Any, fresh: list[tuple[str, str]]) -> tuple[float, float]:
    """(rule-following rate, mean token-F1) of the champion's answers to the fresh questions."""
    from workers.ml.guards import mean_token_f1

    answers = champion_answers(champion, [q for q, _ in fresh], seed=77)
    rule = sum(bool(AND.search(a)) for a in answers) / len(answers)
    return rule, mean_token_f1(answers, [a for _, a in fresh])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(args.database_url, args.db_name)
    work = Path(tempfile.mkdtemp(prefix="prefarena-loop-"))
    setup_django(url, work)

    import torch

    from annotations.models import Campaign
    from annotations.snapshots import snapshot_build
    from models_hub.models import Model
    from models_hub.selectors import model_champion
    from models_hub.services import model_register
    from tests.judges.judge_server import ScriptedJudgeServer
    from workers.ml.tiny import tiny_models_build
    from workers.models import TrainingRun
    from workers.training import policies, runner
    from workers.training import services as training_services

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}; {args.rounds} rounds, {args.steps} DPO steps, guards {'off' if args.no_guards else 'on'}"
    )
    started = time.perf_counter()
    paths = tiny_models_build(work / "models", steps=150, seed=0)
    print(f"# tiny models built in {time.perf_counter() - started:.1f} s")
    split = prompts_split()
    base = model_register(name="tiny-chat", role="policy", backend="transformers", path=str(paths["tiny-lm-small"]))
    campaign = Campaign.objects.create(name="loop benchmark", kind="pairwise")
    guards = (
        {}
        if args.no_guards
        else {
            "reference_f1": {"references": split["references"], "max_drop": 0.05},
            "kl": {"max": args.kl_max},
        }
    )
    rule_f, content_f = measure(base, split["fresh"])
    print(f"round 0: champion {base.label}  rule {rule_f:.1%}  content F1 {content_f:.3f}  (fresh prompts)")
    with ScriptedJudgeServer(rule_judge) as server:
        judge = Model.objects.create(
            name="rule-judge", role="judge", backend="openai", base_url=server.base_url, remote_model="j"
        )
        policy = training_services.retrain_policy_create(
            name="loop",
            base_model=base,
            method="dpo",
            trigger="every_n",
            every_n=1,
            snapshot_filters={"campaigns": [campaign.pk]},
            hyperparameters={
                "max_steps": args.steps,
                "learning_rate": args.learning_rate,
                "batch_size": 8,
                "warmup_ratio": 0.0,
                "max_length": 192,
                "eval_fraction": 0.2,
            },
            promotion_rule={
                "judge": judge.label,
                "gate": {"alpha": 0.05, "prompt_budget": 64, "batch_size": 16, "min_decisive": 10},
                "eval_prompts": split["eval"],
                "guards": guards,
            },
        )
        for round_no in range(1, args.rounds + 1):
            times: dict[str, float] = {}
            champion = model_champion(base.name)
            assert champion is not None
            tick = time.perf_counter()
            counts = annotate(campaign, champion, split["train"], round_no)
            times["generate+annotate"] = time.perf_counter() - tick
            tick = time.perf_counter()
            policy.refresh_from_db()
            run = policies.retrain_policy_fire(policy)
            if run is None:
                print(f"round {round_no}: the policy did not fire ({counts})")
                continue
            snapshot_build(run.snapshot_id)
            times["snapshot"] = time.perf_counter() - tick
            tick = time.perf_counter()
            runner.training_run_execute(run.pk)
            run = TrainingRun.objects.select_related("output_model").get(pk=run.pk)
            total = time.perf_counter() - tick
            times["train"] = float(run.evaluation.get("seconds", 0.0))
            times["evaluate+register"] = total - times["train"]
            if run.status != "succeeded":
                sys.exit(f"round {round_no}: run {run.pk} {run.status}: {run.error}")
            now = model_champion(base.name)
            assert now is not None
            tick = time.perf_counter()
            rule_f, content_f = measure(now, split["fresh"])
            times["measure"] = time.perf_counter() - tick
            gate = run.evaluation.get("gate") or {}
            shown_guards = ", ".join(
                f"{g['name']} {g['figure'] if g['figure'] is None else round(g['figure'], 3)}"
                f"{'' if g['passed'] else ' FAIL'}"
                for g in run.evaluation.get("guards", [])
            )
            print(
                f"round {round_no}: trained {run.output_model.label if run.output_model else '-'} from "
                f"{run.base_model.label} on {counts['judged']} new judgments; met {run.evaluation.get('champion')}: "
                f"{run.decision} (gate {gate.get('wins')}W/{gate.get('losses')}L/{gate.get('ties')}T on "
                f"{gate.get('prompts_judged')} prompts, e={gate.get('e_value', 0):.3g}; "
                f"guards: {shown_guards or 'none'})"
            )
            print(
                f"         champion now {now.label}  rule {rule_f:.1%}  content F1 {content_f:.3f}  (fresh prompts)  "
                + "  ".join(f"{k} {v:.1f}s" for k, v in times.items())
            )


if __name__ == "__main__":
    main()
