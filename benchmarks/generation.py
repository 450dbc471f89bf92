"""Tokens/s of a PrefArena generation job against raw batched `model.generate`, as a ratio.

    .venv/bin/python benchmarks/generation.py --quick                 # CPU-sized smoke run
    .venv/bin/python benchmarks/generation.py [--prompts 256] [--batch-size 32] [--max-new-tokens 64]
        [--repeats 3] [--device auto|cpu|cuda] [--size tiny|0.5b [--layers N]] [--model-path DIR]
        [--stop-at-eos] [--engine auto|hf|vllm] [--no-vllm]

Runs against PostgreSQL only. The server comes from --database-url or DATABASE_URL, but the benchmark
always works in its own database (--db-name, default `prefarena_bench_gen`), created and migrated on
first use: it never touches the database named in the URL. Celery is pointed at the in-process
`memory://` broker, so the job the benchmark creates is never delivered to a real worker: the
benchmark runs it itself.

Both sides run in this one process, on the same model, prompts, batch size and max_new_tokens:

- raw: the tokenizer's chat template, left padding, `model.generate(**batch, do_sample=True,
  temperature, top_p, top_k=0, max_new_tokens)` in batches of --batch-size, then counting tokens up to
  EOS and decoding the texts: the least a script must do to get responses;
- ours: a `GenerationJob` over the same prompts, executed in-process with
  `prefarena.jobs.loop.job_execute(GenerationJob, id, generation_job_work)`: the claim, the lease keeper
  thread, a heartbeat and progress broadcast per batch, per-row seeded sampling (`SeededSampler`) and
  the database writes of every response are all inside the timed span. Tokens are the job's
  `metrics["tokens"]`, time is the wall time of `job_execute`.

Equal work. By default every row generates exactly --max-new-tokens tokens on both sides, so the ratio
compares the cost of the same forward passes: raw passes `min_new_tokens=max_new_tokens` (EOS is masked
until then), and ours loads the same weights through a directory of symlinks whose
`generation_config.json` names an EOS id outside the vocabulary (the job code stops at EOS and has no
min_new_tokens knob). With --stop-at-eos both sides stop rows at EOS instead; the rows then have
different lengths on the two sides (different random streams), so the printed token counts differ and
each side's tokens/s is computed from its own count.

Each side is warmed up once (one batch; ours through a one-batch job, which also loads the model into
the worker's model cache) before --repeats timed runs, raw and ours alternating. It prints every run,
then the medians, ratio = median ours tokens/s / median raw tokens/s, and the median of the per-run
ratios (raw and ours of one run are timed back to back, so it is the steadier figure on a busy machine).
Without --model-path it builds the tiny models of `workers.ml.tiny` into a temporary directory and uses
`tiny-lm-large`; `--size 0.5b` uses a random-weight model of Qwen2.5-0.5B's shape instead (built once and
cached, `benchmarks/realistic_model.py`), `--layers N` a shallower one of the same shape for a CPU run.

Every timed run also records the peak memory of each side (`benchmarks/bench_memory.py`): on CUDA
`torch.cuda.max_memory_allocated`, its counter reset before each side, printed as the peak and, in
brackets, its growth over the start of the side (both sides' models stay loaded, so the growth is the
side's own working memory: KV cache, logits); on CPU the process's peak RSS the same way.

vLLM. When `vllm` is importable and the device is CUDA (and not --no-vllm), a third side runs raw vLLM
(`LLM.generate` over the same chat-templated prompts, `ignore_eos` for fixed-length rows, texts decoded
by the tokenizer as raw's are) and the summary adds ours / raw vLLM. Its memory is what the engine took
from the device when it started (free memory before and after), since it preallocates --vllm-memory of
the GPU, mostly in another process.

--engine passes the generation engine to the model's registration (`Model.engine`: auto | hf | vllm),
for the platform's vLLM engine against raw `generate`; the script refuses it when this checkout's
`Model` has no such field.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import bench_database_url, ensure_database  # noqa: E402 - after the path tweak
from bench_memory import PeakMemory, gpu_name, release  # noqa: E402
from realistic_model import SIZES, benchmark_model  # noqa: E402

DEFAULT_DB_NAME = "prefarena_bench_gen"
QUICK = {"prompts": 48, "batch_size": 16, "max_new_tokens": 32, "train_steps": 50}
FULL = {"prompts": 256, "batch_size": 32, "max_new_tokens": 64, "train_steps": 300}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, help="prompts per run (256; --quick: 48)")
    parser.add_argument("--batch-size", type=int, help="rows per generate call, both sides (32; --quick: 16)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per row (64; --quick: 32)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side; medians are reported (3)")
    parser.add_argument(
        "--train-steps",
        type=int,
        help="training steps of the tiny models (300; --quick: 50); only --stop-at-eos row lengths depend on it",
    )
    parser.add_argument("--quick", action="store_true", help="small defaults for a CPU smoke run")
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: CUDA when available (what a worker picks); cpu hides the GPUs from both sides",
    )
    parser.add_argument("--model-path", type=Path, help="a causal LM checkpoint directory (overrides --size)")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="tiny",
        help="tiny: tiny-lm-large, trained here; 0.5b: Qwen2.5-0.5B's shape, random weights, cached (tiny)",
    )
    parser.add_argument("--layers", type=int, help="--size 0.5b with this many decoder layers (24)")
    parser.add_argument("--cache-dir", type=Path, help="where --size 0.5b checkpoints are kept")
    parser.add_argument(
        "--engine",
        choices=["auto", "hf", "vllm"],
        help="the generation engine of the platform's model row (needs Model.engine); default: the row's default",
    )
    parser.add_argument("--no-vllm", action="store_true", help="skip the raw vLLM side even where vllm is installed")
    parser.add_argument(
        "--vllm-memory", type=float, default=0.35, help="raw vLLM: share of the GPU its engine may take (0.35)"
    )
    parser.add_argument(
        "--stop-at-eos", action="store_true", help="stop rows at EOS on both sides instead of fixed-length rows"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL server URL (default: $DATABASE_URL); its database name is replaced",
    )
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME, help=f"database to use ({DEFAULT_DB_NAME})")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.prompts, args.batch_size, args.max_new_tokens, args.repeats, args.train_steps) < 1:
        parser.error("--prompts, --batch-size, --max-new-tokens, --repeats and --train-steps must be positive")
    if args.batch_size > 32767:
        parser.error("--batch-size must fit GenerationJob.batch_size (at most 32767)")
    if args.temperature <= 0 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be > 0 (this measures sampling) and --top-p in (0, 1]")
    if args.layers is not None and (args.size != "0.5b" or args.model_path or args.layers < 1):
        parser.error("--layers needs --size 0.5b (and no --model-path) and must be positive")
    if not 0 < args.vllm_memory < 1:
        parser.error("--vllm-memory must be in (0, 1)")
    return args


# --- database and Django --------------------------------------------------------------------------
def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    # Measure the production configuration: with DEBUG on Django also records every query in memory.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-never-used-to-serve-requests-0123456789")
    # The job is executed here; its Celery message must not reach a real worker (which would find the
    # job claimed, or find a different job with the same id in another database).
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no "job claimed" line per run in the table
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# --- model and prompts ----------------------------------------------------------------------------
def no_stop_view(source: Path, into: Path) -> Path:
    """`source` seen through symlinks, with an EOS id no token can have: every row runs to max_new_tokens."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name != "generation_config.json":
            (into / entry.name).symlink_to(entry.resolve())
    config_file = source / "generation_config.json"
    generation = json.loads(config_file.read_text()) if config_file.is_file() else {}
    model_config = json.loads((source / "config.json").read_text())
    vocab = model_config.get("vocab_size") or (model_config.get("text_config") or {}).get("vocab_size") or 2**31 - 2
    generation["eos_token_id"] = [int(vocab) + 1]
    (into / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return into


def prompts_make(n: int) -> list[str]:
    """Questions of the tiny models' corpus, cycled (real checkpoints answer them too)."""
    from workers.ml.tiny import corpus_load

    questions = [q for q, _ in corpus_load().qa_pairs]
    return [questions[i % len(questions)] for i in range(n)]


# --- raw ------------------------------------------------------------------------------------------
@dataclass
class Timing:
    tokens: int
    seconds: float
    inner_seconds: float | None = None  # ours: time inside generate() calls (metrics["generation_seconds"])
    memory: str = "n/a"  # the side's peak memory (bench_memory.PeakMemory.text)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class RawGenerator:
    """The baseline: plain transformers, batched, sampling with torch's RNG."""

    def __init__(self, path: Path, device: Any, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from workers.ml.device import dtype_pick

        self.torch = torch
        self.device = device
        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_pick(device)).to(device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or [self.tokenizer.eos_token_id]))

    def run(self, prompts: list[str], seed: int) -> Timing:
        release(self.device)
        with PeakMemory(self.device) as memory:
            timing = self._run(prompts, seed)
        timing.memory = memory.text()
        return timing

    def _run(self, prompts: list[str], seed: int) -> Timing:
        torch, args = self.torch, self.args
        torch.manual_seed(seed)
        synchronize(self.device)
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            texts = chat_texts(self.tokenizer, batch)
            encoded = self.tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
            ).to(self.device)
            extra = {} if args.stop_at_eos else {"min_new_tokens": args.max_new_tokens}
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    do_sample=True,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    top_k=0,  # ours has no top-k; generation_config's default of 50 would be extra work here
                    max_new_tokens=args.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.eos_ids,
                    **extra,
                )
            kept_rows = []
            for ids in output[:, encoded["input_ids"].shape[1] :].tolist():
                stop = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
                kept_rows.append(ids if stop is None else ids[:stop])
                tokens += len(ids) if stop is None else stop + 1  # the EOS counts, as in the job's metrics
            self.tokenizer.batch_decode(kept_rows, skip_special_tokens=True)
        synchronize(self.device)
        return Timing(tokens=tokens, seconds=time.perf_counter() - started)


