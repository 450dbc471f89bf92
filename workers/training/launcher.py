"""A training attempt across several processes: the worker process supervises `accelerate launch`.

`processes_for(config)` decides how a run trains: inside the worker process (one process), or through
`accelerate launch` (workers/ml/launch.py) with the run's or the worker's process count and strategy:

- `num_processes` (hyperparameter) > `PREFARENA_TRAINING_PROCESSES` (worker setting) > one per visible GPU;
- `distributed` (hyperparameter): ddp, fsdp, zero2, zero3, or auto = the worker's accelerate config file
  (`PREFARENA_ACCELERATE_CONFIG`: any accelerate YAML, several machines included) when set, else ddp.

`train_launched` runs the ranks and stays the only process that talks to the database: it turns rank 0's
events into the run's progress (heartbeat, curves, live page), checks cancellation every POLL_S and asks
every rank to stop (they agree on the step), asks them to checkpoint and stop when the attempt's deadline
passes (`should_stop()` answers SAVE_AND_STOP a little before Celery's soft time limit, which stays the
fallback) and to stop at once when its lease was lost, and turns a crashed rank (torchrun then stops
the others) into a failed attempt: `LaunchFailed`, retried by the job loop while attempts remain, the next
attempt resuming from the latest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from prefarena.errors import ApplicationError
from workers.ml.errors import TransientBackendError
from workers.ml.launch import EXIT_READABLE, LaunchSpec, launch_command
from workers.ml.training_config import TrainingConfig

POLL_S = 0.2  # how often the worker reads rank 0's events and the run's cancel flag
STOP_GRACE_S = 60.0  # how long ranks get to finish their step after a stop request before they are killed
ROOT = Path(__file__).resolve().parents[2]


class LaunchFailed(TransientBackendError):
    """A rank crashed or the launcher exited unexpectedly: this attempt failed; the next one resumes."""


def processes_for(config: TrainingConfig) -> int:
    """Processes the run trains with: 1 means inside the worker process."""
    if config.num_processes:
        return config.num_processes
    configured = int(settings.PREFARENA_TRAINING_PROCESSES)
    if configured:
        return configured
    import torch

    return max(1, torch.cuda.device_count())


def launched(config: TrainingConfig) -> bool:
    """Whether the run goes through `accelerate launch` (several processes, sharding, or the worker's config)."""
    if config.num_processes == 1:
        return False
    if config.distributed in ("fsdp", "zero2", "zero3") or settings.PREFARENA_ACCELERATE_CONFIG:
        return True
    return processes_for(config) >= 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows_write(path: Path, rows: Sequence[Any]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row)) + "\n")


def launch_dir(output_dir: Path) -> Path:
    """The attempt's launch folder (spec, rows, events, stop file, rank pids, launcher log), next to its output."""
    return output_dir.parent / f".{output_dir.name}-launch"


class _Ranks:
    """The running `accelerate launch` process group and the events rank 0 wrote so far."""

    def __init__(self, command: list[str], folder: Path) -> None:
        self.folder = folder
        self.log_path = folder / "launch.log"
        self.events_path = folder / "events.jsonl"
        self.offset = 0
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with self.log_path.open("ab") as log:
            # Its own session: the whole group (agent and ranks) can be signalled at once.
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def events(self) -> list[dict[str, Any]]:
        """Events appended since the last call (a partly written last line waits for the next call)."""
        try:
            with self.events_path.open() as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def request_stop(self, how: str) -> None:
        """ "stop": cancel, keep nothing; "checkpoint": save a checkpoint, then stop. Never downgraded."""
        stop = self.folder / "stop"
        if how == "stop" and stop.exists():
            return
        tmp = self.folder / "stop.tmp"
        tmp.write_text(how)
        tmp.replace(stop)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)

    def wait_stopped(self, grace_s: float) -> None:
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 1500) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        lines = [line for line in text.splitlines() if "warn" not in line.lower()]
        return "\n".join(lines)[-chars:]


