"""A training run inside a gpu-queue worker (the training home: workers/training/, see its __init__).

A run: wait for its snapshot, claim the row (prefarena/jobs/protocol.py), read the snapshot's JSONL into
`PreferencePair`/`BinaryExample` rows, train through workers/ml/training.py into a temporary folder beside
the final one, hash every file into `manifest.json`, rename the folder into place (atomic on one file
system), evaluate, then register the version and finish the run in one transaction conditioned on this
attempt still owning the run. A SIGKILL anywhere before that transaction leaves at most an unregistered
folder, which the next attempt deletes; cancellation stops after the current optimizer step.

Training runs inside this process, or through `accelerate launch` across several (workers/training/launcher.py
decides and supervises). Either way the trainer checkpoints every `checkpoint_every` steps into the run's
checkpoint folder, which outlives attempts: a new attempt (after a killed worker, a crashed rank or the task's
time limit, which first saves a checkpoint) resumes from the latest complete checkpoint instead of step 0.
The folder goes when the run ends (registered, cancelled, failed for good).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations.webhooks import webhook_emit
from models_hub.models import ModelRole
from prefarena import publish
from prefarena.errors import ApplicationError
from prefarena.jobs import events, loop
from prefarena.jobs import protocol as jobs
from prefarena.jobs.model import JobStatus
from workers import runtime
from workers.ml.errors import TransientBackendError
from workers.ml.training_config import TrainingConfig
from workers.models import PromotionDecision, TrainingRun
from workers.training import data, launcher
from workers.training import evaluation as evaluation_module
from workers.training import services as training_services

logger = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 5.0  # how often a run whose snapshot is still being built asks again
PROGRESS_INTERVAL_S = 0.5  # most often a run writes its progress row and broadcasts it
SERIES_SAVE_INTERVAL_S = 1.0  # how often the curves' points are written while a run trains
SERIES_MAX = 5000  # points kept in metric_series (a long run keeps every k-th)


# --- entry point -------------------------------------------------------------------------------------
def training_run_execute(run_id: int) -> float | None:
    """The task body: returns seconds after which to deliver again (snapshot still building, lease held)."""
    run = TrainingRun.objects.select_related("snapshot").filter(pk=run_id).first()
    if run is None or run.is_terminal:
        return None
    snapshot = run.snapshot
    if snapshot.status in (JobStatus.QUEUED, JobStatus.RUNNING) and not run.cancel_requested:
        # A policy queues its run together with the snapshot it trains on. Touch enqueued_at so the
        # reaper does not take this waiting run for a lost message and enqueue a second delivery.
        TrainingRun.objects.filter(pk=run_id, status=JobStatus.QUEUED).update(enqueued_at=timezone.now())
        return SNAPSHOT_WAIT_S
    was_terminal = run.is_terminal
    # The attempt's own deadline, a little before Celery's soft time limit: every rank checkpoints and
    # stops at a step boundary (the soft limit's signal stays the fallback; it is asynchronous, and in
    # loaded runs it was seen not to arrive at all).
    deadline = time.monotonic() + max(settings.WORKERS_TASK_TIME_LIMIT - settings.WORKERS_TASK_SOFT_MARGIN - 2, 1)
    retry_in = loop.job_execute(TrainingRun, run_id, lambda job: training_run_work(job, deadline=deadline))
    run.refresh_from_db()
    if run.is_terminal and not was_terminal:
        _webhook_emit(run)
    return retry_in


def _webhook_emit(run: TrainingRun) -> None:
    payload = {
        "run_id": run.pk,
        "status": run.status,
        "method": run.method,
        "base_model": run.base_model.label,
        "snapshot_id": run.snapshot_id,
        "output_model": run.output_model.label if run.output_model is not None else None,
        "evaluation": {k: v for k, v in (run.evaluation or {}).items() if k != "samples"},
        "error": run.error,
    }
    try:
        with transaction.atomic():
            webhook_emit(event="training.finished", payload=payload)
    except Exception:  # a webhook never fails the run; deliveries are logged on their own rows
        logger.warning("training.finished webhook for run %s failed", run.pk, exc_info=True)


# --- files ---------------------------------------------------------------------------------------------
def weights_finalize(tmp_dir: Path, final_dir: Path) -> dict[str, Any]:
    """Hash every file into manifest.json, fsync, and rename the folder into place (prefarena/publish.py);
    returns the manifest."""
    files = publish.files_hash(tmp_dir)
    manifest = {"files": files, "sha256": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()}
    manifest_path = tmp_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    publish.fsync_file(manifest_path)
    publish.folder_publish(tmp_dir, final_dir)  # replaces a folder left by an attempt that died before registering
    return manifest


def manifest_verify(directory: Path) -> bool:
    """True when every file listed in manifest.json is present with its recorded hash."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return all(publish.file_sha256(directory / name) == entry["sha256"] for name, entry in manifest["files"].items())