def synchronize(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def chat_texts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as one user turn through the chat template, ending with the assistant header."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


# --- raw vLLM -------------------------------------------------------------------------------------
def vllm_available(device: Any, args: argparse.Namespace) -> bool:
    if args.no_vllm or device.type != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class RawVllm:
    """The other baseline: vLLM's offline `LLM.generate` on the same checkpoint and prompts."""

    def __init__(self, path: Path, device: Any, args: argparse.Namespace, tokenizer: Any) -> None:
        import torch
        from vllm import LLM, SamplingParams

        self.args = args
        self.device = device
        self.tokenizer = tokenizer
        free_before, _ = torch.cuda.mem_get_info(device)
        self.llm = LLM(
            model=str(path),
            dtype="bfloat16" if torch.cuda.is_bf16_supported() else "float16",
            gpu_memory_utilization=args.vllm_memory,
            max_model_len=2048,  # prompts here are short; a smaller KV-cache reservation starts faster
            seed=0,
        )
        free_after, _ = torch.cuda.mem_get_info(device)
        self.memory = f"{(free_before - free_after) / 2**30:.2f} GiB taken at start"
        self.params = SamplingParams(
            temperature=args.temperature,
            top_p=args.top_p,  # top_k left at vLLM's default, off, as on the other sides
            max_tokens=args.max_new_tokens,
            ignore_eos=not args.stop_at_eos,
            detokenize=False,  # decoded below by the same tokenizer call raw uses: the same work on both
        )

    def run(self, prompts: list[str], seed: int) -> Timing:
        del seed  # the engine's generator was seeded at start; vLLM's per-request seeds cost throughput
        started = time.perf_counter()
        outputs = self.llm.generate(chat_texts(self.tokenizer, prompts), self.params, use_tqdm=False)
        rows = [list(output.outputs[0].token_ids) for output in outputs]
        self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        seconds = time.perf_counter() - started
        return Timing(tokens=sum(len(row) for row in rows), seconds=seconds, memory=self.memory)


def engine_fields(engine: str | None) -> dict[str, str]:
    """`{"engine": engine}` for the model's registration, or nothing when --engine is not given."""
    if engine is None:
        return {}
    from django.core.exceptions import FieldDoesNotExist

    from models_hub.models import Model

    try:
        Model._meta.get_field("engine")
    except FieldDoesNotExist:
        sys.exit("--engine: this checkout's Model has no `engine` field (no choice of generation engine yet)")
    return {"engine": engine}


# --- ours -----------------------------------------------------------------------------------------
def ours_run(model_row: Any, prompts: list[str], seed: int, args: argparse.Namespace, device: Any) -> Timing:
    """Create a job over `prompts`, execute it like a gpu worker would, time it, delete its rows."""
    from annotations.models import Prompt
    from prefarena.jobs import loop
    from workers import runners, services
    from workers.models import GenerationJob, JobStatus

    job = services.generation_job_create(
        models=[model_row],
        prompts=prompts,
        created_by=None,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=seed,
        batch_size=args.batch_size,
        max_attempts=1,
    )
    release(device)
    with PeakMemory(device) as memory:
        synchronize(device)
        started = time.perf_counter()
        loop.job_execute(GenerationJob, job.pk, runners.generation_job_work)
        synchronize(device)
        seconds = time.perf_counter() - started
    job.refresh_from_db()
    prompt_ids = list(job.prompts.values_list("pk", flat=True))
    if job.status != JobStatus.SUCCEEDED:
        sys.exit(f"the generation job ended {job.status}: {job.error}")
    timing = Timing(
        tokens=int(job.metrics["tokens"]),
        seconds=seconds,
        inner_seconds=float(job.metrics["generation_seconds"]),
        memory=memory.text(),
    )
    job.delete()  # outputs go with it; prompts (and their responses) below
    Prompt.objects.filter(pk__in=prompt_ids).delete()
    return timing


# --- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also when piped
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch loads: the job's CausalLM picks CUDA otherwise
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    url = bench_database_url(args.database_url, args.db_name)
    ensure_database(url, args.db_name)
    setup_django(url)

    import torch
    import transformers
    from django.conf import settings

    from models_hub.services import model_register
    from workers.ml.device import device_pick, dtype_pick

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    device = device_pick(None)  # what workers.runtime's CausalLM will pick, given the visibility above
    if args.device == "cuda" and device.type != "cuda":
        sys.exit("--device cuda: torch sees no CUDA device")
    engine = engine_fields(args.engine)
    with tempfile.TemporaryDirectory(prefix="prefarena-bench-gen-") as tmp:
        if args.model_path:
            source, model_name = args.model_path.resolve(), args.model_path.name
        else:
            source, model_name = benchmark_model(
                args.size,
                args.layers,
                Path(tmp),
                tiny_name="tiny-lm-large",
                tiny_steps=args.train_steps,
                cache_dir=args.cache_dir,
            )
        ours_path = source if args.stop_at_eos else no_stop_view(source, Path(tmp) / "no-stop")
        prompts = prompts_make(args.prompts)
        raw = RawGenerator(source, device, args)
        model_row = model_register(
            name=f"bench-gen-{uuid.uuid4().hex[:8]}",
            role="policy",
            backend="transformers",
            path=str(ours_path),
            **engine,
        )
        parameters = sum(p.numel() for p in raw.model.parameters())
        layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
        device_name = gpu_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        print(
            f"device {device.type} ({device_name}), dtype {str(dtype_pick(device)).removeprefix('torch.')}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} CPU threads"
        )
        print(
            f"model {model_name} ({parameters / 1e6:.2f} M parameters); {args.prompts} prompts, "
            f"batch {args.batch_size}, "
            f"max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, top_p {args.top_p}, "
            f"rows {'stop at EOS' if args.stop_at_eos else 'fixed length'}"
            + (f", platform engine {args.engine}" if args.engine else "")
        )
        print(f"database {args.db_name} (PostgreSQL), channel layer {layer}, {args.repeats} repeats")
        memory_label = "GPU peak" if device.type == "cuda" else "peak RSS"
        print(f"memory: {memory_label} of each side, (+growth over the side's start); {gpu_name(device)}")

        warm = prompts[: args.batch_size]
        raw.run(warm, seed=0)
        ours_run(model_row, warm, 0, args, device)
        vllm: RawVllm | None = None
        if vllm_available(device, args):
            vllm = RawVllm(source, device, args, raw.tokenizer)  # fixed-length rows: ignore_eos
            vllm.run(warm, seed=0)
            print(f"raw vLLM {_vllm_version()}: {vllm.memory} ({args.vllm_memory:.0%} of the GPU allowed)")
        elif device.type == "cuda" and not args.no_vllm:
            print("raw vLLM: not installed, skipped")

        raws: list[Timing] = []
        ours: list[Timing] = []
        vllms: list[Timing] = []
        print(
            f"{'run':>4} {'raw tok':>8} {'raw s':>7} {'raw tok/s':>10} {'ours tok':>9} {'ours s':>7} "
            f"{'ours tok/s':>11} {'in generate':>12} {'ratio':>6}  {'raw ' + memory_label:>20} "
            f"{'ours ' + memory_label:>20}" + (f" {'vLLM tok/s':>11} {'ours/vLLM':>9}" if vllm else "")
        )
        for run in range(1, args.repeats + 1):
            raws.append(raw.run(prompts, seed=run))
            ours.append(ours_run(model_row, prompts, run, args, device))
            if vllm:
                vllms.append(vllm.run(prompts, seed=run))
            r, o = raws[-1], ours[-1]
            line = (
                f"{run:>4} {r.tokens:>8} {r.seconds:>7.2f} {r.tokens_per_s:>10.1f} {o.tokens:>9} {o.seconds:>7.2f} "
                f"{o.tokens_per_s:>11.1f} {o.tokens / (o.inner_seconds or o.seconds):>10.1f}/s "
                f"{o.tokens_per_s / r.tokens_per_s:>6.2f}  {r.memory:>20} {o.memory:>20}"
            )
            if vllm:
                v = vllms[-1]
                line += f" {v.tokens_per_s:>11.1f} {o.tokens_per_s / v.tokens_per_s:>9.2f}"
            print(line)
        model_row.delete()

    raw_median = statistics.median(t.tokens_per_s for t in raws)
    ours_median = statistics.median(t.tokens_per_s for t in ours)
    inner_median = statistics.median(t.tokens / (t.inner_seconds or t.seconds) for t in ours)
    # Each run times raw and ours back to back: the per-run ratio cancels slow drifts of a shared machine.
    ratio_median = statistics.median(o.tokens_per_s / r.tokens_per_s for r, o in zip(raws, ours, strict=True))
    print(
        f"median: raw {raw_median:.1f} tokens/s, ours {ours_median:.1f} tokens/s "
        f"(inside generate: {inner_median:.1f} tokens/s), ratio ours/raw = {ours_median / raw_median:.2f} "
        f"(median of per-run ratios {ratio_median:.2f}) on {device.type}"
    )
    print(f"memory ({memory_label}, last run): raw {raws[-1].memory}, ours {ours[-1].memory}")
    if vllms:
        vllm_median = statistics.median(t.tokens_per_s for t in vllms)
        print(
            f"raw vLLM {vllm_median:.1f} tokens/s: ours/vLLM = {ours_median / vllm_median:.2f}, "
            f"vLLM/raw generate = {vllm_median / raw_median:.2f}"
        )


def _vllm_version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "?"))


if __name__ == "__main__":
    main()