def train_launched(
    *,
    base_path: str,
    config: TrainingConfig,
    train_rows: Sequence[Any],
    eval_pairs: Sequence[Any],
    output_dir: Path,
    checkpoint_dir: Path | None,
    on_progress: Callable[[int, int, dict[str, float]], None],
    should_stop: Callable[[], bool | int],
    log: Callable[[str], None],
) -> Any:
    """Train through `accelerate launch`; returns workers.ml.training.TrainingResult like `train`.

    Raises TrainingStopped (cancelled), TrainingPaused (checkpoint saved on request), ApplicationError (a
    rank's readable error: bad configuration, out of memory) or LaunchFailed (a rank crashed).
    """
    from workers.ml import training as ml

    if config.distributed in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
        raise ApplicationError(
            f"distributed={config.distributed} needs DeepSpeed on the gpu worker (pip install 'prefarena[deepspeed]'); "
            "fsdp shards the same state without it"
        )
    if config.lora and config.distributed in ("fsdp", "zero3"):
        raise ApplicationError(
            f"lora with distributed={config.distributed}: the adapter is merged into the base on one process, "
            "which sharded weights do not allow; use ddp or zero2 with lora (the base is frozen: little to shard)"
        )
    folder = launch_dir(output_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _rows_write(folder / "rows.jsonl", train_rows)
    _rows_write(folder / "eval.jsonl", eval_pairs)
    spec = LaunchSpec(
        base_path=str(base_path),
        config=config.to_dict(),
        rows_path=str(folder / "rows.jsonl"),
        eval_path=str(folder / "eval.jsonl"),
        output_dir=str(output_dir),
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        folder=str(folder),
        supervisor_pid=os.getpid(),
    )
    spec.write(folder / "spec.json")
    processes = processes_for(config)
    config_file = settings.PREFARENA_ACCELERATE_CONFIG or None
    explicit = config.num_processes or int(settings.PREFARENA_TRAINING_PROCESSES)
    command = launch_command(
        folder / "spec.json",
        num_processes=explicit if config_file else processes,
        distributed=config.distributed,
        config_file=config_file,
        main_process_port=_free_port(),
    )
    strategy = config.distributed if config.distributed != "auto" else ("config file" if config_file else "ddp")
    log(f"accelerate launch: {processes if not config_file or explicit else 'configured'} processes, {strategy}")
    ranks = _Ranks(command, folder)
    outcome: dict[str, Any] = {}
    requested: int | None = None  # the stop asked of the ranks: ml.STOP (cancel) or ml.SAVE_AND_STOP (deadline)
    step = 0
    try:
        while True:
            for event in ranks.events():
                kind = event["event"]
                if kind == "progress":
                    step = int(event["step"])
                    on_progress(step, int(event["total"]), event["metrics"])
                elif kind == "started":
                    resumed = int(event.get("resume_step") or 0)
                    log(
                        f"{event['world_size']} ranks started"
                        + (f", resuming from the checkpoint at step {resumed}" if resumed else "")
                    )
                else:
                    outcome = event
            if ranks.process.poll() is not None:
                break
            if requested is None:
                request = int(should_stop())
                if request == ml.SAVE_AND_STOP:  # the attempt's deadline (logged by should_stop)
                    requested = request
                    log(f"at step {step}: asking every rank to save a checkpoint and stop")
                    ranks.request_stop("checkpoint")
                elif request:
                    requested = request
                    log(f"cancel requested at step {step}: stopping every rank after its current step")
                    ranks.request_stop("stop")
            time.sleep(POLL_S)
        for event in ranks.events():  # written between the last read and the exit
            if event["event"] == "progress":
                on_progress(int(event["step"]), int(event["total"]), event["metrics"])
            elif event["event"] != "started":
                outcome = event
    except SoftTimeLimitExceeded:  # the attempt's time is up: checkpoint, then stop; the next attempt resumes
        log(f"time limit reached at step {step}: every rank saves a checkpoint and stops")
        ranks.request_stop("checkpoint")
        ranks.wait_stopped(max(1.0, settings.WORKERS_TASK_SOFT_MARGIN - 5.0))  # before the hard limit kills us
        raise
    except BaseException:  # a lost lease (another attempt may own the checkpoints now), a shutdown: stop at once
        ranks.request_stop("stop")
        ranks.wait_stopped(STOP_GRACE_S)
        raise
    finally:
        if ranks.process.poll() is None:
            ranks.kill()
    code = ranks.process.returncode
    kind = outcome.get("event")
    if kind == "result" and code == 0:
        shutil.rmtree(folder, ignore_errors=True)
        fields = {k: v for k, v in outcome.items() if k != "event"}
        return ml.TrainingResult(**fields)
    if kind == "stopped":
        shutil.rmtree(folder, ignore_errors=True)
        raise ml.TrainingStopped(outcome.get("message", "stopped on request"))
    if kind == "paused":
        raise ml.TrainingPaused(int(outcome["step"]))
    if kind == "error" and (outcome.get("readable") or code == EXIT_READABLE):
        raise ApplicationError(str(outcome["message"]))
    detail = outcome.get("message") if kind == "error" else None
    raise LaunchFailed(
        f"a training process failed (launcher exit code {code}"
        + (f"; rank 0: {detail}" if detail else "")
        + f"); last output:\n{ranks.log_tail()}"
    )
