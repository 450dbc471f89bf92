"""End to end through a real Celery worker (`default` queue): snapshot build, then a webhook retried after a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from annotations.models import DatasetSnapshot, WebhookDelivery
from tests.celery_worker import WorkerProcess, wait_for
from tests.datasets.conftest import PreferenceData
from tests.datasets.receiver import receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def default_worker(tmp_path: Path, snapshot_dir: Path) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default")
    env = {"PREFARENA_SNAPSHOT_DIR": str(snapshot_dir), "PREFARENA_WEBHOOK_BACKOFF_SECONDS": "1"}
    worker = WorkerProcess(tmp_path / "default-worker.log", queues="default", env=env)
    yield worker
    worker.stop()


def test_snapshot_built_by_the_worker_fires_a_signed_webhook_that_is_retried(
    preference_data: PreferenceData, api: Any, staff: Any, default_worker: WorkerProcess
) -> None:
    client = api(staff)
    with receiver("worker-secret", statuses=[500, 200]) as server:
        hook = client.post(
            "/api/v1/webhooks/",
            {"url": server.url, "events": ["snapshot.ready"], "secret": "worker-secret"},
            format="json",
        )
        assert hook.status_code == 201
        created = client.post(
            "/api/v1/datasets/",
            {
                "name": "via worker",
                "formats": ["pairwise", "raw"],
                "filters": {"campaigns": [preference_data.pairwise.pk]},
            },
            format="json",
        )
        assert created.status_code == 201
        snapshot_id = created.json()["id"]
        assert wait_for(lambda: DatasetSnapshot.objects.get(pk=snapshot_id).is_terminal, timeout=120), (
            default_worker.log.read_text()[-3000:]
        )
        snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
        assert snapshot.status == "succeeded", snapshot.error
        assert snapshot.progress_done == snapshot.progress_total == 6
        assert (Path(snapshot.directory) / "pairwise.parquet").is_file()
        delivered = wait_for(
            lambda: WebhookDelivery.objects.filter(webhook_id=hook.json()["id"], status="delivered").exists(),
            timeout=60,
        )
        assert delivered, default_worker.log.read_text()[-3000:]
    delivery = WebhookDelivery.objects.get(webhook_id=hook.json()["id"])
    assert [entry["status_code"] for entry in delivery.log] == [500, 200]
    assert [request.signature_ok for request in server.requests] == [True, True]
    assert server.requests[-1].body["data"]["snapshot"] == snapshot_id
    assert server.requests[-1].body["data"]["content_hash"] == snapshot.content_hash
