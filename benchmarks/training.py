"""Training throughput: a PrefArena DPO training run against TRL's DPOTrainer run directly.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/training.py
    .venv/bin/python benchmarks/training.py --steps 40 --repeats 3 --batch-size 8
    .venv/bin/python benchmarks/training.py --model-path /models/Qwen2.5-0.5B-Instruct --device cuda
    .venv/bin/python benchmarks/training.py --size 0.5b --device cuda --lora --hp gradient_checkpointing=true
    .venv/bin/python benchmarks/training.py --size 0.5b --layers 2 --steps 3 --repeats 1   # CPU smoke run

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
- `--size 0.5b` trains a random-weight model of Qwen2.5-0.5B's shape (`benchmarks/realistic_model.py`,
  built once and cached; `--layers N` for a shallow one on CPU); `--answer-sentences K` appends the same K
  corpus sentences to both answers of a row, for rows of a realistic length.
- Hyperparameters: the platform run gets `--steps`, `--batch-size`, `--learning-rate`, `--max-length`,
  `--precision` (auto), `--lora`, `--gradient-checkpointing` and every `--hp key=value` (value read as JSON:
  `--hp lora_r=8 --hp precompute_ref_log_probs=true`), validated by the platform's `TrainingConfig` before
  anything is loaded (an unknown key stops the script with its message). The raw side gets the same
  values where TRL has them: LoRA through a peft `LoraConfig` of the same rank, alpha, dropout and target
  modules (the adapter-disabled model is then the reference, as the platform does), `gradient_checkpointing`,
  `precompute_ref_log_probs`, `gradient_accumulation_steps`, `beta`, warm-up, clipping, and the precision as
  the platform maps it (weights in float32 on CPU, else bf16 where the GPU has it; bf16 autocast for
  `bfloat16`, or `auto` on such a GPU). Both sides' settings are printed.
- Peak memory per side (`benchmarks/bench_memory.py`): on CUDA `torch.cuda.max_memory_allocated`, reset before
  each side (raw: loading and training; ours: the whole job, so also the save and the held-out evaluation);
  on CPU the process's peak RSS the same way.
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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak
from bench_memory import PeakMemory, gpu_name, release  # noqa: E402
from realistic_model import SIZES, benchmark_model  # noqa: E402

DEFAULT_DB_NAME = "prefarena_bench_train"
TEMPLATES = ["{q}", "Please answer: {q}", "Tell me, {q}", "Quick question: {q}", "Q: {q}", "Help me: {q}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL server")
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME)
    parser.add_argument("--model-path", help="Policy checkpoint (overrides --size)")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="tiny",
        help="tiny: tiny-lm-small, trained here; 0.5b: Qwen2.5-0.5B's shape, random weights, cached (tiny)",
    )
    parser.add_argument("--layers", type=int, help="--size 0.5b with this many decoder layers (24)")
    parser.add_argument("--cache-dir", type=Path, help="where --size 0.5b checkpoints are kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--answer-sentences", type=int, default=0, help="corpus sentences appended to both answers of a row (0)"
    )
    parser.add_argument("--precision", default="auto", help="the platform's precision value (auto)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter on both sides")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="gradient checkpointing on both sides (needs TrainingConfig.gradient_checkpointing)",
    )
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more hyperparameter of the platform run, VALUE read as JSON (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.layers is not None and (args.size != "0.5b" or args.model_path or args.layers < 1):
        parser.error("--layers needs --size 0.5b (and no --model-path) and must be positive")
    if min(args.steps, args.batch_size, args.repeats) < 1 or args.answer_sentences < 0:
        parser.error("--steps, --batch-size and --repeats must be positive, --answer-sentences not negative")
    return args


def hp_value(text: str) -> Any:
    """`--hp` values: JSON where they parse (true, 8, 1e-5, "x"), the plain text otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


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


