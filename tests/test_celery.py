"""Celery for real: a worker process on the Redis broker against the test database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations.models import AssignmentSlot, SlotState
from annotations.tasks import assignment_leases_reap
from prefarena.celery import app
from tests.celery_worker import WorkerProcess, wait_for


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("default", "gpu")
    return client


@pytest.fixture
def worker(transactional_db: None, broker: redis.Redis, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(tmp_path / "worker.log", queues="default")
    yield process
    process.stop()


def expired_slot(make_campaign, make_user) -> AssignmentSlot:
    user = make_user()
    campaign = make_campaign(items=1, annotators=[user])
    slot = AssignmentSlot.objects.get(item__campaign=campaign)
    past = timezone.now() - timedelta(minutes=1)
    AssignmentSlot.objects.filter(pk=slot.pk).update(
        state=SlotState.LEASED, annotator=user, leased_at=past, lease_expires_at=past
    )
    return slot


def test_task_enqueued_on_commit_runs_on_a_real_worker(worker, make_campaign, make_user):
    slot = expired_slot(make_campaign, make_user)
    with transaction.atomic():
        transaction.on_commit(assignment_leases_reap.delay)
    assert wait_for(lambda: AssignmentSlot.objects.get(pk=slot.pk).state == SlotState.OPEN)
    assert AssignmentSlot.objects.get(pk=slot.pk).annotator_id is None


def test_task_enqueued_in_a_rolled_back_transaction_never_runs(worker, broker, make_campaign, make_user):
    slot = expired_slot(make_campaign, make_user)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        transaction.on_commit(assignment_leases_reap.delay)
        raise Rollback
    assert broker.llen("default") == 0
    time.sleep(2)  # give a wrongly-sent task time to run
    assert AssignmentSlot.objects.get(pk=slot.pk).state == SlotState.LEASED


def test_tasks_route_by_module():
    router = app.amqp.router
    assert router.route({}, "workers.tasks.generate")["queue"].name == "gpu"
    assert router.route({}, "annotations.tasks.assignment_leases_reap")["queue"].name == "default"
    gpu_queue = router.route({}, "workers.tasks.generate")["queue"]
    assert gpu_queue.routing_key == "gpu"
