"""Training throughput: a PrefArena DPO training run against TRL's DPOTrainer run directly.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/training.py
    .venv/bin/python benchmarks/training.py --steps 40 --repeats 3 --batch-size 8
    .venv/bin/python benchmarks/training.py --model-path /models/Qwen2.5-0.5B-Instruct --device cuda

- **raw**: `trl.DPOTrainer` built here on the same checkpoint, rows, batch size, learning rate, max
  length and steps (`DPOConfig(loss_type=["sigmoid"])`, reference model loaded beside the policy, no
  saving, no logging callback); steps/s = steps / wall time of `trainer.train()`.
- **ours**: a `TrainingRun` row run in-process by `prefarena.jobs.loop.job_execute`, exactly as a gpu
  worker runs it: claim, lease-keeper thread, JSONL snapshot read into dataclasses, TRL through
  `workers/ml/training.py` with the platform callback (each step a cancellation read; heartbeat, progress
  and broadcast at most every 0.5 s; `metric_series` + logs at most every 1 s), weights to a temporary folder, sha256
  manifest, atomic rename, held-out evaluation, samples, registration in one transaction.
  "train steps/s" is steps / wall time of the trainer's loop (`evaluation.seconds`): the overhead
  the platform adds per step. "job s" is the wall time of the whole job, loads and saves included.
- tokens/s counts prompt + chosen + rejected tokens of the rows trained on (the same for both sides).
- PostgreSQL only, in its own database `prefarena_bench_train` (created and migrated on first use);
  Celery points at `memory://`. The snapshot is a `DatasetSnapshot` row whose `pairwise.jsonl` the
  script writes (rows with a learnable rule, as in tests/training). Without `--model-path` the tiny
  models of `workers.ml.tiny` are built into a temporary directory (`tiny-lm-small`).
- Each side runs once to warm up; then `--repeats` runs alternate raw and ours; medians are printed,
  with the ratio of medians and the median per-run ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak

DEFAULT_DB_NAME = "prefarena_bench_train"
TEMPLATES = ["{q}", "Please answer: {q}", "Tell me, {q}", "Quick question: {q}", "Q: {q}", "Help me: {q}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL server")
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME)
    parser.add_argument("--model-path", help="Policy checkpoint (default: the tiny model, built here)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
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
    call_command("migrate", verbosity=0)


def pattern_rows(seed: int = 0) -> list[tuple[str, str, str]]:
    from workers.ml.tiny import corpus_load

    corpus = corpus_load()
    rng = random.Random(seed)
    return [
        (template.format(q=q), f"{a} {rng.choice(corpus.sentences)}", a)
        for template in TEMPLATES
        for q, a in corpus.qa_pairs
    ]


def snapshot_make(rows: list[tuple[str, str, str]]) -> Any:
    from annotations.models import DatasetSnapshot
    from annotations.snapshots import snapshot_dir

    snapshot = DatasetSnapshot.objects.create(
        name="bench", status="succeeded", formats=["pairwise"], row_counts={"pairwise": len(rows)}
    )
    folder = snapshot_dir(snapshot)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "pairwise.jsonl").open("w") as out:
        for prompt, chosen, rejected in rows:
            out.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    snapshot.directory = str(folder)
    snapshot.save(update_fields=["directory"])
    return snapshot


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "warmup_ratio": 0.0,
        "eval_fraction": 0.1,
        "precision": "float32",
    }


def run_raw(model_path: str, args: argparse.Namespace, train_pairs: list[Any], device: str) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second) of trl.DPOTrainer alone on the platform's training rows."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    data = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p.prompt}] for p in train_pairs],
            "chosen": [[{"role": "assistant", "content": p.chosen}] for p in train_pairs],
            "rejected": [[{"role": "assistant", "content": p.rejected}] for p in train_pairs],
        }
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=DPOConfig(
                output_dir=out,
                max_steps=args.steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                max_length=args.max_length,
                loss_type=["sigmoid"],
                beta=0.1,
                warmup_steps=0,
                max_grad_norm=1.0,
                weight_decay=0.0,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                seed=0,
                data_seed=0,
                use_cpu=device == "cpu",
                bf16=False,
                gradient_checkpointing=False,
                disable_tqdm=True,
                remove_unused_columns=False,
            ),
            train_dataset=data,
            processing_class=tokenizer,
        )
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(noisy)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train()
        return args.steps / (time.perf_counter() - started), args.steps / (time.process_time() - cpu_started)


def run_ours(base: Any, snapshot: Any, args: argparse.Namespace) -> tuple[float, float, float]:
    """(steps per wall second, steps per CPU second, job wall s) of a TrainingRun run as a gpu worker does."""
    from prefarena.jobs import loop
    from workers.models import TrainingRun
    from workers.training import services as training_services
    from workers.training.runner import training_run_work

    run = training_services.training_run_create(
        base_model=base, snapshot=snapshot, method="dpo", hyperparameters=hyperparameters(args)
    )
    started = time.perf_counter()
    loop.job_execute(TrainingRun, run.pk, training_run_work)
    wall = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != "succeeded":
        sys.exit(f"platform run {run.pk} {run.status}: {run.error}")
    steps = run.evaluation["steps"]
    return steps / run.evaluation["seconds"], steps / run.evaluation["cpu_seconds"], wall


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also when piped
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch loads
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(args.database_url, args.db_name)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup_django(url, work)
        import torch

        from models_hub.services import model_register
        from workers.ml import training as ml

        model_path = args.model_path
        if not model_path:
            from workers.ml.tiny import tiny_models_build

            model_path = str(tiny_models_build(work / "tiny", steps=150)["tiny-lm-small"])
        base = model_register(
            name=f"bench-policy-{time.time_ns()}", role="policy", backend="transformers", path=model_path
        )
        rows = pattern_rows()
        snapshot = snapshot_make(rows)
        pairs = [ml.PreferencePair(p, c, r) for p, c, r in rows]
        train_pairs, _ = ml.held_out_split(pairs, 0.1, 0)
        tokenizer_rows = ml.load_tokenizer(model_path)
        tokens_per_row = ml._mean_tokens(tokenizer_rows, train_pairs, args.max_length)
        tokens_per_step = tokens_per_row * args.batch_size
        print(
            f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"{platform.processor() or platform.machine()}, model {model_path}"
        )
        print(
            f"{len(train_pairs)} training pairs, batch {args.batch_size}, {args.steps} steps, "
            f"{tokens_per_step:.0f} tokens/step"
        )
        run_raw(model_path, args, train_pairs, args.device)  # warm-up, both sides
        run_ours(base, snapshot, args)
        raws, ours, walls, ratios, cpu_ratios = [], [], [], [], []
        print(f"{'run':>4} {'raw steps/s':>12} {'ours steps/s':>13} {'ours/raw':>9} {'cpu ours/raw':>13} {'job s':>7}")
        for repeat in range(args.repeats):
            raw, raw_cpu = run_raw(model_path, args, train_pairs, args.device)
            our, our_cpu, wall = run_ours(base, snapshot, args)
            raws.append(raw)
            ours.append(our)
            walls.append(wall)
            ratios.append(our / raw)
            cpu_ratios.append(our_cpu / raw_cpu)
            print(
                f"{repeat + 1:>4} {raw:>12.2f} {our:>13.2f} {our / raw:>9.3f} {our_cpu / raw_cpu:>13.3f} {wall:>7.1f}"
            )
        raw_median, our_median = statistics.median(raws), statistics.median(ours)
        print(
            f"median: raw {raw_median:.2f} steps/s ({raw_median * tokens_per_step:.0f} tokens/s), "
            f"ours {our_median:.2f} steps/s ({our_median * tokens_per_step:.0f} tokens/s); "
            f"ratio of medians {our_median / raw_median:.3f}, median per-run ratio {statistics.median(ratios):.3f} "
            f"(platform overhead {100 * (1 - statistics.median(ratios)):.1f}%); "
            f"CPU-time ratio {statistics.median(cpu_ratios):.3f}; whole job {statistics.median(walls):.1f} s"
        )


if __name__ == "__main__":
    main()
