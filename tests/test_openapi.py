"""The OpenAPI schema: generated without warnings, served with local docs, and honoured by the API.

Schemathesis reads /api/schema/ and sends generated requests in-process to the WSGI application, first
with a staff user's token (no 5xx, responses match the schema), then without credentials (every
operation refuses, unless the schema itself declares it open to anonymous callers). The in-process
requests run inside the test's transaction, like django.test.Client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
import yaml
from django.contrib.staticfiles import finders
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, override_settings
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from annotations import services
from annotations.models import Item

# Served without credentials on purpose: the schema, its docs and the token exchange.
PUBLIC_PATHS = {"/api/schema/", "/api/docs/", "/api/redoc/", "/api/v1/auth/token/"}
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=15,
    deadline=None,
    database=None,
    # The data fixture is function-scoped on purpose: every example shares one campaign set.
    suppress_health_check=list(HealthCheck),
)


# --- (a) generation --------------------------------------------------------------------------------
def test_schema_generates_without_warnings(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"
    # --fail-on-warn turns every drf-spectacular warning (an unresolvable type, a missing
    # serializer, a colliding operation id) into a failure; --validate checks the OpenAPI 3 document.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    document = yaml.safe_load(target.read_text())
    assert document["openapi"].startswith("3.")
    assert "/api/v1/campaigns/{id}/next/" in document["paths"]
    assert "tokenAuth" in document["components"]["securitySchemes"]


# --- (b) served schema and docs ------------------------------------------------------------------
def test_schema_is_served(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert "/api/v1/items/{id}/judgments/" in yaml.safe_load(response.content)["paths"]


@pytest.mark.parametrize(
    "page",
    ["/api/docs/", "/api/redoc/"],
)
def test_docs_page_loads_local_assets_only(client: Client, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    # Every script, stylesheet and icon the page loads is ours: no CDN, nothing off-site.
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any("swagger-ui" in url or "redoc" in url for url in assets), assets
    assert [url for url in assets if re.match(r"^(https?:)?//", url)] == []
    assert re.search(r"https?://", html.replace("http://www.w3.org", "")) is None
    for url in assets:
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), f"{page} references a missing file {url}"


# --- (c) schemathesis ------------------------------------------------------------------------------
WSGI_APP = WSGIHandler()


def _load_schema() -> Any:
    # The Werkzeug client schemathesis uses sends Host: localhost. The schema is read at import (the
    # pytest plugin parametrizes at collection); reading it touches no database.
    with override_settings(ALLOWED_HOSTS=["localhost"]):
        loaded = schemathesis.openapi.from_wsgi("/api/schema/", WSGI_APP)
    # The coverage phase enumerates every boundary value of every body field: hundreds of requests per
    # operation, minutes in all. Random examples (FUZZ_SETTINGS) keep the run within its time budget.
    loaded.config.phases.coverage.enabled = False
    return loaded.exclude(path=sorted(PUBLIC_PATHS))


schema = _load_schema()
# The arena is public on purpose (anonymous battles and votes, CSRF-protected): tests/arena covers
# its refusals, so it is left out of the "everything needs credentials" pass.
schema_without_credentials = _load_schema().exclude(path_regex=r"^/api/v1/arena/")


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    """Let WSGI requests run inside the test's transaction, as django.test.Client does."""
    # Django closes "obsolete" connections around each request; inside the test's transaction it
    # would take the connection for broken and fail every later query.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        with override_settings(ALLOWED_HOSTS=["localhost"]):
            yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def api_data(db: None, in_process_requests: None, staff: Any, make_user: Any, make_campaign: Any) -> SimpleNamespace:
    """A campaign of each kind with items, a judgment and a live lease each, and a staff user's token."""
    alice = make_user("alice")
    ids: dict[str, list[int]] = {"campaigns": [], "items": [], "judgments": []}
    answers = {
        "pairwise": {"choice": "tie"},
        "ranking": {"ranking": [[0], [1]]},
        "rating": {"ratings": {"helpfulness": [4, 2], "honesty": [5, 5]}},
    }
    for kind, answer in answers.items():
        campaign = make_campaign(kind=kind, items=3, annotators=[alice], overlap=2)
        ids["campaigns"].append(campaign.pk)
        ids["items"].extend(Item.objects.filter(campaign=campaign).values_list("pk", flat=True))
        slot = services.item_lease_next(campaign=campaign, annotator=alice)
        judgment, _ = services.judgment_submit(item=Item(pk=slot.item_id), annotator=alice, data=answer)
        ids["judgments"].append(judgment.pk)
        services.item_lease_next(campaign=campaign, annotator=alice)  # a live lease too
    token = Token.objects.create(user=staff)
    return SimpleNamespace(token=token.key, ids=ids)


