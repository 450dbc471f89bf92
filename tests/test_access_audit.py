"""Access audit of the whole REST API: what a logged-in user with no membership and no permission gets.

Objects of every kind are made by someone else (a campaign manager); for each route and method under
/api/v1/ a case says what the outsider must get: lists leave the objects out, details answer 404 with the
same message as an id that does not exist (or the documented 403), and staff see everything. The last
test walks the URL resolver: a route and method under /api/v1/ that no case exercises and that is not in
the commented allow-list fails the suite, so a new endpoint cannot skip this audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from annotations import services, snapshots, webhooks
from annotations.models import Item, MemberRole, WebhookDelivery
from models_hub.models import Model
from workers.models import GenerationJob, JudgeCall, JudgeJob, RetrainPolicy, ScoringJob, TrainingRun

pytestmark = pytest.mark.django_db

MISSING_ID = 987654321
LISTED, LEFT_OUT = "listed", "left out"
ID = "{id}"  # in a body: replaced by the target's id


@dataclass(frozen=True)
class Case:
    """One request: `url` holds `{id}` for the id of `target` (an entry of the `world` fixture)."""

    method: str
    url: str
    target: str
    outsider: int | str  # status code, or LISTED / LEFT_OUT for lists
    staff: int | str | None = None  # checked for reads only: writes would change the world
    body: dict[str, Any] | None = None
    listed: str | None = None  # for a list filtered by the target's id: the world entry its rows hold

    @property
    def route(self) -> tuple[str, str]:
        return resolve(self.url.format(id=1).split("?")[0]).url_name, self.method


CASES = [
    # campaigns and their sub-resources (annotations/api_campaigns.py, api_items.py, routing_api.py)
    Case("GET", "/api/v1/campaigns/", "campaign", LEFT_OUT, LISTED),
    Case("POST", "/api/v1/campaigns/", "campaign", 403, body={"name": "x", "kind": "pairwise"}),
    Case("GET", "/api/v1/campaigns/{id}/", "campaign", 404, 200),
    Case("PUT", "/api/v1/campaigns/{id}/", "campaign", 404, body={"description": "mine now"}),
    Case("PATCH", "/api/v1/campaigns/{id}/", "campaign", 404, body={"is_active": False}),
    Case("GET", "/api/v1/campaigns/{id}/items/", "campaign", 404, 200),
    Case("POST", "/api/v1/campaigns/{id}/items/", "campaign", 404, body={"items": [{"prompt": "p"}]}),
    Case("GET", "/api/v1/campaigns/{id}/members/", "campaign", 404, 200),
    Case("POST", "/api/v1/campaigns/{id}/members/", "campaign", 404, body={"username": "outsider"}),
    Case("DELETE", "/api/v1/campaigns/{id}/members/", "campaign", 404, body={"username": "annotator"}),
    Case("GET", "/api/v1/campaigns/{id}/guidelines/", "campaign", 404, 200),
    Case("POST", "/api/v1/campaigns/{id}/guidelines/", "campaign", 404, body={"text": "mine"}),
    Case("POST", "/api/v1/campaigns/{id}/next/", "campaign", 404),
    Case("GET", "/api/v1/campaigns/{id}/stats/", "campaign", 404, 200),
    Case("GET", "/api/v1/campaigns/{id}/routing/", "campaign", 404, 200),
    Case("PATCH", "/api/v1/campaigns/{id}/routing/", "campaign", 404, body={"human_budget": 0.5}),
    Case("GET", "/api/v1/campaigns/{id}/judge-report/", "campaign", 404, 200),
    # the review queue (annotations/api_review.py); the world's one judged item is in no queue: staff unchecked there
    Case("GET", "/api/v1/campaigns/{id}/review/", "campaign", 404, 200),
    Case("POST", "/api/v1/campaigns/{id}/review/next/", "campaign", 404),
    Case("GET", "/api/v1/review/{id}/", "item", 404),
    Case("POST", "/api/v1/review/{id}/adjudicate/", "item", 404, body={"choice": "tie", "note": "mine"}),
    Case("POST", "/api/v1/review/{id}/release/", "item", 404),
    # items and judgments
    Case("GET", "/api/v1/items/{id}/", "item", 404, 200),
    Case("GET", "/api/v1/items/{id}/judgments/", "item", 404, 200),
    Case("POST", "/api/v1/items/{id}/judgments/", "item", 404, body={"choice": "tie"}),
    Case("POST", "/api/v1/items/{id}/skip/", "item", 404, body={"reason": "mine"}),
    Case("GET", "/api/v1/judgments/", "judgment", LEFT_OUT, LISTED),
    # filters by id: still left out, and an id you may not see filters like a missing one (no 400)
    Case("GET", "/api/v1/judgments/?item__campaign={id}", "campaign", LEFT_OUT, LISTED, listed="judgment"),
    Case("GET", "/api/v1/judgments/?item={id}", "item", LEFT_OUT, LISTED, listed="judgment"),
    Case("GET", "/api/v1/judgments/{id}/", "judgment", 404, 200),
    # datasets, their files (annotations/api_datasets.py), the live export (annotations/api_export.py)
    Case("GET", "/api/v1/datasets/", "snapshot", LEFT_OUT, LISTED),
    Case(
        "POST",
        "/api/v1/datasets/",
        "campaign",
        404,
        body={"name": "x", "formats": ["pairwise"], "filters": {"campaigns": [ID]}},
    ),
    Case("GET", "/api/v1/datasets/{id}/", "snapshot", 404, 200),
    Case("PATCH", "/api/v1/datasets/{id}/", "snapshot", 404, body={"name": "renamed"}),
    Case("POST", "/api/v1/datasets/{id}/cancel/", "snapshot", 404),
    Case("GET", "/api/v1/datasets/{id}/files/README.md", "snapshot", 404, 200),
    Case("GET", "/api/v1/datasets/{id}/files/pairwise.jsonl", "snapshot", 404, 200),
    Case("GET", "/api/v1/export/pairwise.jsonl?campaign={id}", "campaign", 404, 200),
    Case("GET", "/api/v1/export/pairwise.jsonl", "campaign", 403),  # documented: "you manage none"
    Case("GET", "/api/v1/export/pairwise.parquet?campaign={id}", "campaign", 404, 200),
    Case("GET", "/api/v1/export/pairwise.parquet", "campaign", 403),  # as the JSONL stream
    # webhooks and deliveries
    Case("GET", "/api/v1/webhooks/", "webhook", LEFT_OUT, LISTED),
    Case(
        "POST",
        "/api/v1/webhooks/",
        "campaign",
        404,
        body={"url": "http://example.org/h", "events": ["item.completed"], "campaign": ID},
    ),
    Case("GET", "/api/v1/webhooks/{id}/", "webhook", 404, 200),
    Case(
        "PUT",
        "/api/v1/webhooks/{id}/",
        "webhook",
        404,
        body={"url": "http://evil.example/", "events": ["item.completed"]},
    ),
    Case("PATCH", "/api/v1/webhooks/{id}/", "webhook", 404, body={"url": "http://evil.example/"}),
    Case("DELETE", "/api/v1/webhooks/{id}/", "webhook", 404),
    Case("GET", "/api/v1/webhooks/{id}/deliveries/", "webhook", 404, 200),
    # the model registry: every user reads it, where weights and endpoints live is staff-only (own test below)
    Case("GET", "/api/v1/models/", "model", LISTED, LISTED),
    Case("POST", "/api/v1/models/", "model", 403, body={"name": "x", "role": "policy", "backend": "transformers"}),
    Case("GET", "/api/v1/models/{id}/", "model", 200, 200),
    Case("PATCH", "/api/v1/models/{id}/", "model", 403, body={"in_arena": True}),
    Case("POST", "/api/v1/models/{id}/promote/", "model", 403),
    Case("POST", "/api/v1/models/{id}/demote/", "model", 403),
    # training runs and retraining policies
    Case("GET", "/api/v1/training-runs/", "training_run", LEFT_OUT, LISTED),
    Case(
        "POST",
        "/api/v1/training-runs/",
        "snapshot",
        403,
        body={"method": "dpo", "snapshot": ID, "base_model": "policy"},
    ),
    Case("GET", "/api/v1/training-runs/{id}/", "training_run", 404, 200),
    Case("GET", "/api/v1/training-runs/?policy={id}", "retrain_policy", LEFT_OUT, LISTED, listed="training_run"),
    Case("POST", "/api/v1/training-runs/{id}/cancel/", "training_run", 404),
    Case("GET", "/api/v1/retrain-policies/", "retrain_policy", LEFT_OUT, LISTED),
    Case(
        "POST",
        "/api/v1/retrain-policies/",
        "campaign",
        403,
        body={
            "name": "x",
            "base_model": "policy",
            "method": "dpo",
            "trigger": "every_n",
            "every_n": 1,
            "snapshot_filters": {"campaigns": [ID]},
        },
    ),
    Case("GET", "/api/v1/retrain-policies/{id}/", "retrain_policy", 404, 200),
    Case("PATCH", "/api/v1/retrain-policies/{id}/", "retrain_policy", 404, body={"enabled": False}),
    Case(
        "PUT",
        "/api/v1/retrain-policies/{id}/",
        "retrain_policy",
        404,
        body={"name": "x", "base_model": "policy", "method": "dpo", "trigger": "every_n", "every_n": 1},
    ),
    Case("DELETE", "/api/v1/retrain-policies/{id}/", "retrain_policy", 404),
    Case("GET", "/api/v1/retrain-policies/{id}/rounds/", "retrain_policy", 404, 200),
    # generation, scoring and judge jobs, judge calls
    Case("GET", "/api/v1/generation-jobs/", "generation_job", LEFT_OUT, LISTED),
    Case("POST", "/api/v1/generation-jobs/", "generation_job", 403, body={"models": [1]}),
    Case("GET", "/api/v1/generation-jobs/{id}/", "generation_job", 404, 200),
    Case("POST", "/api/v1/generation-jobs/{id}/cancel/", "generation_job", 404),
    Case("GET", "/api/v1/scoring-jobs/", "scoring_job", LEFT_OUT, LISTED),
    Case("POST", "/api/v1/scoring-jobs/", "scoring_job", 403, body={"model": 1}),
    Case("GET", "/api/v1/scoring-jobs/{id}/", "scoring_job", 404, 200),
    Case("POST", "/api/v1/scoring-jobs/{id}/cancel/", "scoring_job", 404),
    Case("GET", "/api/v1/judge-jobs/", "judge_job", LEFT_OUT, LISTED),
    Case("POST", "/api/v1/judge-jobs/", "campaign", 403, body={"campaign": ID}),
    Case("GET", "/api/v1/judge-jobs/{id}/", "judge_job", 404, 200),
    Case("GET", "/api/v1/judge-jobs/{id}/calls/", "judge_job", 404, 200),
    Case("POST", "/api/v1/judge-jobs/{id}/cancel/", "judge_job", 404),
]

# Routes under /api/v1/ that this audit does not exercise, each with the reason it needs no access check.
ALLOWED_WITHOUT_CASE = {
    # The public arena: anonymous visitors create battles, read them and vote (identities stay hidden until
    # the vote; tests/arena cover it). The leaderboard is public.
    ("arena-battle-list", "POST"): "public arena",
    ("arena-battle-detail", "GET"): "public arena",
    ("arena-battle-vote", "POST"): "public arena",
    ("arena-leaderboard-list", "GET"): "public leaderboard",
    # Token exchange: username and password in, a token out (open by design).
    ("api-token", "POST"): "authentication",
    # DRF's index of the routes above: links only, no object.
    ("api-root", "GET"): "index of links",
}


# --- the world: everything made by a manager, seen by an outsider -------------------------------------------
@pytest.fixture
def world(make_user: Any, make_campaign: Any, tmp_path: Any) -> Iterator[dict[str, Any]]:
    owner, annotator = make_user("owner"), make_user("annotator")
    campaign = make_campaign(items=3, annotators=[annotator])
    services.membership_set(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    slot = services.item_lease_next(campaign=campaign, annotator=annotator)
    item = Item.objects.get(pk=slot.item_id)
    judgment, _ = services.judgment_submit(item=item, annotator=annotator, data={"choice": "tie"})
    policy_model = Model.objects.create(
        name="policy", role="policy", backend="transformers", path="/secret/checkpoints/policy"
    )
    judge_model = Model.objects.create(
        name="judge",
        role="judge",
        backend="openai",
        base_url="http://judge.internal:8001/v1",
        remote_model="judge-7b",
        api_key_env="JUDGE_KEY",
    )
    with override_settings(PREFARENA_SNAPSHOT_DIR=tmp_path / "snapshots"):
        snapshot = snapshots.snapshot_create(
            name="theirs", filters={"campaigns": [campaign.pk]}, formats=["pairwise"], options={}, created_by=owner
        )
        snapshots.snapshot_build(snapshot.pk)
        snapshot.refresh_from_db()
        assert snapshot.status == "succeeded", snapshot.error
        webhook = webhooks.webhook_create(
            url="http://hooks.example.org/theirs", events=["item.completed"], campaign_id=campaign.pk, created_by=owner
        )
        WebhookDelivery.objects.create(webhook=webhook, event="item.completed", payload={"item": item.pk})
        retrain_policy = RetrainPolicy.objects.create(
            name="theirs",
            base_model=policy_model,
            method="dpo",
            trigger="every_n",
            every_n=10,
            snapshot_filters={"campaigns": [campaign.pk]},
            created_by=owner,
        )
        training_run = TrainingRun.objects.create(
            method="dpo",
            base_model=policy_model,
            snapshot=snapshot,
            policy=retrain_policy,
            created_by=owner,
            logs="their log",
        )
        generation_job = GenerationJob.objects.create(created_by=owner, source_campaign=campaign)
        generation_job.policy_models.add(policy_model)
        scoring_job = ScoringJob.objects.create(created_by=owner, model=policy_model, source_campaign=campaign)
        judge_job = JudgeJob.objects.create(campaign=campaign, model=judge_model, created_by=owner)
        JudgeCall.objects.create(
            job=judge_job, item=item, call_index=0, kind="pairwise", prompt_hash="h", parsed="A", model_label="judge@v1"
        )
        yield {
            "campaign": campaign,
            "item": item,
            "judgment": judgment,
            "snapshot": snapshot,
            "webhook": webhook,
            "model": judge_model,
            "training_run": training_run,
            "retrain_policy": retrain_policy,
            "generation_job": generation_job,
            "scoring_job": scoring_job,
            "judge_job": judge_job,
        }


def _with_id(value: Any, object_id: int) -> Any:
    if value == ID:
        return object_id
    if isinstance(value, dict):
        return {key: _with_id(item, object_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_id(item, object_id) for item in value]
    return value


def send(client: Any, case: Case, object_id: int) -> Any:
    body = _with_id(case.body, object_id)
    return getattr(client, case.method.lower())(case.url.format(id=object_id), body, format="json")


def listed_ids(response: Any) -> set[int]:
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    return {row["id"] for row in rows}


def outsider_mismatch(client: Any, world: dict[str, Any], case: Case) -> str | None:
    """What is wrong with the outsider's answer to `case`, or None."""
    response = send(client, case, world[case.target].pk)
    if case.outsider in (LISTED, LEFT_OUT):
        shown = world[case.listed or case.target]
        if response.status_code != 200:
            return f"{response.status_code} {response.content[:200]!r}"
        if (shown.pk in listed_ids(response)) != (case.outsider == LISTED):
            return f"{case.listed or case.target} {shown.pk} should be {case.outsider}"
    elif response.status_code != case.outsider:
        return f"{response.status_code} (expected {case.outsider}) {response.content[:200]!r}"
    hidden = case.outsider in (404, LEFT_OUT) or ID in repr(case.body)  # (models are public: 200 and 403)
    if hidden and ("{id}" in case.url or ID in repr(case.body)):
        # the same answer as for an id that does not exist (a 404, a filter's empty page): ids leak nothing
        missing = send(client, case, MISSING_ID)
        if (missing.status_code, missing.json()) != (response.status_code, response.json()):
            return f"{response.json()} differs from a missing id's {missing.status_code} {missing.json()}"
    return None