def checkpoint_dir(final_dir: Path) -> Path:
    """The run's checkpoints (`.run-N.checkpoints`): kept across attempts, removed once the run ends."""
    return final_dir.parent / f".{final_dir.name}.checkpoints"


# --- the work ------------------------------------------------------------------------------------------
class Progress:
    """Receives the trainer's logs: heartbeat (lease, cancellation), metric series, logs, live broadcast."""

    def __init__(self, run: TrainingRun, deadline: float | None = None) -> None:
        self.run = run
        self.deadline = deadline  # time.monotonic(): from then on, should_stop() asks for a checkpoint and a stop
        self.time_up = False
        self.series: list[dict[str, Any]] = []
        self.lines: list[str] = list(filter(None, (run.logs or "").splitlines()))
        self.cancelled = False
        self.saved_at = -1e9
        self.beat_at = -1e9

    def log(self, line: str) -> None:
        self.lines.append(f"{timezone.now():%H:%M:%S} {line}")
        logger.info("training run %s: %s", self.run.pk, line)

    def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
        point = {"step": step, **{k: round(v, 6) for k, v in metrics.items() if math.isfinite(v)}}
        self.series.append(point)
        if len(self.series) > SERIES_MAX:
            self.series = self.series[::2]
        shown = ", ".join(
            f"{k}={point[k]:.4g}" for k in ("loss", "learning_rate", "rewards/accuracies", "tokens_per_s") if k in point
        )
        self.log(f"step {step}/{total} {shown}")
        # Progress, lease and broadcast at most every PROGRESS_INTERVAL_S: a tiny model logs many steps a
        # second. Cancellation does not wait for this: should_stop() reads the flag after every step.
        if time.monotonic() - self.beat_at >= PROGRESS_INTERVAL_S or step == total:
            self.save(step, total, point)

    def save(self, step: int, total: int, point: dict[str, Any] | None = None) -> None:
        self.beat_at = time.monotonic()
        summary = {"step": step, "total_steps": total, **(point or {})}
        if jobs.job_heartbeat(self.run, progress_done=step, metrics=summary):
            self.cancelled = True
        now = time.monotonic()
        # The whole series is rewritten each time: at most once a second, so a long run stays linear.
        if now - self.saved_at >= SERIES_SAVE_INTERVAL_S or step in (0, total):
            self.saved_at = now
            TrainingRun.objects.filter(pk=self.run.pk, worker=self.run.worker).update(
                progress_total=total, metric_series=self.series, logs="\n".join(self.lines[-2000:])
            )
        events.job_progress_broadcast(self.run)

    def cancel_requested(self) -> bool:
        if not self.cancelled:
            self.cancelled = bool(
                TrainingRun.objects.filter(pk=self.run.pk).values_list("cancel_requested", flat=True).first()
            )
        return self.cancelled

    def should_stop(self) -> int:
        """Asked after every optimizer step: one indexed read, so a cancel stops the run within one step.

        STOP for a cancel; SAVE_AND_STOP once the attempt's deadline passed (checkpoint, then stop); else 0."""
        from workers.ml.training import SAVE_AND_STOP, STOP

        if self.cancel_requested():
            return STOP
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if not self.time_up:
                self.time_up = True
                self.log("time limit reached: every rank saves a checkpoint and stops")
            return SAVE_AND_STOP
        return 0