def pattern_rows(seed: int = 0, answer_sentences: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected): chosen adds a sentence to the answer (the rule to learn); both answers then
    go on with the same `answer_sentences` corpus sentences, for longer rows."""
    from workers.ml.tiny import corpus_load

    corpus = corpus_load()
    rng = random.Random(seed)
    rows = []
    for template in TEMPLATES:
        for q, a in corpus.qa_pairs:
            extra = rng.choice(corpus.sentences)
            tail = "".join(" " + rng.choice(corpus.sentences) for _ in range(answer_sentences))
            rows.append((template.format(q=q), f"{a} {extra}{tail}", f"{a}{tail}"))
    return rows


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
    """The platform run's hyperparameters: the script's options, then every --hp (which wins)."""
    values: dict[str, Any] = {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "warmup_ratio": 0.0,
        "eval_fraction": 0.1,
        "precision": args.precision,
    }
    if args.lora:
        values["lora"] = True
    if args.gradient_checkpointing:
        values["gradient_checkpointing"] = True
    for item in args.hp:
        key, sep, text = item.partition("=")
        if not sep or not key:
            sys.exit(f"--hp {item!r}: expected KEY=VALUE")
        values[key.strip()] = hp_value(text)
    return values


def raw_precision(precision: str, device: str) -> tuple[Any, bool]:
    """(dtype of the loaded weights, DPOConfig.bf16) for the platform's `precision`, as workers/ml/training.py
    maps it: weights in float32 on CPU, else `dtype_pick` (bf16 where the GPU has it); bf16 autocast for
    "bfloat16", or for "auto" on a GPU with bf16."""
    import torch

    from workers.ml.device import dtype_pick

    if precision not in ("auto", "float32", "bfloat16"):
        sys.exit(f"precision {precision!r}: the raw side has no mapping for it (raw_precision in {__file__})")
    dtype = torch.float32 if device == "cpu" else dtype_pick(torch.device(device))
    bf16 = precision == "bfloat16" or (precision == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())
    return dtype, bf16


def raw_settings(config: Any, device: str) -> tuple[dict[str, Any], Any, Any]:
    """(DPOConfig keywords, peft LoraConfig or None, weights' dtype) of the raw side for the platform's `config`."""
    dtype, bf16 = raw_precision(config.precision, device)
    keywords: dict[str, Any] = {
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "beta": config.beta,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": bf16,
        # Fields the platform may not have yet: off unless its TrainingConfig has them and they are set.
        "gradient_checkpointing": bool(getattr(config, "gradient_checkpointing", False)),
        "precompute_ref_log_probs": bool(getattr(config, "precompute_ref_log_probs", False)),
    }
    lora = None
    if config.lora:
        from peft import LoraConfig

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    return keywords, lora, dtype


@dataclass
class Side:
    """One timed run of one side."""

    steps_per_s: float  # steps / wall time of the trainer's loop
    cpu_steps_per_s: float  # steps / process CPU time of the loop
    memory: str  # peak memory of the side (bench_memory.PeakMemory.text)
    job_seconds: float = 0.0  # ours: wall time of the whole job


def run_raw(model_path: str, config: Any, train_pairs: list[Any], device: str) -> Side:
    """trl.DPOTrainer alone on the platform's training rows, with the platform run's settings."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer

    keywords, lora, dtype = raw_settings(config, device)
    release(_torch_device(device))
    with PeakMemory(_torch_device(device)) as memory, tempfile.TemporaryDirectory() as out:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        # LoRA: the adapter-disabled policy is the reference, as on the platform; else a frozen copy.
        reference = None if lora else AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        data = Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": p.prompt}] for p in train_pairs],
                "chosen": [[{"role": "assistant", "content": p.chosen}] for p in train_pairs],
                "rejected": [[{"role": "assistant", "content": p.rejected}] for p in train_pairs],
            }
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=DPOConfig(
                output_dir=out,
                loss_type=["sigmoid"],
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                use_cpu=device == "cpu",
                disable_tqdm=True,
                remove_unused_columns=False,
                dataloader_num_workers=0,
                **keywords,
            ),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora,
        )
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(noisy)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train()
        _synchronize(device)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        steps = trainer.state.global_step
        del trainer, policy, reference
    return Side(steps_per_s=steps / wall, cpu_steps_per_s=steps / cpu, memory=memory.text())


def run_ours(base: Any, snapshot: Any, hyperparameters: dict[str, Any], device: str) -> Side:
    """A TrainingRun run as a gpu worker does: train-loop rates from its evaluation, the whole job's wall time."""
    from prefarena.jobs import loop
    from workers.models import TrainingRun
    from workers.training import services as training_services
    from workers.training.runner import training_run_work

    run = training_services.training_run_create(
        base_model=base, snapshot=snapshot, method="dpo", hyperparameters=hyperparameters
    )
    release(_torch_device(device))
    with PeakMemory(_torch_device(device)) as memory:
        started = time.perf_counter()
        loop.job_execute(TrainingRun, run.pk, training_run_work)
        wall = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != "succeeded":
        sys.exit(f"platform run {run.pk} {run.status}: {run.error}")
    steps = run.evaluation["steps"]
    return Side(
        steps_per_s=steps / run.evaluation["seconds"],
        cpu_steps_per_s=steps / run.evaluation["cpu_seconds"],
        memory=memory.text(),
        job_seconds=wall,
    )