def test_an_outsider_gets_nothing_of_anyone_else(api: Any, make_user: Any, world: dict[str, Any]) -> None:
    # One world for every case (building it writes a snapshot): the outsider's writes are all refused.
    client = api(make_user("outsider"))  # logged in, no membership, no permission
    mismatches = {f"{case.method} {case.url}": outsider_mismatch(client, world, case) for case in CASES}
    assert {key: problem for key, problem in mismatches.items() if problem} == {}


def test_staff_see_everything(api: Any, staff: Any, world: dict[str, Any]) -> None:
    client = api(staff)
    mismatches = {}
    for case in CASES:
        if case.staff is None:
            continue
        response = send(client, case, world[case.target].pk)
        shown = world[case.listed or case.target]
        if response.status_code != (200 if case.staff in (LISTED, LEFT_OUT) else case.staff):
            mismatches[f"{case.method} {case.url}"] = f"{response.status_code} {response.content[:200]!r}"
        elif case.staff == LISTED and shown.pk not in listed_ids(response):
            mismatches[f"{case.method} {case.url}"] = f"{case.listed or case.target} {shown.pk} not listed"
    assert mismatches == {}


def test_model_locations_are_for_staff_only(api: Any, make_user: Any, staff: Any, world: dict[str, Any]) -> None:
    model = world["model"]
    locations = ("path", "base_url", "api_key_env")
    for response in (
        api(make_user("outsider")).get(f"/api/v1/models/{model.pk}/").json(),
        next(row for row in api(make_user("other")).get("/api/v1/models/").json()["results"] if row["id"] == model.pk),
    ):
        assert {key: response[key] for key in locations} == dict.fromkeys(locations)
    shown = api(staff).get(f"/api/v1/models/{model.pk}/").json()
    assert (shown["base_url"], shown["api_key_env"]) == ("http://judge.internal:8001/v1", "JUDGE_KEY")
    # nor does a training run tell where its weights go
    run = world["training_run"]
    run.output_dir = "/secret/training/run-1"
    run.save(update_fields=["output_dir"])
    owner = run.created_by
    assert api(owner).get(f"/api/v1/training-runs/{run.pk}/").json()["output_dir"] is None


