"""Training runs and dataset snapshots broadcast to ws/jobs/<kind>/<id>/, which admits who may see them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from annotations.models import DatasetSnapshot
from models_hub.models import Model
from prefarena.jobs import events
from prefarena.jobs.model import JobStatus
from prefarena.routing import websocket_urlpatterns
from workers.models import TrainingRun


def _communicator(kind: str, job_id: int, user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/{kind}/{job_id}/")
    communicator.scope["user"] = user
    return communicator


@pytest.fixture
def run(staff: Any) -> TrainingRun:
    base = Model.objects.create(name="base", role="policy", backend="transformers", path="/nowhere")
    snapshot = DatasetSnapshot.objects.create(name="s", status=JobStatus.SUCCEEDED, created_by=staff)
    return TrainingRun.objects.create(method="dpo", base_model=base, snapshot=snapshot, created_by=staff)


@pytest.mark.django_db(transaction=True)
def test_a_training_run_socket_sends_the_state_then_relays_the_worker_broadcast(run: TrainingRun, staff: Any):
    def advance() -> None:
        TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, progress_done=3, progress_total=10)
        events.job_progress_broadcast(TrainingRun.objects.get(pk=run.pk))

    async def scenario() -> tuple[dict, dict]:
        communicator = _communicator("training", run.pk, staff)
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=5)
        await sync_to_async(advance)()
        update = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return first, update

    first, update = async_to_sync(scenario)()
    assert first["job"]["kind"] == "training" and first["job"]["status"] == "queued"
    assert update["job"]["status"] == "running" and update["job"]["progress_done"] == 3


@pytest.mark.django_db(transaction=True)
def test_sockets_of_runs_and_snapshots_refuse_other_users(run: TrainingRun, make_user: Any):
    outsider = make_user("outsider")

    async def refused(kind: str, job_id: int) -> bool:
        communicator = _communicator(kind, job_id, outsider)
        connected, code = await communicator.connect()
        return not connected and code == 4404

    assert async_to_sync(refused)("training", run.pk)
    assert async_to_sync(refused)("snapshot", run.snapshot_id)


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_socket_opens_for_staff(run: TrainingRun, staff: Any):
    async def scenario() -> dict:
        communicator = _communicator("snapshot", run.snapshot_id, staff)
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return first

    first = async_to_sync(scenario)()
    assert first["job"]["kind"] == "snapshot" and first["job"]["status"] == "succeeded"