def _torch_device(device: str) -> Any:
    import torch

    return torch.device(device)


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also when piped
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch loads
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # transformers 5 renames gradient_checkpointing, which both sides pass: one warning per trainer, no news.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    from workers.ml.training_config import TrainingConfigError, training_config_validate

    platform_hp = hyperparameters(args)
    try:  # before any database or model work: a key this checkout's platform lacks stops here
        config = training_config_validate("dpo", platform_hp)
    except TrainingConfigError as error:
        sys.exit(f"the platform refuses the hyperparameters: {error}")
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(args.database_url, args.db_name)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup_django(url, work)
        import torch
        import transformers
        import trl

        from models_hub.services import model_register
        from workers.ml import training as ml

        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        model_path = args.model_path
        if not model_path:
            path, _ = benchmark_model(
                args.size, args.layers, work, tiny_name="tiny-lm-small", tiny_steps=150, cache_dir=args.cache_dir
            )
            model_path = str(path)
        base = model_register(
            name=f"bench-policy-{time.time_ns()}", role="policy", backend="transformers", path=model_path
        )
        rows = pattern_rows(answer_sentences=args.answer_sentences)
        snapshot = snapshot_make(rows)
        pairs = [ml.PreferencePair(p, c, r) for p, c, r in rows]
        train_pairs, _ = ml.held_out_split(pairs, config.eval_fraction, config.seed)
        tokenizer_rows = ml.load_tokenizer(model_path)
        tokens_per_row = ml._mean_tokens(tokenizer_rows, train_pairs, args.max_length)
        tokens_per_step = tokens_per_row * args.batch_size * config.gradient_accumulation_steps
        keywords, lora, dtype = raw_settings(config, args.device)
        device = _torch_device(args.device)
        print(
            f"device {args.device} ({gpu_name(device)}), torch {torch.__version__}, transformers "
            f"{transformers.__version__}, trl {trl.__version__}, threads {torch.get_num_threads()}, "
            f"{platform.processor() or platform.machine()}, model {model_path}"
        )
        print(
            f"{len(train_pairs)} training pairs, batch {args.batch_size}, {args.steps} steps, "
            f"{tokens_per_step:.0f} tokens/step ({tokens_per_row:.0f} per row)"
        )
        changed = {k: v for k, v in config.to_dict().items() if k != "method" and k in platform_hp}
        print(f"platform hyperparameters: {json.dumps(changed, sort_keys=True)}")
        raw_shown = {k: v for k, v in keywords.items() if k not in ("seed", "data_seed")}
        lora_text = f", LoRA r={lora.r} alpha={lora.lora_alpha} all-linear" if lora else ""
        print(f"raw DPOConfig: {json.dumps(raw_shown, sort_keys=True)}, weights {dtype}{lora_text}")
        memory_label = "GPU peak" if args.device == "cuda" else "peak RSS"
        run_raw(model_path, config, train_pairs, args.device)  # warm-up, both sides
        run_ours(base, snapshot, platform_hp, args.device)
        raws: list[Side] = []
        ours: list[Side] = []
        print(
            f"{'run':>4} {'raw steps/s':>12} {'ours steps/s':>13} {'ours/raw':>9} {'cpu ours/raw':>13} {'job s':>7}"
            f"  {'raw ' + memory_label:>20} {'ours ' + memory_label:>20}"
        )
        for repeat in range(args.repeats):
            raw = run_raw(model_path, config, train_pairs, args.device)
            our = run_ours(base, snapshot, platform_hp, args.device)
            raws.append(raw)
            ours.append(our)
            print(
                f"{repeat + 1:>4} {raw.steps_per_s:>12.2f} {our.steps_per_s:>13.2f} "
                f"{our.steps_per_s / raw.steps_per_s:>9.3f} {our.cpu_steps_per_s / raw.cpu_steps_per_s:>13.3f} "
                f"{our.job_seconds:>7.1f}  {raw.memory:>20} {our.memory:>20}"
            )
        raw_median = statistics.median(r.steps_per_s for r in raws)
        our_median = statistics.median(o.steps_per_s for o in ours)
        ratio = statistics.median(o.steps_per_s / r.steps_per_s for r, o in zip(raws, ours, strict=True))
        cpu_ratio = statistics.median(o.cpu_steps_per_s / r.cpu_steps_per_s for r, o in zip(raws, ours, strict=True))
        print(
            f"median: raw {raw_median:.2f} steps/s ({raw_median * tokens_per_step:.0f} tokens/s), "
            f"ours {our_median:.2f} steps/s ({our_median * tokens_per_step:.0f} tokens/s); "
            f"ratio of medians {our_median / raw_median:.3f}, median per-run ratio {ratio:.3f} "
            f"(platform overhead {100 * (1 - ratio):.1f}%); "
            f"CPU-time ratio {cpu_ratio:.3f}; whole job {statistics.median(o.job_seconds for o in ours):.1f} s"
        )
        print(f"memory ({memory_label}, last run): raw {raws[-1].memory}, ours {ours[-1].memory}")


if __name__ == "__main__":
    main()