# --- no route escapes the audit ---------------------------------------------------------------------------
def api_routes() -> set[tuple[str, str]]:
    """(url name, HTTP method) of every route under /api/v1/, from the URL resolver itself."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern

    routes = set()
    for route, pattern in walk(get_resolver().url_patterns, ""):
        if not route.startswith("api/v1/"):
            continue
        assert pattern.name, f"unnamed API route {route!r}: name it so the audit can follow it"
        actions = getattr(pattern.callback, "actions", None)  # a ViewSet route: {method: action}
        if actions is not None:
            methods = set(actions)
        else:
            view_class = pattern.callback.view_class
            methods = {m for m in view_class.http_method_names if hasattr(view_class, m)}
        # HEAD answers as GET does (DRF adds it to a ViewSet's actions on its first request); OPTIONS
        # describes the route and reads no object.
        routes |= {(pattern.name, method.upper()) for method in methods - {"head", "options"}}
    return routes


def test_every_api_route_is_audited_or_explicitly_public() -> None:
    routes = api_routes()
    covered = {case.route for case in CASES}
    unaudited = routes - covered - set(ALLOWED_WITHOUT_CASE)
    assert not unaudited, f"API routes with no access case in {__name__}: {sorted(unaudited)}"
    # the allow-list and the cases name only routes that exist
    assert set(ALLOWED_WITHOUT_CASE) <= routes
    assert covered <= routes