def _aim_at_known_ids(case: Any, ids: dict[str, list[int]]) -> None:
    """Point most generated integer ids at real rows of the path's resource, so requests get past 404."""
    resource = case.operation.path.split("/")[3]  # /api/v1/<resource>/{id}/...
    known = ids.get(resource)
    for name, value in (case.path_parameters or {}).items():
        number = str(value)
        if known and number.isdigit() and int(number) % 4 != 3:  # every 4th stays an unknown id
            case.path_parameters[name] = known[int(number) % len(known)]


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_with_credentials_never_answers_5xx_and_matches_its_schema(case: Any, api_data: SimpleNamespace) -> None:
    _aim_at_known_ids(case, api_data.ids)
    case.call_and_validate(
        headers={"Authorization": f"Token {api_data.token}"},
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
    )


@schema_without_credentials.parametrize()
@hypothesis_settings(FUZZ_SETTINGS, max_examples=3)
def test_api_without_credentials_refuses_every_endpoint(case: Any, api_data: SimpleNamespace) -> None:
    security = case.operation.definition.raw.get("security", schema_without_credentials.raw_schema.get("security"))
    if security is not None and (security == [] or {} in security):
        # The schema itself declares this operation open to anonymous callers (e.g. arena voting):
        # that is a reviewed decision, visible in the docs, not an endpoint that forgot its check.
        return
    _aim_at_known_ids(case, api_data.ids)
    response = case.call()
    if response.status_code == 400 and "URL contains a NUL character" in response.text:
        return  # refused for the URL itself, before authentication and any lookup (prefarena/middleware.py)
    path = urlsplit(response.request.url).path
    try:
        match = resolve(path)
    except Resolver404:
        match = None
    query_format = parse_qs(urlsplit(response.request.url).query).get("format", [None])[0]
    if query_format not in (None, "json", "api"):
        # `?format=` that the view has no renderer for is DRF's 404 from content negotiation, which runs before
        # authentication and looks nothing up (one it has, e.g. "file" on downloads, reaches the check: 403).
        assert response.status_code in (403, 404), (case.method, path, query_format, response.status_code)
        return
    if match is None or match.kwargs.get("format") not in (None, "json", "api"):
        # A generated id that makes the URL match no route ("/" in it), or read as a format suffix
        # ("0.5" is id 0 in format "5"), is refused before any view code runs: 404, nothing looked up.
        assert response.status_code == 404, (case.method, path, response.status_code)
        return
    # Refused by the authentication check itself, before any lookup could reveal whether the id exists.
    assert response.status_code in (401, 403), (case.method, path, response.status_code, response.text[:200])
    assert "credentials were not provided" in response.text, (case.method, path, response.text[:200])


