"""Generation and scoring jobs through the REST API (and the admin's cancel action): creation with its
validation and access checks, reading, cancelling. No worker runs here: these tests use the ordinary
test transaction, so the on-commit enqueue is captured, never sent."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site as admin_site
from django.contrib.auth.models import Permission
from django.test import RequestFactory

from annotations.models import CampaignMembership, MemberRole, Prompt, Response
from annotations.services import membership_set
from models_hub.models import Model
from models_hub.services import model_register
from workers.models import GenerationJob, JobStatus, ScoringJob

pytestmark = pytest.mark.django_db

GENERATION = "/api/v1/generation-jobs/"
SCORING = "/api/v1/scoring-jobs/"


def stored_model(name: str, role: str = "policy") -> Model:
    # No checkpoint files: nothing loads a model in these tests, the API only needs the rows.
    return model_register(name=name, role=role, backend="transformers", path=f"/checkpoints/{name}", check=False)


@pytest.fixture
def models() -> dict[str, Model]:
    return {
        "small": stored_model("small"),
        "large": stored_model("large"),
        "reward": stored_model("judge-rm", role="reward"),
    }


@pytest.fixture
def researcher(make_user):
    """A non-staff user allowed to create both kinds of job."""
    user = make_user("researcher")
    user.user_permissions.add(
        Permission.objects.get(codename="add_generationjob"), Permission.objects.get(codename="add_scoringjob")
    )
    return user


def generation_payload(**extra: object) -> dict[str, object]:
    return {"models": ["small", "large@v1"], "prompts": ["What do bees make?", "Hi"], **extra}


# --- creating ------------------------------------------------------------------------------------------
def test_staff_creates_a_generation_job(api, staff, models, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api(staff).post(GENERATION, generation_payload(max_new_tokens=32, seed=7), format="json")
    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["attempts"] == 0
    assert body["progress_done"] == 0 and body["progress_total"] == 4  # 2 prompts x 2 models x 1 candidate
    assert {m["label"] for m in body["models"]} == {"small@v1", "large@v1"}
    assert body["created_by"] == "staff" and body["max_new_tokens"] == 32 and body["seed"] == 7
    assert body["duplicate_retries"] == 3  # the default
    job = GenerationJob.objects.get(pk=body["id"])
    assert set(job.policy_models.all()) == {models["small"], models["large"]}
    assert sorted(job.prompts.values_list("content", flat=True)) == ["Hi", "What do bees make?"]
    assert len(callbacks) == 1  # the task is enqueued once the transaction commits


def test_duplicate_retries_are_set_per_job(api, staff, models):
    response = api(staff).post(GENERATION, generation_payload(duplicate_retries=0), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["duplicate_retries"] == 0
    assert GenerationJob.objects.get().duplicate_retries == 0


def test_models_are_given_by_id_or_label_and_a_bare_name_means_the_newest(api, staff, models):
    newer = stored_model("small")  # small@v2
    response = api(staff).post(GENERATION, {"models": [models["large"].pk, "small"], "prompts": ["p"]}, format="json")
    assert response.status_code == 201, response.content
    assert set(GenerationJob.objects.get().policy_models.all()) == {models["large"], newer}


def test_best_of_n_with_a_reward_model(api, staff, models):
    payload = generation_payload(models=["small"], candidates=4, keep_top=2, reward_model="judge-rm@v1")
    response = api(staff).post(GENERATION, payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["reward_model"]["label"] == "judge-rm@v1"
    assert response.json()["progress_total"] == 8


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (generation_payload(models=["judge-rm"]), "models"),  # not a policy model
        (generation_payload(models=["nobody"]), "models"),  # unknown label
        (generation_payload(models=["small@v9"]), "models"),  # unknown version
        (generation_payload(models=[123456789]), "models"),  # unknown id
        (generation_payload(models=[]), "models"),
        (generation_payload(prompts=[]), "prompts"),
        (generation_payload(prompts=[{"text": "not a prompt"}]), "prompts"),
        ({"models": ["small"]}, "prompts"),  # neither prompts nor a campaign
        (generation_payload(source_campaign=1), "prompts"),  # both
        (generation_payload(candidates=2, keep_top=3), "keep_top"),
        (generation_payload(candidates=3, keep_top=1), "reward_model"),  # best-of-N needs a ranker
        (generation_payload(candidates=3, keep_top=1, reward_model="small"), "reward_model"),
        (generation_payload(temperature=-0.5), "temperature"),
        (generation_payload(top_p=0), "top_p"),
        (generation_payload(batch_size=0), "batch_size"),
        (generation_payload(duplicate_retries=-1), "duplicate_retries"),
        (generation_payload(duplicate_retries=11), "duplicate_retries"),  # each costs a generation of the row
    ],
)
def test_invalid_generation_job_is_400_naming_the_field(api, staff, models, payload, field):
    response = api(staff).post(GENERATION, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert GenerationJob.objects.count() == 0
    assert Prompt.objects.count() == 0  # nothing half-stored


def test_creating_needs_staff_or_the_add_permission(api, make_user, models, researcher):
    outsider = make_user("outsider")
    refused = api(outsider).post(GENERATION, generation_payload(), format="json")
    assert refused.status_code == 403
    assert "permission" in refused.json()["detail"]
    assert api(outsider).post(SCORING, {"model": "judge-rm", "responses": [1]}, format="json").status_code == 403
    assert api(researcher).post(GENERATION, generation_payload(), format="json").status_code == 201
    assert GenerationJob.objects.get().created_by == researcher


def test_campaigns_must_be_managed_by_the_creator(api, make_user, make_campaign, models, researcher):
    # given: one campaign researcher manages, one they annotate, one they do not belong to
    managed = make_campaign(name="managed", items=3)
    membership_set(campaign=managed, user=researcher, role=MemberRole.MANAGER)
    annotated = make_campaign(name="annotated", items=1, annotators=[researcher])
    foreign = make_campaign(name="foreign", items=1)
    client = api(researcher)
    # then
    only_annotates = client.post(GENERATION, {"models": ["small"], "source_campaign": annotated.pk}, format="json")
    assert only_annotates.status_code == 403
    assert "source_campaign" in only_annotates.json()
    cannot_see = client.post(GENERATION, {"models": ["small"], "source_campaign": foreign.pk}, format="json")
    assert cannot_see.status_code == 404
    target_foreign = client.post(
        GENERATION, generation_payload(target_campaign=foreign.pk), format="json"
    )  # writing items into someone else's campaign
    assert target_foreign.status_code == 404 and "target_campaign" in target_foreign.json()
    assert GenerationJob.objects.count() == 0
    allowed = client.post(GENERATION, {"models": ["small", "large"], "source_campaign": managed.pk}, format="json")
    assert allowed.status_code == 201, allowed.content
    assert allowed.json()["source_campaign"] == managed.pk
    assert allowed.json()["progress_total"] == 3 * 2


def test_generated_items_need_two_responses_per_prompt(api, staff, make_campaign, models):
    campaign = make_campaign(name="target")
    response = api(staff).post(
        GENERATION, generation_payload(models=["small"], target_campaign=campaign.pk), format="json"
    )
    assert response.status_code == 400
    assert "target_campaign" in response.json()


# --- scoring -------------------------------------------------------------------------------------------
def test_scoring_a_campaign(api, staff, make_campaign, models):
    campaign = make_campaign(name="scored", items=2)  # 2 responses per item
    response = api(staff).post(SCORING, {"model": "judge-rm", "source_campaign": campaign.pk}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model"]["label"] == "judge-rm@v1" and body["progress_total"] == 4
    assert ScoringJob.objects.get(pk=body["id"]).responses.count() == 4


def test_scoring_needs_a_reward_model_and_visible_responses(api, make_campaign, models, researcher):
    mine = make_campaign(name="mine", items=1)
    membership_set(campaign=mine, user=researcher, role=MemberRole.MANAGER)
    other = make_campaign(name="other", items=1)
    visible = list(Response.objects.filter(prompt__items__campaign=mine).values_list("pk", flat=True))
    hidden = list(Response.objects.filter(prompt__items__campaign=other).values_list("pk", flat=True))
    client = api(researcher)
    not_reward = client.post(SCORING, {"model": "small", "responses": visible}, format="json")
    assert not_reward.status_code == 400 and "model" in not_reward.json()
    foreign = client.post(SCORING, {"model": "judge-rm", "responses": visible + hidden}, format="json")
    assert foreign.status_code == 400
    assert str(hidden[0]) in foreign.json()["responses"][0]
    assert ScoringJob.objects.count() == 0
    ok = client.post(SCORING, {"model": "judge-rm", "responses": visible}, format="json")
    assert ok.status_code == 201, ok.content
    assert ok.json()["progress_total"] == len(visible)


def test_scoring_a_campaign_one_only_annotates_is_403(api, make_campaign, models, researcher):
    annotated = make_campaign(name="annotated", items=1, annotators=[researcher])
    response = api(researcher).post(SCORING, {"model": "judge-rm", "source_campaign": annotated.pk}, format="json")
    assert response.status_code == 403
    assert CampaignMembership.objects.get(user=researcher).role == MemberRole.ANNOTATOR


# --- reading and cancelling ----------------------------------------------------------------------------
def test_users_see_only_their_own_jobs(api, staff, make_user, models, researcher):
    mine = api(researcher).post(GENERATION, generation_payload(), format="json").json()["id"]
    theirs = api(staff).post(GENERATION, generation_payload(), format="json").json()["id"]
    client = api(researcher)
    assert [job["id"] for job in client.get(GENERATION).json()["results"]] == [mine]
    assert client.get(f"{GENERATION}{mine}/").status_code == 200
    assert client.get(f"{GENERATION}{theirs}/").status_code == 404
    assert client.post(f"{GENERATION}{theirs}/cancel/").status_code == 404
    assert GenerationJob.objects.get(pk=theirs).status == JobStatus.QUEUED
    assert {job["id"] for job in api(staff).get(GENERATION).json()["results"]} == {mine, theirs}
    assert api(make_user("nobody")).get(GENERATION).json()["count"] == 0


def test_job_shows_progress_and_runtime_fields(api, staff, models):
    job_id = api(staff).post(GENERATION, generation_payload(), format="json").json()["id"]
    GenerationJob.objects.filter(pk=job_id).update(
        status=JobStatus.FAILED, attempts=2, progress_done=3, error="boom", metrics={"tokens": 10}
    )
    body = api(staff).get(f"{GENERATION}{job_id}/").json()
    assert (body["status"], body["attempts"], body["progress_done"], body["error"]) == ("failed", 2, 3, "boom")
    assert body["metrics"] == {"tokens": 10}
    assert {"created_at", "started_at", "finished_at", "enqueued_at"} <= set(body)
    assert [job["id"] for job in api(staff).get(GENERATION, {"status": "failed"}).json()["results"]] == [job_id]
    assert api(staff).get(GENERATION, {"status": "queued"}).json()["count"] == 0


def test_cancel_queued_job_at_once_then_conflict(api, staff, models):
    job_id = api(staff).post(GENERATION, generation_payload(), format="json").json()["id"]
    cancelled = api(staff).post(f"{GENERATION}{job_id}/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    again = api(staff).post(f"{GENERATION}{job_id}/cancel/")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


def test_cancel_running_job_requests_it(api, staff, models):
    job_id = api(staff).post(GENERATION, generation_payload(), format="json").json()["id"]
    GenerationJob.objects.filter(pk=job_id).update(status=JobStatus.RUNNING, attempts=1, worker="w1")
    response = api(staff).post(f"{GENERATION}{job_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED])
def test_cancel_finished_job_is_409(api, staff, models, status):
    job_id = api(staff).post(GENERATION, generation_payload(), format="json").json()["id"]
    GenerationJob.objects.filter(pk=job_id).update(status=status)
    response = api(staff).post(f"{GENERATION}{job_id}/cancel/")
    assert response.status_code == 409
    assert status.value in response.json()["detail"]
    job = GenerationJob.objects.get(pk=job_id)
    assert job.status == status and not job.cancel_requested


def test_cancel_scoring_job(api, staff, make_campaign, models):
    campaign = make_campaign(name="scored", items=1)
    job_id = api(staff).post(SCORING, {"model": "judge-rm", "source_campaign": campaign.pk}, format="json").json()["id"]
    assert api(staff).post(f"{SCORING}{job_id}/cancel/").json()["status"] == "cancelled"
    assert api(staff).post(f"{SCORING}{job_id}/cancel/").status_code == 409


def test_admin_cancel_action_cancels_queued_and_skips_finished(staff, models, monkeypatch):
    from workers import services

    queued = services.generation_job_create(models=[models["small"]], prompts=["a"], created_by=staff)
    running = services.generation_job_create(models=[models["small"]], prompts=["b"], created_by=staff)
    done = services.generation_job_create(models=[models["small"]], prompts=["c"], created_by=staff)
    GenerationJob.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING, worker="w1")
    GenerationJob.objects.filter(pk=done.pk).update(status=JobStatus.SUCCEEDED)
    request = RequestFactory().post("/admin/workers/generationjob/")
    request.user = staff
    sent: list[str] = []
    model_admin = admin_site._registry[GenerationJob]
    monkeypatch.setattr(model_admin, "message_user", lambda request, message, *args, **kwargs: sent.append(message))
    # when
    model_admin.cancel_jobs(request, GenerationJob.objects.all())
    # then
    statuses = dict(GenerationJob.objects.values_list("pk", "status"))
    assert statuses == {queued.pk: "cancelled", running.pk: "running", done.pk: "succeeded"}
    assert GenerationJob.objects.get(pk=running.pk).cancel_requested
    assert sent == [
        "1 job(s) cancelled, 1 running job(s) asked to stop (within one batch), "
        "1 already finished and left as they were."
    ]


def test_admin_job_pages_render_read_only(client, staff, models, make_campaign):
    from workers import services

    job = services.generation_job_create(models=[models["small"]], prompts=["a"], created_by=staff)
    scoring = services.scoring_job_create(
        model=models["reward"], created_by=staff, source_campaign=make_campaign(name="c", items=1)
    )
    client.force_login(staff)
    assert client.get("/admin/workers/generationjob/").status_code == 200
    page = client.get(f"/admin/workers/generationjob/{job.pk}/change/")
    assert page.status_code == 200
    assert not page.context["adminform"].form.fields  # every field is shown read-only
    assert client.get("/admin/workers/generationjob/add/").status_code == 403
    assert client.get(f"/admin/workers/scoringjob/{scoring.pk}/change/").status_code == 200
    assert client.get("/admin/workers/generationoutput/").status_code == 200