def training_run_work(run: TrainingRun, deadline: float | None = None) -> None:
    """Train, write atomically, evaluate, register: see the module docstring. From `deadline` (time.monotonic())
    on, the attempt checkpoints and ends; the next attempt resumes there."""
    from workers.ml import training as ml

    config = TrainingConfig(**run.hyperparameters)
    runtime.model_cache_clear()  # models cached by earlier jobs leave the device: the run's memory check assumes it
    progress = Progress(run, deadline)
    progress.log(f"attempt {run.attempts}/{run.max_attempts} on {run.worker}: {run.method} from {run.base_model.label}")
    rows = data.rows_load(run.snapshot, run.method)
    train_rows, held_out = ml.held_out_split(rows, config.eval_fraction, config.seed)
    eval_pairs = (
        data.pairs_for_eval(run.snapshot, {data.prompt_key(r.prompt) for r in held_out})
        if run.method == "kto"
        else held_out
    )
    progress.log(f"{len(train_rows)} training rows, {len(held_out)} held out ({len(eval_pairs)} evaluation pairs)")
    final_dir = Path(run.output_dir or training_services.training_run_dir(run.pk))
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    attempts = final_dir.parent / f".{final_dir.name}.attempt-*"
    # Left by attempts that died: their outputs, their trainers' scratch folders (`..run-N.attempt-M-trainer`)
    # and launch folders (`..run-N.attempt-M-launch`). The run's checkpoints stay: this attempt resumes there.
    for pattern in (attempts, ml.scratch_dir(attempts), launcher.launch_dir(attempts)):
        for stale in final_dir.parent.glob(pattern.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = final_dir.parent / f".{final_dir.name}.attempt-{run.attempts}"
    checkpoints = checkpoint_dir(final_dir)
    resume = ml.checkpoint_latest(checkpoints)
    if resume is not None:
        progress.log(f"resuming from the checkpoint at step {resume[1]} ({resume[0].name})")
    progress.save(resume[1] if resume else 0, config.max_steps)
    try:
        if launcher.launched(config):
            result = launcher.train_launched(
                base_path=run.base_model.path,
                config=config,
                train_rows=train_rows,
                eval_pairs=eval_pairs,
                output_dir=tmp_dir,
                checkpoint_dir=checkpoints,
                on_progress=progress,
                should_stop=progress.should_stop,
                log=progress.log,
            )
        else:
            result = ml.train(
                base_path=run.base_model.path,
                config=config,
                train_rows=train_rows,
                output_dir=tmp_dir,
                eval_pairs=eval_pairs,
                on_progress=progress,
                should_stop=progress.should_stop,
                checkpoint_dir=checkpoints,
            )
    except ml.TrainingStopped as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
        progress.log(str(exc))
        TrainingRun.objects.filter(pk=run.pk, worker=run.worker).update(logs="\n".join(progress.lines))
        raise loop.Cancelled from exc
    except (ml.TrainingPaused, SoftTimeLimitExceeded) as exc:
        saved = ml.checkpoint_latest(checkpoints)
        if saved is None:
            raise
        progress.log(f"attempt ended by the time limit; the next attempt resumes from step {saved[1]}")
        TrainingRun.objects.filter(pk=run.pk, worker=run.worker).update(logs="\n".join(progress.lines))
        if run.attempts >= run.max_attempts:  # no attempt will resume: the checkpoints go
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise TransientBackendError(
            f"time limit reached (WORKERS_TASK_TIME_LIMIT): checkpoint saved at step {saved[1]}, "
            "the next attempt resumes from it"
        ) from exc
    except TransientBackendError as exc:
        progress.log(str(exc).splitlines()[0])
        TrainingRun.objects.filter(pk=run.pk, worker=run.worker).update(logs="\n".join(progress.lines))
        if run.attempts >= run.max_attempts:  # no attempt will resume: the checkpoints go
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise
    except jobs.LeaseLost:
        raise  # another attempt owns the run now, and its checkpoints: leave them alone
    except Exception:
        shutil.rmtree(checkpoints, ignore_errors=True)  # a permanent failure: nothing will resume
        raise
    if result.resumed_from_step:
        progress.log(f"resumed at step {result.resumed_from_step}, not step 0")
    progress.log(f"trained {result.steps} steps in {result.seconds:.1f} s, final loss {result.final_loss:.4g}")
    if not math.isfinite(result.final_loss):
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
        raise ApplicationError(f"training diverged: final loss {result.final_loss}")
    jobs.job_heartbeat(run)
    weights_finalize(tmp_dir, final_dir)
    progress.log(f"weights written to {final_dir} (manifest.json)")
    evaluation = evaluation_module.evaluate(run, config, final_dir, eval_pairs, progress)
    evaluation.update(
        {
            "steps": result.steps,
            "seconds": round(result.seconds, 3),
            "cpu_seconds": round(result.cpu_seconds, 3),
            "steps_per_s": round(result.steps_per_s, 3),
        }
    )
    evaluation["tokens_per_s"] = round(result.tokens_per_s, 1)
    policy = run.policy
    metrics = {
        "held_out_accuracy": evaluation.get("held_out_accuracy"),
        "held_out_margin": evaluation.get("held_out_margin"),
        "final_loss": result.final_loss,
        "method": run.method,
    }
    if jobs.job_heartbeat(run):
        raise loop.Cancelled
    with transaction.atomic():
        # Registered out of the arena whatever the policy says: only a promotion puts a version in public battles.
        model = training_services.training_version_register(run=run, path=str(final_dir), metrics=metrics)
        progress.log(f"registered {model.label}")
        jobs.job_finish(
            run,
            JobStatus.SUCCEEDED,
            output_model=model,
            evaluation=evaluation,
            metric_series=progress.series,
            logs="\n".join(progress.lines[-2000:]),
            progress_done=result.steps,
            progress_total=result.total_steps,
            decision=evaluation.get("decision", ""),
        )
        # In the same transaction: a succeeded run whose decision says promoted has a promoted version.
        promoted = evaluation.get("decision") == PromotionDecision.PROMOTED
        if policy is not None and model.role == ModelRole.POLICY and promoted:
            training_services.challenger_promote(model=model, enter_arena=policy.enter_arena)
            progress.log(f"{model.label} is the champion of {model.name}")
    shutil.rmtree(checkpoints, ignore_errors=True)  # registered: no attempt will resume any more