def test_schema_declares_the_error_answers_of_every_operation(client: Client) -> None:
    document = yaml.safe_load(client.get("/api/schema/").content)
    error = {"$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            declared = set(operation["responses"])
            expected = {"400", "503"}
            if "{" in path or "requestBody" in operation:
                expected.add("404")
            if "requestBody" in operation:
                expected |= {"413", "415"}
            assert expected <= declared, (method, path, sorted(declared))
            for code in declared - {"200", "201", "204"}:
                content = operation["responses"][code].get("content", {})
                assert content.get("application/json", {}).get("schema") == error, (method, path, code)


def test_judgment_annotator_is_nullable_in_the_schema(client: Client) -> None:
    # Arena votes and LLM judgments have no annotator: the API answers null for them.
    document = yaml.safe_load(client.get("/api/schema/").content)
    annotator = document["components"]["schemas"]["Judgment"]["properties"]["annotator"]
    assert annotator["type"] == "string"
    assert annotator["nullable"] is True


def test_pagination_bounds_are_in_the_schema(client: Client) -> None:
    document = yaml.safe_load(client.get("/api/schema/").content)
    parameters = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/campaigns/"]["get"]["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert parameters["offset"]["minimum"] == 0


def test_token_endpoint_is_public_but_needs_valid_credentials(db: None, client: Client, make_user: Any) -> None:
    make_user("bob")
    refused = client.post("/api/v1/auth/token/", {"username": "bob", "password": "wrong"})
    assert refused.status_code == 400
    issued = client.post("/api/v1/auth/token/", {"username": "bob", "password": "pw-correct-horse"})
    assert issued.status_code == 200
    assert issued.json()["token"] == Token.objects.get(user__username="bob").key


# --- regressions found by the schemathesis run -------------------------------------------------------
@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "a\x00b", "responses": [{"text": "x"}, {"text": "y"}]},
        {"prompt": [{"role": "user", "content": "\x00"}], "responses": [{"text": "x"}, {"text": "y"}]},
        {"prompt": "p", "responses": [{"text": "x\x00"}, {"text": "y"}]},
        {"prompt": "p", "responses": [{"text": "x", "meta": {"\x00": 1}}, {"text": "y"}]},
        {"prompt": "p", "responses": [{"text": "x"}, {"text": "y"}], "meta": {"note": ["\x00"]}},
    ],
)
def test_item_import_with_a_nul_character_is_400_not_500(api: Any, staff: Any, make_campaign: Any, row: Any) -> None:
    # PostgreSQL stores no NUL in text or jsonb: the import used to fail with a server error.
    campaign = make_campaign()
    good = {"prompt": "fine", "responses": [{"text": "x"}, {"text": "y"}]}
    response = api(staff).post(f"/api/v1/campaigns/{campaign.id}/items/", {"items": [good, row]}, format="json")
    assert response.status_code == 400
    assert "NUL character" in response.json()["detail"]  # refused by the JSON parser, for every endpoint
    assert Item.objects.filter(campaign=campaign).count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("form_format", ["multipart", "urlencoded"])
def test_form_bodies_with_a_nul_character_are_400_not_500(api: Any, staff: Any, form_format: str) -> None:
    # Schemathesis found it: a multipart generation-job body with a NUL in a field failed with a 500.
    body = {"models": "tiny\x00", "prompts": "x"}
    client = api(staff)
    if form_format == "multipart":
        response = client.post("/api/v1/generation-jobs/", body, format="multipart")
    else:
        from urllib.parse import urlencode

        response = client.post(
            "/api/v1/generation-jobs/", urlencode(body), content_type="application/x-www-form-urlencoded"
        )
    assert response.status_code == 400
    assert "NUL character" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["/api/v1/arena/leaderboard/?category=%00", "/api/v1/models/?name=a%00b", "/arena/leaderboard/?category=%00"],
)
def test_urls_with_a_nul_character_are_400_not_500(api: Any, staff: Any, url: str) -> None:
    # Schemathesis found it: the leaderboard's category filter passed NUL on to PostgreSQL and answered 500.
    response = api(staff).get(url)
    assert response.status_code == 400
    assert "NUL character" in response.json()["detail"]
