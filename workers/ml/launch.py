"""Training across processes: the command that `accelerate launch`es a run, and what each rank runs.

The gpu worker (workers/training/launcher.py) writes a spec (`LaunchSpec`: base checkpoint, config, rows
files, output and checkpoint folders) into the attempt's launch folder and starts

    python -m accelerate.commands.launch <flags> -m workers.ml.launch <spec.json>

(`launch_command`); accelerate starts torchrun, which starts one process per rank. Every rank runs `main`:
`workers.ml.training.train` with the same rows, so the HF Trainer sees torchrun's environment and trains with
DDP (gloo on CPU, NCCL on GPUs), FSDP or DeepSpeed ZeRO as the flags say. No rank touches the database:
rank 0 appends events (started, progress, stopped/paused, result, error) to `events.jsonl`, which the worker
process reads, and the worker alone writes progress, honours cancellation and registers the version.

Stopping: the worker writes `stop` ("stop": cancel, nothing kept; "checkpoint": save a checkpoint, then stop).
Every rank reads it after each optimizer step and the ranks agree on the largest request (an all-reduce), so
they all stop after the same step. A rank whose worker process died stops too (its pid is in the spec), and
each rank dies with its parent (PR_SET_PDEATHSIG), so nothing trains on after the attempt is gone.

Pure torch/transformers/TRL: no Django import (a rank never sets Django up).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DISTRIBUTED_FLAGS: dict[str, list[str]] = {
    "ddp": ["--multi_gpu"],  # torchrun with one model copy per process (gloo on CPU, NCCL on GPUs)
    "fsdp": [
        "--use_fsdp",
        "--fsdp_version",
        "2",
        "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type",
        "FULL_STATE_DICT",
        "--fsdp_reshard_after_forward",
        "true",
    ],
    "zero2": ["--use_deepspeed", "--zero_stage", "2"],
    "zero3": ["--use_deepspeed", "--zero_stage", "3", "--zero3_save_16bit_model", "true"],
}
EXIT_READABLE = 3  # a rank failed with a message meant for the user (bad config, out of memory): do not retry


@dataclass(frozen=True)
class LaunchSpec:
    """What every rank trains: the same inputs as `workers.ml.training.train`, as files."""

    base_path: str
    config: dict[str, Any]
    rows_path: str  # JSONL: PreferencePair fields, or BinaryExample fields for KTO
    eval_path: str  # JSONL of PreferencePair fields (the held-out pairs scored during training)
    output_dir: str
    checkpoint_dir: str | None
    folder: str  # the launch folder: events.jsonl, stop, rank-N.pid
    supervisor_pid: int

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> LaunchSpec:
        return cls(**json.loads(path.read_text()))


def launch_command(
    spec_path: Path,
    *,
    num_processes: int,
    distributed: str,
    config_file: str | None = None,
    main_process_port: int | None = None,
) -> list[str]:
    """The `accelerate launch` command line for a run.

    `config_file` (an accelerate YAML: DDP/FSDP/DeepSpeed, several machines) is the worker's; with it and
    `distributed == "auto"` the file decides everything but an explicit process count. Without it, `auto` is DDP.
    """
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        command += ["--config_file", config_file]
    if not config_file or distributed != "auto":
        command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += DISTRIBUTED_FLAGS["ddp" if distributed == "auto" else distributed]
        if main_process_port:
            command += ["--main_process_port", str(main_process_port)]
    if num_processes:
        command += ["--num_processes", str(num_processes)]
    return [*command, "-m", "workers.ml.launch", str(spec_path)]


# --- inside a rank ---------------------------------------------------------------------------------------
class _Events:
    """Rank 0's events for the worker process, one JSON object per line."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def __call__(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"event": event, **fields}) + "\n")
            handle.flush()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its parent (torchrun's agent) dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor-pid check below still stops the rank
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_request(folder: Path, supervisor_pid: int) -> int:
    from workers.ml.training import SAVE_AND_STOP, STOP

    if not _alive(supervisor_pid):
        return STOP  # the attempt is gone: a new attempt resumes from the last checkpoint
    try:
        text = (folder / "stop").read_text().strip()
    except FileNotFoundError:
        return 0
    return SAVE_AND_STOP if text == "checkpoint" else STOP


def _agreed(request: int) -> int:
    """The largest request over all ranks, so every rank stops after the same step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return request
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flag = torch.tensor([request], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def _rows(path: str, kind: str) -> list[Any]:
    from workers.ml.training import BinaryExample, PreferencePair

    row_type = BinaryExample if kind == "kto" else PreferencePair
    with open(path) as handle:
        return [row_type(**json.loads(line)) for line in handle if line.strip()]


def main(argv: list[str]) -> int:
    _die_with_parent()
    spec = LaunchSpec.read(Path(argv[0]))
    folder = Path(spec.folder)
    rank = int(os.environ.get("RANK", "0"))
    (folder / f"rank-{rank}.pid").write_text(str(os.getpid()))
    events = _Events(folder / "events.jsonl", enabled=rank == 0)
    from workers.ml import training as ml
    from workers.ml.errors import PermanentBackendError
    from workers.ml.training_config import TrainingConfig

    config = TrainingConfig(**spec.config)
    checkpoint_dir = Path(spec.checkpoint_dir) if spec.checkpoint_dir else None
    resume = ml.checkpoint_latest(checkpoint_dir) if config.checkpoint_every > 0 else None
    events("started", world_size=int(os.environ.get("WORLD_SIZE", "1")), resume_step=resume[1] if resume else 0)
    try:
        result = ml.train(
            base_path=spec.base_path,
            config=config,
            train_rows=_rows(spec.rows_path, config.method),
            output_dir=spec.output_dir,
            eval_pairs=_rows(spec.eval_path, "pairs"),
            on_progress=lambda step, total, metrics: events("progress", step=step, total=total, metrics=metrics),
            should_stop=lambda: _agreed(_stop_request(folder, spec.supervisor_pid)),
            checkpoint_dir=checkpoint_dir,
        )
    except ml.TrainingStopped as exc:
        events("stopped", message=str(exc))
        return 0
    except ml.TrainingPaused as exc:
        events("paused", step=exc.step, message=str(exc))
        return 0
    except (PermanentBackendError, ValueError) as exc:  # a message for the user (too big, unsupported option)
        events("error", message=str(exc), readable=True)
        traceback.print_exc()
        return EXIT_READABLE
    except Exception as exc:
        events("error", message=f"{type(exc).__name__}: {exc}", readable=False)
        raise
    events("result", **asdict(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
