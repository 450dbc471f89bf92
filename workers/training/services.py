"""Training runs and retraining policies (web side): validate, create, cancel, register the produced version.

Execution lives in workers/training/runner.py (gpu queue). A run is enqueued by task name (`prefarena.enqueue`,
no service imports a tasks module); the Celery router sends every `workers.*` task to the gpu queue.

Registration rule: a version is created only by `training_version_register`, called by the runner in the
transaction that also marks the run succeeded (conditioned on the attempt still owning the run), and only
after the weights were written to a temporary folder, hashed into `manifest.json` and renamed into place.
A killed or cancelled attempt therefore never leaves a version in the registry.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotations.models import DatasetSnapshot
from models_hub.models import Model, ModelBackend, ModelRole
from models_hub.services import model_champion_set
from prefarena import enqueue
from prefarena.errors import Conflict, InvalidInput
from prefarena.jobs.model import JobStatus
from workers.ml.training_config import POLICY_METHODS, TrainingConfig, TrainingConfigError, training_config_validate
from workers.models import (
    RetrainPolicy,
    RetrainPolicyBase,
    RetrainPolicyTrigger,
    TrainingMethod,
    TrainingRun,
    TrainingTrigger,
)
from workers.training.promotion import promotion_rule_parse

# Which snapshot format each method trains on.
METHOD_FORMAT = {method: ("kto" if method == "kto" else "pairwise") for method in TrainingMethod.values}


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", fields={field: [message]})


def training_config_check(method: str, hyperparameters: dict[str, Any] | None) -> TrainingConfig:
    """The validated config, or InvalidInput naming the bad field (as `hyperparameters.<field>`)."""
    if not isinstance(hyperparameters, dict | None):
        raise _bad("hyperparameters", "must be an object")
    try:
        return training_config_validate(method, hyperparameters)
    except TrainingConfigError as exc:
        field = "method" if exc.field == "method" else f"hyperparameters.{exc.field}"
        raise _bad(field, exc.message) from exc


def training_base_check(base_model: Model, method: str) -> None:
    """A run needs a local checkpoint; policy methods start from a policy, `reward` from any local model."""
    if base_model.backend != ModelBackend.TRANSFORMERS:
        raise _bad("base_model", f"{base_model.label} is an endpoint; training needs a local transformers checkpoint")
    if method in POLICY_METHODS and base_model.role != ModelRole.POLICY:
        raise _bad("base_model", f"{method} trains a policy; {base_model.label} is a {base_model.role} model")
    if method == TrainingMethod.REWARD and base_model.role == ModelRole.JUDGE:
        raise _bad("base_model", "a reward model starts from a policy or reward checkpoint, not a judge")


def training_snapshot_check(snapshot: DatasetSnapshot, method: str) -> None:
    """The snapshot must be built and hold the format the method trains on."""
    fmt = METHOD_FORMAT[method]
    if snapshot.status != JobStatus.SUCCEEDED:
        raise _bad("snapshot", f"snapshot {snapshot.pk} is {snapshot.status}; train on a succeeded snapshot")
    if fmt not in (snapshot.formats or []):
        raise _bad("snapshot", f"{method} trains on the {fmt!r} format; snapshot {snapshot.pk} has {snapshot.formats}")
    if not (snapshot.row_counts or {}).get(fmt):
        raise _bad("snapshot", f"snapshot {snapshot.pk} has no {fmt} rows")


def training_run_dir(run_id: int) -> Path:
    """The output folder fixed by the run id."""
    return Path(settings.PREFARENA_TRAINING_DIR) / f"run-{run_id}"


def _enqueue_on_commit(run_id: int) -> None:
    enqueue.enqueue_on_commit(enqueue.TRAINING_RUN_EXECUTE, run_id)


def training_run_create(
    *,
    base_model: Model,
    snapshot: DatasetSnapshot,
    method: str,
    hyperparameters: dict[str, Any] | None = None,
    trigger: str = TrainingTrigger.API,
    policy: RetrainPolicy | None = None,
    created_by: User | None = None,
    max_attempts: int = 2,
    check_snapshot: bool = True,
) -> TrainingRun:
    """Validate and store a queued training run; it is sent to the gpu queue when the transaction commits."""
    if method not in TrainingMethod.values:
        raise _bad("method", f"must be one of {', '.join(TrainingMethod.values)}")
    config = training_config_check(method, hyperparameters)
    training_base_check(base_model, method)
    if check_snapshot:
        training_snapshot_check(snapshot, method)
    if not 1 <= max_attempts <= 10:
        raise _bad("max_attempts", "must be between 1 and 10")
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                method=method,
                base_model=base_model,
                snapshot=snapshot,
                hyperparameters=config.to_dict(),
                trigger=trigger,
                policy=policy,
                created_by=created_by,
                max_attempts=max_attempts,
                progress_total=config.max_steps,
                enqueued_at=timezone.now(),
            )
            run.output_dir = str(training_run_dir(run.pk))
            run.save(update_fields=["output_dir"])
    except IntegrityError as exc:  # training_run_one_active_per_policy
        raise Conflict(f"policy {policy} already has a queued or running run") from exc
    _enqueue_on_commit(run.pk)
    return run


def training_run_enqueue(run: TrainingRun) -> None:
    """Send a queued run to the gpu queue again (the reaper's re-queue)."""
    _enqueue_on_commit(run.pk)


def training_run_cancel(run: TrainingRun) -> TrainingRun:
    """Ask a run to stop: a queued run is cancelled at once, a running one after its current step."""
    now = timezone.now()
    with transaction.atomic():
        active = TrainingRun.objects.filter(pk=run.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        active.update(cancel_requested=True)
        TrainingRun.objects.filter(pk=run.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.CANCELLED, finished_at=now, error="cancelled before it ran"
        )
    run.refresh_from_db()
    return run


def _output_identity(run: TrainingRun) -> tuple[str, str]:
    """(name, role) of the produced version: policies continue the base's family; reward models get their own."""
    base = run.base_model
    if run.method == TrainingMethod.REWARD:
        return (base.name if base.role == ModelRole.REWARD else f"{base.name}-reward"), ModelRole.REWARD
    return base.name, ModelRole.POLICY


def training_version_register(*, run: TrainingRun, path: str, metrics: dict[str, Any]) -> Model:
    """Register the version a run produced (call inside the runner's finishing transaction): a challenger, out of
    the arena and not the champion; `challenger_promote` alone changes both."""
    if not (Path(path) / "manifest.json").is_file():
        raise InvalidInput(f"{path}: no manifest.json; the weights were not completely written")
    name, role = _output_identity(run)
    base = run.base_model
    with transaction.atomic():
        # Lock the family's newest row so two runs finishing together allocate different versions.
        newest = Model.objects.select_for_update().filter(name=name).order_by("-version").first()
        version = (newest.version if newest else 0) + 1
        return Model.objects.create(
            name=name,
            version=version,
            role=role,
            backend=ModelBackend.TRANSFORMERS,
            path=str(Path(path).resolve()),
            dtype=base.dtype,
            max_new_tokens=base.max_new_tokens,
            temperature=base.temperature,
            top_p=base.top_p,
            seed=base.seed,
            parent=base,
            training_run_id=run.pk,
            snapshot_id=run.snapshot_id,
            metrics=metrics,
            in_arena=False,
            description=f"{run.method} on snapshot {run.snapshot_id} from {base.label} (training run {run.pk})",
            created_by=run.created_by,
        )


# --- promotion ------------------------------------------------------------------------------------------
def challenger_promote(*, model: Model, enter_arena: bool) -> Model:
    """Make a challenger that passed its gate the champion; only then may it enter the arena (public battles)."""
    with transaction.atomic():
        model_champion_set(model=model)
        if enter_arena and model.role == ModelRole.POLICY:
            # arena_since: it enters now, so the leaderboard counts its fresh battles from here
            Model.objects.filter(pk=model.pk, in_arena=False).update(in_arena=True, arena_since=timezone.now())
    model.refresh_from_db(fields=["is_current", "in_arena"])
    return model


# --- retraining policies --------------------------------------------------------------------------------
POLICY_FIELDS = (
    "name",
    "base_model",
    "base_mode",
    "method",
    "trigger",
    "every_n",
    "interval_minutes",
    "snapshot_filters",
    "hyperparameters",
    "enter_arena",
    "promotion_rule",
    "enabled",
)


def _policy_check(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a policy's settings as a whole; returns them normalised (hyperparameters filled in)."""
    name = values.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad("name", "give the policy a name")
    values["name"] = name.strip()
    config = training_config_check(values["method"], values.get("hyperparameters"))
    values["hyperparameters"] = config.to_dict()
    training_base_check(values["base_model"], values["method"])
    if values.get("base_mode", RetrainPolicyBase.CHAMPION) not in RetrainPolicyBase.values:
        raise _bad("base_mode", f"must be one of {', '.join(RetrainPolicyBase.values)}")
    trigger = values.get("trigger")
    if trigger not in RetrainPolicyTrigger.values:
        raise _bad("trigger", f"must be one of {', '.join(RetrainPolicyTrigger.values)}")
    if trigger == RetrainPolicyTrigger.EVERY_N and not (values.get("every_n") and values["every_n"] >= 1):
        raise _bad("every_n", "an every_n policy needs every_n >= 1")
    if trigger == RetrainPolicyTrigger.SCHEDULE and not (
        values.get("interval_minutes") and values["interval_minutes"] >= 1
    ):
        raise _bad("interval_minutes", "a schedule policy needs interval_minutes >= 1")
    if not isinstance(values.get("snapshot_filters") or {}, dict):
        raise _bad("snapshot_filters", "must be an object")
    values["snapshot_filters"] = values.get("snapshot_filters") or {}
    values["promotion_rule"] = values.get("promotion_rule") or {}
    promotion_rule_parse(values["promotion_rule"])  # InvalidInput naming promotion_rule.<field>
    return values


def retrain_policy_create(
    *,
    name: str,
    base_model: Model,
    method: str,
    trigger: str,
    every_n: int | None = None,
    interval_minutes: int | None = None,
    snapshot_filters: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    enter_arena: bool = False,
    promotion_rule: dict[str, Any] | None = None,
    enabled: bool = True,
    base_mode: str = RetrainPolicyBase.CHAMPION,
    preferences_seen: int = 0,
    created_by: User | None = None,
) -> RetrainPolicy:
    """Validate and store a retraining policy (checked by beat: workers.tasks.retrain_policies_check)."""
    values = _policy_check(
        {
            "name": name,
            "base_model": base_model,
            "base_mode": base_mode,
            "method": method,
            "trigger": trigger,
            "every_n": every_n,
            "interval_minutes": interval_minutes,
            "snapshot_filters": snapshot_filters,
            "hyperparameters": hyperparameters,
            "enter_arena": enter_arena,
            "promotion_rule": promotion_rule,
            "enabled": enabled,
        }
    )
    try:
        with transaction.atomic():
            return RetrainPolicy.objects.create(**values, preferences_seen=preferences_seen, created_by=created_by)
    except IntegrityError as exc:
        raise Conflict(f"a policy named {values['name']!r} exists", fields={"name": ["taken"]}) from exc


def retrain_policy_update(*, policy: RetrainPolicy, **changes: Any) -> RetrainPolicy:
    """Edit, pause (`enabled=False`) or re-base (`base_model`, `base_mode`) a policy; its runs keep what they ran.

    A run copies what it needs when it is queued (base model, hyperparameters, snapshot); the promotion rule is
    read when the challenger is evaluated, and stored with the run's evaluation.
    """
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise _bad(unknown[0], "cannot be changed")
    if policy.deleted_at is not None:
        raise Conflict(f"policy {policy.name!r} was deleted")
    values = _policy_check({**{f: getattr(policy, f) for f in POLICY_FIELDS}, **changes})
    try:
        with transaction.atomic():
            # The watermark (preferences_seen, last_fired_at) is beat's: not written here, so an edit racing a
            # firing neither re-fires nor loses it.
            RetrainPolicy.objects.filter(pk=policy.pk, deleted_at__isnull=True).update(
                **values, updated_at=timezone.now()
            )
    except IntegrityError as exc:
        raise Conflict(f"a policy named {values['name']!r} exists", fields={"name": ["taken"]}) from exc
    policy.refresh_from_db()
    return policy


def retrain_policy_delete(*, policy: RetrainPolicy) -> None:
    """Delete a policy: it stops firing and is hidden; its runs, snapshots and challengers stay as its history.

    A run it has queued or running goes on to its end (and its decision is kept).
    """
    RetrainPolicy.objects.filter(pk=policy.pk, deleted_at__isnull=True).update(deleted_at=timezone.now(), enabled=False)


def retrain_policy_claim_fire(*, policy: RetrainPolicy, matching: int, now: Any = None) -> bool:
    """Compare-and-set the policy's watermark; True for exactly one caller per firing.

    every_n: fires when `matching - preferences_seen >= every_n`, moving the watermark to `matching`
    only if nobody moved it since we read it. schedule: the same on `last_fired_at`. Two beat ticks
    racing both read the old watermark; only one UPDATE matches it.
    """
    now = now or timezone.now()
    rows = RetrainPolicy.objects.filter(pk=policy.pk, enabled=True, deleted_at__isnull=True)
    if policy.trigger == RetrainPolicyTrigger.EVERY_N:
        if matching - policy.preferences_seen < (policy.every_n or 1):
            return False
        claimed = rows.filter(preferences_seen=policy.preferences_seen).update(
            preferences_seen=matching, last_fired_at=now
        )
    else:
        due = now - timedelta(minutes=policy.interval_minutes or 1)
        if policy.last_fired_at is not None and policy.last_fired_at > due:
            return False
        previous = (
            Q(last_fired_at__isnull=True) if policy.last_fired_at is None else Q(last_fired_at=policy.last_fired_at)
        )
        claimed = rows.filter(previous).update(last_fired_at=now, preferences_seen=max(matching, 0))
    return bool(claimed)


def retrain_policy_has_active_run(policy: RetrainPolicy) -> bool:
    return TrainingRun.objects.filter(policy=policy, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists()
