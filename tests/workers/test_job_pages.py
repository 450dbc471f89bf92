"""Job pages, progress.json, cancel and the live-progress websocket (PostgreSQL + Redis channel layer).

No worker runs: jobs are created through the service (models registered unchecked at a path that does
not exist), rows are moved by hand where a test needs progress, and outputs are inserted directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations.models import CampaignMembership, MemberRole, Prompt, Response
from models_hub.services import model_register
from prefarena.jobs import events
from prefarena.routing import websocket_urlpatterns
from workers import services
from workers.models import GenerationJob, GenerationOutput, JobStatus, JudgeJob, ScoringJob

PROMPTS = ["What do bees make?", "Where does the sun rise?"]


@pytest.fixture
def broker_purged() -> Iterator[None]:
    """Jobs created in committed transactions enqueue a task on the gpu list; nobody consumes it here."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield
    client.delete("gpu")


@pytest.fixture
def models(db: None) -> dict[str, Any]:
    return {
        "policy": model_register(
            name="page-policy", role="policy", backend="transformers", check=False, path="/nonexistent"
        ),
        "reward": model_register(
            name="page-reward", role="reward", backend="transformers", check=False, path="/nonexistent"
        ),
    }


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user("owner")


@pytest.fixture
def generation_job(models: dict[str, Any], owner: Any, broker_purged: None) -> GenerationJob:
    return services.generation_job_create(models=[models["policy"]], prompts=PROMPTS, created_by=owner)


@pytest.fixture
def scoring_job(models: dict[str, Any], owner: Any, broker_purged: None) -> ScoringJob:
    prompt = Prompt.objects.create(content="Score me")
    responses = [Response.objects.create(prompt=prompt, text=f"answer {i}") for i in range(3)]
    return services.scoring_job_create(model=models["reward"], responses=responses, created_by=owner)


