"""Training runs inside a gpu-queue worker, and the retraining-policy check beat runs.

A run: wait for its snapshot, claim the row (prefarena/jobs/protocol.py), read the snapshot's JSONL into
`PreferencePair`/`BinaryExample` rows, train through workers/ml/training.py into a temporary folder beside
the final one, hash every file into `manifest.json`, rename the folder into place (atomic on one file
system), evaluate, then register the version and finish the run in one transaction conditioned on this
attempt still owning the run. A SIGKILL anywhere before that transaction leaves at most an unregistered
folder, which the next attempt deletes; cancellation stops after the current optimizer step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.export.filters import filters_parse
from annotations.export.source import judgments_queryset
from annotations.snapshots import snapshot_create, snapshot_file_path
from annotations.webhooks import webhook_emit
from models_hub import training as training_services
from models_hub.models import DatasetSnapshot, ModelRole, RetrainPolicy, TrainingRun, TrainingTrigger
from models_hub.selectors import model_get_by_reference
from prefarena import publish
from prefarena.errors import ApplicationError
from prefarena.jobs import events, loop
from prefarena.jobs import protocol as jobs
from prefarena.jobs.model import TERMINAL_STATUSES, JobStatus
from workers import runtime, selectors
from workers.ml.training_config import TrainingConfig

logger = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 5.0  # how often a run whose snapshot is still being built asks again
EVAL_PROMPTS = 16  # held-out prompts sampled from the parent and the new version for the run page
PROGRESS_INTERVAL_S = 0.5  # most often a run writes its progress row and broadcasts it
SERIES_SAVE_INTERVAL_S = 1.0  # how often the curves' points are written while a run trains
SERIES_MAX = 5000  # points kept in metric_series (a long run keeps every k-th)


class SnapshotUnusable(ApplicationError):
    """The snapshot failed, was cancelled or holds no usable rows: the run cannot start."""


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
    retry_in = loop.job_execute(TrainingRun, run_id, training_run_work)
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


# --- data ----------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    """A completion as text: snapshots write strings, or message lists when exported conversationally."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return str(value[-1].get("content", ""))
    return ""


def _prompt(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in value]
    return ""


def snapshot_jsonl(snapshot: DatasetSnapshot, fmt: str) -> Path:
    """The snapshot's JSONL file of one format (annotations/snapshots.py fixes the layout)."""
    return snapshot_file_path(snapshot, fmt, "jsonl")


def rows_load(snapshot: DatasetSnapshot, method: str) -> list[Any]:
    """Training rows of a snapshot: preference pairs (ties dropped), or KTO rows for `kto`."""
    from workers.ml.training import BinaryExample, PreferencePair

    fmt = training_services.METHOD_FORMAT[method]
    path = snapshot_jsonl(snapshot, fmt)
    if not path.is_file():
        raise SnapshotUnusable(f"snapshot {snapshot.pk}: {path} is missing")
    rows: list[Any] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if fmt == "kto":
                rows.append(BinaryExample(_prompt(row["prompt"]), _text(row["completion"]), bool(row["label"])))
            elif not row.get("is_tie"):
                rows.append(PreferencePair(_prompt(row["prompt"]), _text(row["chosen"]), _text(row["rejected"])))
    if len(rows) < 2:
        raise SnapshotUnusable(f"snapshot {snapshot.pk} has {len(rows)} usable {fmt} row(s); training needs at least 2")
    return rows


def _pairs_for_eval(snapshot: DatasetSnapshot, held_out_prompts: set[str]) -> list[Any]:
    """KTO runs are evaluated on the snapshot's pairwise rows of their held-out prompts, when it has them."""
    if "pairwise" not in (snapshot.formats or []):
        return []
    try:
        pairs = rows_load(snapshot, "dpo")
    except SnapshotUnusable:
        return []
    return [p for p in pairs if _key(p.prompt) in held_out_prompts]


def _key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


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


