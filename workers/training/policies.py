"""Retraining policies fired by beat, and the reaper of training runs."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction

from annotations.export.filters import filters_parse
from annotations.export.source import judgments_queryset
from annotations.snapshots import snapshot_create
from models_hub.models import Model, ModelBackend
from models_hub.selectors import model_champion
from prefarena.errors import ApplicationError
from prefarena.jobs import protocol as jobs
from workers import selectors
from workers.models import RetrainPolicy, RetrainPolicyBase, TrainingRun, TrainingTrigger
from workers.training import services as training_services

logger = logging.getLogger(__name__)


def matching_preferences(policy: RetrainPolicy) -> int:
    """How many judgments match the policy's snapshot filters now (the export's own SQL filter)."""
    return judgments_queryset(filters_parse(policy.snapshot_filters)).count()


def policy_base(policy: RetrainPolicy) -> Model:
    """What the policy's next run trains from: the current champion of its base model's name (iterating on the
    loop's own winners), or the base model itself when `base_mode` is `original` or the champion is an endpoint
    (its weights are not here to train; the run's evaluation still meets it)."""
    if policy.base_mode == RetrainPolicyBase.ORIGINAL:
        return policy.base_model
    champion = model_champion(policy.base_model.name)
    if champion is None or champion.backend != ModelBackend.TRANSFORMERS:
        return policy.base_model
    return champion


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
                base_model=policy_base(policy),
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
    due = RetrainPolicy.objects.filter(enabled=True, deleted_at__isnull=True)
    for policy in due.select_related("base_model", "created_by"):
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