def client_for(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def detail_url(kind: str, job_id: int) -> str:
    return reverse("job-detail", kwargs={"kind": kind, "job_id": job_id})


def progress_url(kind: str, job_id: int) -> str:
    return reverse("job-progress", kwargs={"kind": kind, "job_id": job_id})


def cancel_url(kind: str, job_id: int) -> str:
    return reverse("job-cancel", kwargs={"kind": kind, "job_id": job_id})


def output_add(
    job: GenerationJob, prompt: Prompt, text: str, *, score: float | None = None, kept: bool = True, **fields: Any
):
    model = job.policy_models.get()
    response = Response.objects.create(prompt=prompt, text=text, model_name=model.label)
    return GenerationOutput.objects.create(
        job=job, prompt=prompt, model=model, response=response, reward_score=score, kept=kept, **fields
    )


# --- pages -----------------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("viewer", ["owner", "staff"])
def test_job_pages_render_for_creator_and_staff(viewer, owner, staff, generation_job, scoring_job):
    client = client_for(owner if viewer == "owner" else staff)

    listing = client.get(reverse("job-list"))
    generation = client.get(detail_url("generation", generation_job.pk))
    scoring = client.get(detail_url("scoring", scoring_job.pk))

    assert listing.status_code == generation.status_code == scoring.status_code == 200
    page = listing.content.decode()
    assert detail_url("generation", generation_job.pk) in page and detail_url("scoring", scoring_job.pk) in page
    generation_page = generation.content.decode()
    assert f"Generation job #{generation_job.pk}" in generation_page
    assert 'data-job-field="progress_total">2<' in generation_page
    assert "page-policy@v1" in generation_page
    assert f'data-ws-path="/ws/jobs/generation/{generation_job.pk}/"' in generation_page
    assert cancel_url("generation", generation_job.pk) in generation_page  # creator and staff may cancel
    scoring_page = scoring.content.decode()
    assert "page-reward@v1" in scoring_page and 'data-job-field="progress_total">3<' in scoring_page


@pytest.mark.django_db
def test_other_users_get_404_and_do_not_see_the_job_listed(make_user, generation_job, scoring_job):
    client = client_for(make_user("mallory"))

    assert client.get(detail_url("generation", generation_job.pk)).status_code == 404
    assert client.get(detail_url("scoring", scoring_job.pk)).status_code == 404
    assert client.get(progress_url("generation", generation_job.pk)).status_code == 404
    assert client.post(cancel_url("generation", generation_job.pk)).status_code == 404
    listing = client.get(reverse("job-list"))
    assert listing.status_code == 200
    assert detail_url("generation", generation_job.pk) not in listing.content.decode()
    generation_job.refresh_from_db()
    assert generation_job.status == JobStatus.QUEUED and not generation_job.cancel_requested


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(generation_job):
    client = client_for(None)
    for url in (
        reverse("job-list"),
        detail_url("generation", generation_job.pk),
        progress_url("generation", generation_job.pk),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
    assert client.post(cancel_url("generation", generation_job.pk)).status_code == 302
    generation_job.refresh_from_db()
    assert generation_job.status == JobStatus.QUEUED


@pytest.mark.django_db
def test_unknown_job_and_kind_are_404(owner):
    client = client_for(owner)
    assert client.get(detail_url("generation", 999_999)).status_code == 404
    assert client.get(detail_url("scoring", 10**20)).status_code == 404  # beyond bigint: still a 404
    assert client.get("/jobs/training/1/").status_code == 404


@pytest.mark.django_db
def test_outputs_table_escapes_html_and_shows_score_and_kept(owner, generation_job):
    prompt = generation_job.prompts.order_by("id").first()
    output_add(generation_job, prompt, '<script>alert("x")</script> & <b>bold</b>', score=1.25, kept=False)

    page = client_for(owner).get(detail_url("generation", generation_job.pk)).content.decode()

    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "What do bees make?" in page
    assert "1.250" in page
    row = page[page.index("&lt;script&gt;") :]
    assert row.index("1.250") < row.index("<td>no</td>") < row.index("</tr>")


@pytest.mark.django_db
def test_outputs_table_marks_a_sample_that_repeats_an_earlier_one(owner, generation_job):
    prompt = generation_job.prompts.order_by("id").first()
    output_add(generation_job, prompt, "Honey.", sample_index=0)
    output_add(generation_job, prompt, "Honey. ", sample_index=1, kept=False, duplicate=True, regenerations=3)

    page = client_for(owner).get(detail_url("generation", generation_job.pk)).content.decode()

    table = page[page.index('id="generation-outputs"') :]
    assert table.count("repeats an earlier sample") == 1
    assert table.index("Honey.") < table.index("<td>yes</td>") < table.index("<td>no <small")


@pytest.mark.django_db
def test_outputs_table_shows_at_most_50_rows(owner, models, broker_purged):
    job = services.generation_job_create(
        models=[models["policy"]], prompts=[f"prompt {i}" for i in range(60)], created_by=owner
    )
    for prompt in job.prompts.all():
        output_add(job, prompt, f"reply to {prompt.pk}")

    page = client_for(owner).get(detail_url("generation", job.pk)).content.decode()

    body = page[page.index('id="generation-outputs"') :]
    assert body.count("reply to ") == 50
    assert "first 50 of 60" in page


@pytest.mark.django_db
def test_error_text_and_metrics_are_shown(owner, generation_job):
    GenerationJob.objects.filter(pk=generation_job.pk).update(
        status=JobStatus.FAILED,
        error="cannot load /nonexistent: <no such file>",
        attempts=3,
        progress_done=1,
        metrics={"tokens": 321, "tokens_per_s": 45.6, "duplicates_regenerated": 4, "duplicates_dropped": 2},
        finished_at=timezone.now(),
    )

    page = client_for(owner).get(detail_url("generation", generation_job.pk)).content.decode()

    assert "cannot load /nonexistent: &lt;no such file&gt;" in page
    assert 'data-job-field="tokens">321<' in page and 'data-job-field="throughput">45.6<' in page
    assert 'data-job-field="duplicates_regenerated">4<' in page and 'data-job-field="duplicates_dropped">2<' in page
    assert 'data-job-field="attempts">3<' in page and 'data-terminal="1"' in page
    assert 'data-job-field="percent">50<' in page


# --- cancel ----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cancel_button_cancels_a_queued_job(owner, generation_job):
    client = client_for(owner)

    response = client.post(cancel_url("generation", generation_job.pk), follow=True)

    assert response.redirect_chain[-1][0] == detail_url("generation", generation_job.pk)
    generation_job.refresh_from_db()
    assert generation_job.status == JobStatus.CANCELLED and generation_job.cancel_requested
    assert generation_job.finished_at is not None
    page = response.content.decode()
    assert f"job #{generation_job.pk} cancelled" in page
    assert 'data-terminal="1"' in page


@pytest.mark.django_db
def test_cancel_of_a_running_job_asks_the_worker_to_stop(staff, generation_job):
    GenerationJob.objects.filter(pk=generation_job.pk).update(status=JobStatus.RUNNING, attempts=1)

    response = client_for(staff).post(cancel_url("generation", generation_job.pk), follow=True)

    generation_job.refresh_from_db()
    assert generation_job.status == JobStatus.RUNNING and generation_job.cancel_requested
    assert "after its current batch" in response.content.decode()


@pytest.mark.django_db
def test_cancel_of_a_finished_job_changes_nothing_and_says_so(owner, scoring_job):
    ScoringJob.objects.filter(pk=scoring_job.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())

    response = client_for(owner).post(cancel_url("scoring", scoring_job.pk), follow=True)

    scoring_job.refresh_from_db()
    assert scoring_job.status == JobStatus.SUCCEEDED and not scoring_job.cancel_requested
    assert "already finished (succeeded)" in response.content.decode()


@pytest.mark.django_db
def test_cancel_needs_post_and_csrf(owner, generation_job):
    assert client_for(owner).get(cancel_url("generation", generation_job.pk)).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert strict.post(cancel_url("generation", generation_job.pk)).status_code == 403
    generation_job.refresh_from_db()
    assert generation_job.status == JobStatus.QUEUED


# --- progress.json ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_progress_json_matches_the_row(owner, generation_job):
    started = timezone.now()
    GenerationJob.objects.filter(pk=generation_job.pk).update(
        status=JobStatus.RUNNING,
        attempts=1,
        progress_done=1,
        metrics={"tokens": 12, "tokens_per_s": 3.5},
        started_at=started,
    )

    response = client_for(owner).get(progress_url("generation", generation_job.pk))

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    row = GenerationJob.objects.get(pk=generation_job.pk)
    assert response.json() == {
        "id": row.pk,
        "kind": "generation",
        "status": "running",
        "progress_done": row.progress_done,
        "progress_total": row.progress_total,
        "metrics": row.metrics,
        "error": "",
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "cancel_requested": False,
        "is_terminal": False,
        "started_at": row.started_at.isoformat(),
        "finished_at": None,
    }


# --- websocket -------------------------------------------------------------------------------------------
def _communicator(kind: str, job_id: int, user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/{kind}/{job_id}/")
    communicator.scope["user"] = user
    return communicator


@pytest.mark.django_db(transaction=True)
def test_layer_is_redis():
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"


@pytest.mark.django_db(transaction=True)
def test_socket_sends_the_snapshot_then_relays_broadcasts(owner, generation_job):
    def advance() -> None:
        GenerationJob.objects.filter(pk=generation_job.pk).update(
            status=JobStatus.RUNNING, attempts=1, progress_done=1, metrics={"tokens": 7, "tokens_per_s": 2.0}
        )
        events.job_progress_broadcast(GenerationJob.objects.get(pk=generation_job.pk))

    async def scenario() -> tuple[dict, dict]:
        communicator = _communicator("generation", generation_job.pk, owner)
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=5)
        await sync_to_async(advance)()
        update = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return first, update

    first, update = async_to_sync(scenario)()

    assert first["type"] == "job.progress"
    assert first["job"]["id"] == generation_job.pk and first["job"]["kind"] == "generation"
    assert first["job"]["status"] == "queued" and first["job"]["progress_done"] == 0
    assert first["job"]["progress_total"] == 2
    assert update["type"] == "job.progress"
    assert update["job"]["status"] == "running" and update["job"]["progress_done"] == 1
    assert update["job"]["metrics"] == {"tokens": 7, "tokens_per_s": 2.0}


@pytest.mark.django_db(transaction=True)
def test_socket_of_a_scoring_job_for_staff(staff, scoring_job):
    async def scenario() -> dict:
        communicator = _communicator("scoring", scoring_job.pk, staff)
        connected, _ = await communicator.connect()
        assert connected
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert message["job"]["kind"] == "scoring" and message["job"]["progress_total"] == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_socket_refuses_anonymous_and_outsiders(make_user, generation_job, who):
    user = AnonymousUser() if who == "anonymous" else make_user("mallory")

    async def scenario() -> tuple[bool, int]:
        communicator = _communicator("generation", generation_job.pk, user)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert not connected
    assert code == (4401 if who == "anonymous" else 4404)


# --- judge jobs: a kind of their own (prefarena/jobs/kinds.py) ---------------------------------------------
@pytest.fixture
def judge_job(make_campaign: Any, owner: Any, scoring_job: ScoringJob) -> JudgeJob:
    """A judge job whose id is the scoring job's: their pages and sockets must never be confused."""
    campaign = make_campaign(items=1)
    CampaignMembership.objects.create(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    judge = model_register(name="page-judge", role="judge", backend="transformers", check=False, path="/nonexistent")
    job = JudgeJob.objects.create(pk=scoring_job.pk, campaign=campaign, model=judge, created_by=owner)
    job.items.set(campaign.items.all())
    return job


@pytest.mark.django_db
def test_judge_jobs_have_a_page_and_a_row_on_the_job_list(owner, judge_job, make_user):
    page = client_for(owner).get(detail_url("judge", judge_job.pk))
    assert page.status_code == 200
    text = page.content.decode()
    assert f"Judge job #{judge_job.pk}" in text and "page-judge@v1" in text
    assert f'data-ws-path="/ws/jobs/judge/{judge_job.pk}/"' in text and "items judged" in text
    listing = client_for(owner).get(reverse("job-list")).content.decode()
    assert 'data-job-kind="judge"' in listing and detail_url("judge", judge_job.pk) in listing
    # Someone who does not manage the campaign sees neither.
    outsider = client_for(make_user("outsider"))
    assert outsider.get(detail_url("judge", judge_job.pk)).status_code == 404
    assert detail_url("judge", judge_job.pk) not in outsider.get(reverse("job-list")).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["training", "snapshot", "bogus"])
def test_kinds_without_a_generic_page_are_404(owner, kind):
    assert client_for(owner).get(f"/jobs/{kind}/1/progress.json").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_judge_jobs_progress_goes_to_its_own_socket_not_the_scoring_job_with_its_id(owner, judge_job, scoring_job):
    def advance() -> None:
        JudgeJob.objects.filter(pk=judge_job.pk).update(status=JobStatus.RUNNING, progress_done=1, progress_total=1)
        events.job_progress_broadcast(JudgeJob.objects.get(pk=judge_job.pk))

    async def scenario() -> tuple[dict, dict, bool]:
        judge_socket = _communicator("judge", judge_job.pk, owner)
        scoring_socket = _communicator("scoring", scoring_job.pk, owner)
        assert (await judge_socket.connect())[0] and (await scoring_socket.connect())[0]
        first = await judge_socket.receive_json_from(timeout=5)
        await scoring_socket.receive_json_from(timeout=5)  # its own snapshot
        await sync_to_async(advance)()
        update = await judge_socket.receive_json_from(timeout=5)
        scoring_silent = await scoring_socket.receive_nothing(timeout=1)
        await judge_socket.disconnect()
        await scoring_socket.disconnect()
        return first, update, scoring_silent

    first, update, scoring_silent = async_to_sync(scenario)()
    assert first["job"]["kind"] == "judge" and first["job"]["status"] == "queued"
    assert update["job"]["kind"] == "judge" and update["job"]["status"] == "running"
    assert update["job"]["progress_done"] == 1
    assert scoring_silent


def test_every_job_model_has_exactly_one_kind():
    from django.apps import apps

    from prefarena.jobs.kinds import kind_of, kinds
    from prefarena.jobs.model import Job

    concrete = [m for m in apps.get_models() if issubclass(m, Job)]
    assert sorted(m.__name__ for m in concrete) == sorted(k.model.__name__ for k in kinds())
    assert {kind_of(m()).name for m in concrete} == {"generation", "scoring", "judge", "training", "snapshot"}


@pytest.mark.django_db
def test_the_job_list_holds_every_kind_in_one_list_with_filters(
    staff, models, generation_job, scoring_job, judge_job, django_assert_max_num_queries
):
    from annotations.models import DatasetSnapshot
    from workers.models import TrainingRun

    snapshot = DatasetSnapshot.objects.create(name="weekly", formats=["pairwise"], created_by=staff)
    run = TrainingRun.objects.create(
        base_model=models["policy"], snapshot=snapshot, method="dpo", created_by=staff, status=JobStatus.SUCCEEDED
    )
    client = client_for(staff)
    # every kind, newest first, each row linking to its page (a training run to its own page)
    with django_assert_max_num_queries(20):  # a bounded number of queries, not one per row
        page = client.get(reverse("job-list"))
    html = page.content.decode()
    kinds = [
        kind for kind in ("generation", "scoring", "judge", "training", "snapshot") if f'data-job-kind="{kind}"' in html
    ]
    assert kinds == ["generation", "scoring", "judge", "training", "snapshot"]
    assert html.index('data-job-kind="snapshot"') < html.index('data-job-kind="generation"')  # newest first
    assert f'href="/jobs/training/{run.pk}/"' in html and "dpo from page-policy@v1" in html
    assert f'href="/api/v1/datasets/{snapshot.pk}/"' in html and "weekly (pairwise)" in html
    # filtered by kind and by status
    only_training = client.get(reverse("job-list"), {"kind": "training"}).content.decode()
    assert 'data-job-kind="training"' in only_training and 'data-job-kind="generation"' not in only_training
    succeeded = client.get(reverse("job-list"), {"status": "succeeded"}).content.decode()
    assert 'data-job-kind="training"' in succeeded and 'data-job-kind="snapshot"' not in succeeded
    # a bad filter is a 400 that says what is allowed
    bad = client.get(reverse("job-list"), {"kind": "bogus", "status": "done"})
    assert bad.status_code == 400
    assert "kind must be one of" in bad.content.decode() and "status must be one of" in bad.content.decode()