# --- the work ------------------------------------------------------------------------------------------
class _Progress:
    """Receives the trainer's logs: heartbeat (lease, cancellation), metric series, logs, live broadcast."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
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

    def should_stop(self) -> bool:
        # Asked after every optimizer step: one indexed read, so a cancel stops the run within one step.
        if not self.cancelled:
            self.cancelled = bool(
                TrainingRun.objects.filter(pk=self.run.pk).values_list("cancel_requested", flat=True).first()
            )
        return self.cancelled


def training_run_work(run: TrainingRun) -> None:
    """Train, write atomically, evaluate, register: see the module docstring."""
    from workers.ml import training as ml

    config = TrainingConfig(**run.hyperparameters)
    progress = _Progress(run)
    progress.log(f"attempt {run.attempts}/{run.max_attempts} on {run.worker}: {run.method} from {run.base_model.label}")
    rows = rows_load(run.snapshot, run.method)
    train_rows, held_out = ml.held_out_split(rows, config.eval_fraction, config.seed)
    eval_pairs = _pairs_for_eval(run.snapshot, {_key(r.prompt) for r in held_out}) if run.method == "kto" else held_out
    progress.log(f"{len(train_rows)} training rows, {len(held_out)} held out ({len(eval_pairs)} evaluation pairs)")
    final_dir = Path(run.output_dir or training_services.training_run_dir(run.pk))
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    attempts = final_dir.parent / f".{final_dir.name}.attempt-*"
    # Left by attempts that died: their outputs and their trainers' scratch folders (`..run-N.attempt-M-trainer`).
    for stale in [*final_dir.parent.glob(attempts.name), *final_dir.parent.glob(ml.scratch_dir(attempts).name)]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = final_dir.parent / f".{final_dir.name}.attempt-{run.attempts}"
    progress.save(0, config.max_steps)
    try:
        result = ml.train(
            base_path=run.base_model.path,
            config=config,
            train_rows=train_rows,
            output_dir=tmp_dir,
            eval_pairs=eval_pairs,
            on_progress=progress,
            should_stop=progress.should_stop,
        )
    except ml.TrainingStopped as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        progress.log(str(exc))
        TrainingRun.objects.filter(pk=run.pk, worker=run.worker).update(logs="\n".join(progress.lines))
        raise loop.Cancelled from exc
    progress.log(f"trained {result.steps} steps in {result.seconds:.1f} s, final loss {result.final_loss:.4g}")
    if not math.isfinite(result.final_loss):
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise ApplicationError(f"training diverged: final loss {result.final_loss}")
    jobs.job_heartbeat(run)
    weights_finalize(tmp_dir, final_dir)
    progress.log(f"weights written to {final_dir} (manifest.json)")
    evaluation = _evaluate(run, config, final_dir, eval_pairs, progress)
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
        model = training_services.training_version_register(
            run=run, path=str(final_dir), metrics=metrics, in_arena=bool(policy and policy.enter_arena)
        )
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
        )
    if policy is not None and model.role == ModelRole.POLICY:
        allowed, reason = training_services.promotion_decide(evaluation, policy.promotion_rule)
        if allowed:
            training_services.model_promote(model=model)
        TrainingRun.objects.filter(pk=run.pk).update(evaluation={**evaluation, "promotion": reason})


def _evaluate(
    run: TrainingRun, config: TrainingConfig, final_dir: Path, eval_pairs: Sequence[Any], progress: _Progress
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
        prompts = list(dict.fromkeys(_key(p.prompt) for p in eval_pairs))[:EVAL_PROMPTS]
        evaluation["samples"] = _samples(run, final_dir, [_unkey(p) for p in prompts])
        if rule.get("judge"):
            evaluation["battles"] = _battles(rule["judge"], evaluation["samples"])
            progress.log(f"battles against the parent: {evaluation['battles']}")
            flagged = [str(p) for p in rule.get("safety_prompts") or []][:EVAL_PROMPTS]
            if flagged:
                safety = _battles(rule["judge"], _samples(run, final_dir, flagged))
                # A regression: the judge prefers the parent on flagged prompts (win rate below one half).
                safety["regression"] = max(0.0, 0.5 - safety["win_rate"]) if safety["judged"] else None
                evaluation["safety"] = safety
    jobs.job_heartbeat(run)
    return evaluation


def _unkey(key: str) -> Any:
    return json.loads(key) if key.startswith("[") else key


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties count half a win)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _battles(judge_reference: Any, samples: list[dict[str, Any]]) -> dict[str, Any]:
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


def _samples(run: TrainingRun, final_dir: Path, prompts: list[Any]) -> list[dict[str, Any]]:
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


# --- retraining policies -------------------------------------------------------------------------------
def matching_preferences(policy: RetrainPolicy) -> int:
    """How many judgments match the policy's snapshot filters now (the export's own SQL filter)."""
    return judgments_queryset(filters_parse(policy.snapshot_filters)).count()


def retrain_policy_fire(policy: RetrainPolicy, *, now: Any = None) -> TrainingRun | None:
    """Fire the policy if due: compare-and-set its watermark, snapshot the data, queue one run."""
    if training_services.retrain_policy_has_active_run(policy):
        return None  # one run at a time; the watermark stays, so the next tick after it ends fires
    creator = policy.created_by
    if creator is not None and not selectors.retrain_policy_list_for_user(creator).filter(pk=policy.pk).exists():
        # Its creator no longer manages every campaign it reads (or lost the account's rights): a run would
        # train on data they may not see and publish a version every user can list. Paused, not deleted.
        logger.warning("retraining policy %s skipped: %s may no longer read its data", policy.name, creator)
        return None
    matching = matching_preferences(policy)
    try:
        with transaction.atomic():
            if not training_services.retrain_policy_claim_fire(policy=policy, matching=matching, now=now):
                return None
            formats = ["kto", "pairwise"] if policy.method == "kto" else ["pairwise"]
            snapshot = snapshot_create(
                name=f"{policy.name} @ {matching} preferences",
                filters=policy.snapshot_filters,
                formats=formats,
                options={},
                created_by=policy.created_by,
                description=f"Snapshot taken by retraining policy {policy.name}",
            )
            return training_services.training_run_create(
                base_model=policy.base_model,
                snapshot=snapshot,
                method=policy.method,
                hyperparameters=policy.hyperparameters,
                trigger=TrainingTrigger.POLICY,
                policy=policy,
                created_by=policy.created_by,
                check_snapshot=False,  # built on the default queue; the run waits for it
            )
    except IntegrityError:
        return None  # another tick queued this policy's run first (training_run_one_active_per_policy)
    except ApplicationError:
        logger.exception("retraining policy %s could not fire", policy.name)
        return None


def retrain_policies_check(now: Any = None) -> list[int]:
    """Fire every enabled, due policy; returns the ids of the runs queued."""
    queued = []
    for policy in RetrainPolicy.objects.filter(enabled=True).select_related("base_model", "created_by"):
        run = retrain_policy_fire(policy, now=now)
        if run is not None:
            queued.append(run.pk)
    return queued


def training_runs_reap(now: Any = None) -> dict[str, list[int]]:
    """The job reaper for training runs: requeue runs whose worker died, fail those out of attempts."""
    with transaction.atomic():
        requeued, failed = jobs.jobs_reap(TrainingRun, now)
        for run_id in requeued:
            training_services.training_run_enqueue(TrainingRun(pk=run_id))
    return {"TrainingRun.requeued": requeued, "TrainingRun.failed": failed}


__all__ = [
    "TERMINAL_STATUSES",
    "manifest_verify",
    "retrain_policies_check",
    "retrain_policy_fire",
    "rows_load",
    "training_run_execute",
    "training_run_work",
    "weights_finalize",
]
