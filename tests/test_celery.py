"""Celery for real: a worker process on the Redis broker against the test database."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations import snapshots
from annotations.models import AssignmentSlot, DatasetSnapshot, SlotState
from prefarena import enqueue
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


def queued_tasks(broker: redis.Redis, queue: str) -> list[tuple[str, list]]:
    """(task name, positional arguments) of every message waiting on a queue (kombu's Redis list)."""
    out = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], body[0]))
    return out


def test_a_service_enqueues_its_task_only_when_its_transaction_commits(transactional_db, broker, staff):
    """The app's own enqueue path (a snapshot's build, annotations/snapshots.py), not Django's on_commit alone."""

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        snapshots.snapshot_create(name="rolled back", filters={}, formats=["pairwise"], options={}, created_by=staff)
        assert queued_tasks(broker, "default") == []  # not before the commit either
        raise Rollback
    assert queued_tasks(broker, "default") == [] and not DatasetSnapshot.objects.exists()

    with transaction.atomic():
        snapshot = snapshots.snapshot_create(
            name="kept", filters={}, formats=["pairwise"], options={}, created_by=staff
        )
        assert queued_tasks(broker, "default") == []
    assert queued_tasks(broker, "default") == [("annotations.tasks.snapshot_build", [snapshot.pk])]


def test_a_task_sent_by_name_runs_on_a_real_worker(worker, make_campaign, make_user):
    """What beat does: a message naming a registered task, picked up by a worker process on the broker."""
    slot = expired_slot(make_campaign, make_user)
    app.send_task("annotations.tasks.assignment_leases_reap")
    assert wait_for(lambda: AssignmentSlot.objects.get(pk=slot.pk).state == SlotState.OPEN)
    assert AssignmentSlot.objects.get(pk=slot.pk).annotator_id is None


GPU_TASKS = {
    "workers.tasks.generation_job_run",
    "workers.tasks.scoring_job_run",
    "workers.tasks.battle_generate",
    "workers.tasks.judge_job_run",
    "workers.tasks.training_run_execute",
}


PROJECT_APPS = ("annotations", "arena", "models_hub", "workers")
ROOT = Path(__file__).resolve().parents[1]


def project_tasks() -> set[str]:
    """The tasks a worker registers: every `@shared_task(name=...)` of the apps' tasks modules (Celery's
    autodiscovery imports `<app>.tasks`; every task here is declared with an explicit name). Read from the
    source: the registry of this test process depends on what earlier tests imported."""
    names = set()
    for app_name in PROJECT_APPS:
        path = ROOT / app_name / "tasks.py"
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "shared_task":
                names |= {
                    kw.value.value for kw in node.keywords if kw.arg == "name" and isinstance(kw.value, ast.Constant)
                }
    assert names, "no task found: the tasks modules moved?"
    return names


def test_every_registered_task_routes_to_its_queue():
    """Model jobs go to the gpu queue; everything else (reapers, routing, webhooks, arena) to default."""
    names = project_tasks()
    assert names >= GPU_TASKS
    router = app.amqp.router
    for name in sorted(names):
        queue = router.route({}, name)["queue"]
        expected = "gpu" if name in GPU_TASKS else "default"
        assert (name, queue.name, queue.routing_key) == (name, expected, expected)


def test_every_route_and_beat_entry_names_a_registered_task():
    names = project_tasks()
    routed = {pattern for pattern in app.conf.task_routes if "*" not in pattern}
    assert routed <= names, routed - names
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert scheduled and scheduled <= names, scheduled - names


def test_every_enqueue_name_is_a_registered_task():
    assert set(enqueue.TASK_NAMES) <= project_tasks(), set(enqueue.TASK_NAMES) - project_tasks()
    constants = {value for name, value in vars(enqueue).items() if name.isupper() and isinstance(value, str)}
    assert constants == set(enqueue.TASK_NAMES)


def test_only_tasks_modules_import_tasks_and_every_enqueue_goes_through_prefarena_enqueue():
    """Services name tasks (prefarena/enqueue.py); importing a tasks module from one is how cycles began."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for app_name in ("annotations", "arena", "models_hub", "workers", "prefarena"):
        for path in sorted((root / app_name).rglob("*.py")):
            if "migrations" in path.parts or path.name == "tasks.py" and path.parent.name != "management":
                continue
            code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())  # comments aside
            relative = path.relative_to(root).as_posix()
            for needle in (".tasks import", "import tasks", ".delay(", ".apply_async(", "send_task("):
                if needle in code and relative != "prefarena/enqueue.py":
                    offenders.append(f"{relative}: {needle}")
    assert offenders == []


def test_a_fresh_worker_process_registers_exactly_the_declared_tasks():
    """What `celery -A prefarena worker` loads (Django's autodiscovery of <app>.tasks), in a process of its own."""
    code = (
        "import json, os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'prefarena.settings');"
        "os.environ.setdefault('DEBUG', '1'); django.setup();"
        "from prefarena.celery import app; app.loader.import_default_modules();"
        f"print(json.dumps(sorted(n for n in app.tasks if n.split('.')[0] in {PROJECT_APPS!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) == project_tasks()
