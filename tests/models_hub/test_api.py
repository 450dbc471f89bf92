"""The model registry through its REST API: registering (with its checks), reading, changing, access."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission

from models_hub.models import Model
from models_hub.services import model_register
from tests.workers.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("echo", models=("fake-model", "other-model")) as fake:
        yield fake


def closed_port() -> int:
    """A port nothing listens on: bound once to learn a free number, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def endpoint_payload(base_url: str, **extra: object) -> dict[str, object]:
    return {"name": "remote", "role": "policy", "backend": "openai", "base_url": base_url, **extra}


def stored_model(name: str = "m", role: str = "policy", **fields: object) -> Model:
    """A row without checks: for tests about reading and changing, not registering."""
    return model_register(
        name=name, role=role, backend="transformers", path=f"/checkpoints/{name}", check=False, **fields
    )


# --- registering ---------------------------------------------------------------------------------------
def test_staff_registers_a_tiny_checkpoint_and_versions_count_up(api, staff, tiny_models):
    # given
    payload = {"name": "tiny", "role": "policy", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])}
    # when
    first = api(staff).post(URL, payload, format="json")
    second = api(staff).post(URL, {**payload, "temperature": 0.2, "in_arena": True}, format="json")
    # then
    assert first.status_code == 201, first.content
    assert second.status_code == 201, second.content
    assert (first.json()["label"], second.json()["label"]) == ("tiny@v1", "tiny@v2")
    assert first.json()["path"] == str(tiny_models["tiny-lm-small"].resolve())
    assert first.json()["created_by"] == "staff"
    v2 = Model.objects.get(name="tiny", version=2)
    assert v2.temperature == 0.2 and v2.in_arena and v2.created_by == staff


def test_parent_is_given_by_label(api, staff, tiny_models):
    path = str(tiny_models["tiny-lm-small"])
    base = {"name": "base", "role": "policy", "backend": "transformers", "path": path}
    assert api(staff).post(URL, base, format="json").status_code == 201
    response = api(staff).post(URL, {**base, "name": "tuned", "parent": "base@v1"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["parent"]["label"] == "base@v1"


def test_explicit_version_clash_is_409(api, staff, tiny_models):
    payload = {
        "name": "tiny",
        "role": "policy",
        "backend": "transformers",
        "path": str(tiny_models["tiny-lm-small"]),
        "version": 3,
    }
    assert api(staff).post(URL, payload, format="json").status_code == 201
    response = api(staff).post(URL, payload, format="json")
    assert response.status_code == 409
    assert "already registered" in response.json()["detail"]
    assert Model.objects.count() == 1


def test_bad_path_is_400_naming_path(api, staff, tmp_path):
    missing = tmp_path / "nowhere"
    response = api(staff).post(
        URL, {"name": "x", "role": "policy", "backend": "transformers", "path": str(missing)}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["path"] == [f"{missing}: not a directory"]
    empty = api(staff).post(
        URL, {"name": "x", "role": "policy", "backend": "transformers", "path": str(tmp_path)}, format="json"
    )
    assert empty.status_code == 400
    assert "no config.json" in empty.json()["path"][0]
    assert Model.objects.count() == 0


def test_reward_role_on_a_causal_lm_is_400(api, staff, tiny_models):
    response = api(staff).post(
        URL,
        {"name": "r", "role": "reward", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])},
        format="json",
    )
    assert response.status_code == 400
    assert "ForSequenceClassification" in response.json()["path"][0]
    assert Model.objects.count() == 0


def test_reward_checkpoint_registers_as_reward_but_not_as_policy(api, staff, tiny_models):
    path = str(tiny_models["tiny-reward"])
    as_policy = api(staff).post(URL, {"name": "r", "role": "policy", "backend": "transformers", "path": path})
    assert as_policy.status_code == 400 and "causal LM" in as_policy.json()["path"][0]
    as_reward = api(staff).post(URL, {"name": "r", "role": "reward", "backend": "transformers", "path": path})
    assert as_reward.status_code == 201, as_reward.content


def test_openai_endpoint_registers_after_answering(api, staff, server):
    response = api(staff).post(URL, endpoint_payload(server.base_url, remote_model="fake-model"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["base_url"] == server.base_url
    assert response.json()["remote_model"] == "fake-model"
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]


def test_unreachable_endpoint_is_400_naming_base_url(api, staff):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    response = api(staff).post(URL, endpoint_payload(base_url, remote_model="fake-model"), format="json")
    assert response.status_code == 400
    assert "not reachable" in response.json()["base_url"][0]
    assert Model.objects.count() == 0


def test_model_the_endpoint_does_not_serve_is_400(api, staff, server):
    response = api(staff).post(URL, endpoint_payload(server.base_url, remote_model="gpt-9"), format="json")
    assert response.status_code == 400
    assert "does not serve 'gpt-9'" in response.json()["remote_model"][0]
    assert Model.objects.count() == 0


def test_unset_api_key_variable_is_400(api, staff, server, monkeypatch):
    monkeypatch.delenv("PREFARENA_TEST_MISSING_KEY", raising=False)
    payload = endpoint_payload(server.base_url, remote_model="fake-model", api_key_env="PREFARENA_TEST_MISSING_KEY")
    response = api(staff).post(URL, payload, format="json")
    assert response.status_code == 400
    assert "is not set" in response.json()["api_key_env"][0]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "a@v1", "role": "policy", "backend": "transformers", "path": "/x"}, "name"),
        ({"name": "a", "role": "critic", "backend": "transformers", "path": "/x"}, "role"),
        ({"name": "a", "role": "policy", "backend": "transformers"}, "path"),
        ({"name": "a", "role": "policy", "backend": "openai", "base_url": "not a url"}, "base_url"),
        ({"name": "a", "role": "policy", "backend": "transformers", "path": "/x", "top_p": 0}, "top_p"),
        ({"name": "a", "role": "policy", "backend": "transformers", "path": "/x", "temperature": -1}, "temperature"),
        ({"name": "a", "role": "reward", "backend": "transformers", "path": "/x", "in_arena": True}, "in_arena"),
        ({"name": "a", "role": "policy", "backend": "transformers", "path": "/x", "parent": "nope"}, "parent"),
    ],
)
def test_invalid_registration_is_400_naming_the_field(api, staff, payload, field):
    response = api(staff).post(URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Model.objects.count() == 0


# --- access --------------------------------------------------------------------------------------------
def test_user_without_permission_cannot_register_but_can_read_without_locations(api, make_user, tiny_models):
    reader = make_user("reader")
    stored_model("tiny", in_arena=True)
    refused = api(reader).post(
        URL,
        {"name": "t", "role": "policy", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])},
        format="json",
    )
    assert refused.status_code == 403
    listed = api(reader).get(URL)
    assert listed.status_code == 200
    [row] = listed.json()["results"]
    assert row["label"] == "tiny@v1" and row["in_arena"] is True
    assert row["path"] is None and row["base_url"] is None and row["api_key_env"] is None
    assert api(reader).get(f"{URL}{row['id']}/").json()["path"] is None
    assert Model.objects.count() == 1


def test_user_with_add_permission_registers(api, make_user, tiny_models):
    maker = make_user("maker")
    maker.user_permissions.add(Permission.objects.get(codename="add_model"))
    response = api(maker).post(
        URL,
        {"name": "t", "role": "policy", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Model.objects.get().created_by == maker


def test_anonymous_is_refused(api):
    assert api(None).get(URL).status_code in (401, 403)


def test_list_filters(api, staff):
    stored_model("a", in_arena=True)
    stored_model("a")
    stored_model("r", role="reward")
    client = api(staff)
    assert [m["label"] for m in client.get(URL, {"role": "reward"}).json()["results"]] == ["r@v1"]
    assert [m["label"] for m in client.get(URL, {"in_arena": "true"}).json()["results"]] == ["a@v1"]
    assert [m["label"] for m in client.get(URL, {"name": "a"}).json()["results"]] == ["a@v2", "a@v1"]
    assert client.get(URL, {"backend": "openai"}).json()["count"] == 0


def test_unknown_model_is_404_and_versions_cannot_be_deleted(api, staff):
    model = stored_model()
    assert api(staff).get(f"{URL}999999/").status_code == 404
    assert api(staff).delete(f"{URL}{model.pk}/").status_code == 405
    assert api(staff).put(f"{URL}{model.pk}/", {"in_arena": True}, format="json").status_code == 405
    assert Model.objects.filter(pk=model.pk).exists()


# --- changing ------------------------------------------------------------------------------------------
def test_patch_puts_a_model_in_the_arena_and_sets_defaults(api, staff):
    model = stored_model()
    response = api(staff).patch(
        f"{URL}{model.pk}/", {"in_arena": True, "temperature": 0.0, "max_new_tokens": 64}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["in_arena"] is True
    model.refresh_from_db()
    assert (model.in_arena, model.temperature, model.max_new_tokens) == (True, 0.0, 64)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"path": "/elsewhere"}, "path"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_patch_with_an_invalid_or_fixed_field_is_400(api, staff, payload, field):
    model = stored_model(temperature=0.5)
    response = api(staff).patch(f"{URL}{model.pk}/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    model.refresh_from_db()
    assert (model.name, model.path, model.temperature) == ("m", "/checkpoints/m", 0.5)


def test_reward_models_stay_out_of_the_arena(api, staff):
    reward = stored_model("r", role="reward")
    response = api(staff).patch(f"{URL}{reward.pk}/", {"in_arena": True}, format="json")
    assert response.status_code == 400
    assert "only policy models" in response.json()["in_arena"][0]
    reward.refresh_from_db()
    assert not reward.in_arena


def test_patch_needs_staff_or_change_permission(api, make_user):
    model = stored_model()
    user = make_user("editor")
    assert api(user).patch(f"{URL}{model.pk}/", {"in_arena": True}, format="json").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="change_model"))
    user = type(user).objects.get(pk=user.pk)  # fresh object: permissions are cached per instance
    assert api(user).patch(f"{URL}{model.pk}/", {"in_arena": True}, format="json").status_code == 200
    model.refresh_from_db()
    assert model.in_arena


# --- the generation engine of local checkpoints -------------------------------------------------------------
def test_a_checkpoint_registers_with_an_engine_and_changes_it_later(api, staff, tiny_models):
    payload = {"name": "tiny", "role": "policy", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])}

    default = api(staff).post(URL, payload, format="json")
    chosen = api(staff).post(URL, {**payload, "engine": "vllm"}, format="json")

    assert default.status_code == 201 and default.json()["engine"] == "default"
    assert chosen.status_code == 201 and chosen.json()["engine"] == "vllm"
    changed = api(staff).patch(f"{URL}{chosen.json()['id']}/", {"engine": "hf"}, format="json")
    assert changed.status_code == 200 and changed.json()["engine"] == "hf"
    assert Model.objects.get(pk=chosen.json()["id"]).engine == "hf"


def test_an_engine_for_an_endpoint_or_an_unknown_engine_is_400_naming_engine(api, staff, server, tiny_models):
    endpoint = endpoint_payload(server.base_url, remote_model="fake-model", engine="vllm")
    local = {"name": "t", "role": "policy", "backend": "transformers", "path": str(tiny_models["tiny-lm-small"])}

    for_endpoint = api(staff).post(URL, endpoint, format="json")
    unknown = api(staff).post(URL, {**local, "engine": "tensorrt"}, format="json")

    assert for_endpoint.status_code == 400 and "local transformers checkpoints" in for_endpoint.json()["engine"][0]
    assert unknown.status_code == 400 and "engine" in unknown.json()
    assert Model.objects.count() == 0
    # ... and an endpoint registered without one cannot be given one afterwards
    registered = api(staff).post(URL, endpoint_payload(server.base_url, remote_model="fake-model"), format="json")
    assert registered.status_code == 201 and registered.json()["engine"] == "default"
    refused = api(staff).patch(f"{URL}{registered.json()['id']}/", {"engine": "hf"}, format="json")
    assert refused.status_code == 400 and "endpoint" in refused.json()["engine"][0]
    assert Model.objects.get(pk=registered.json()["id"]).engine == "default"


# --- prices ----------------------------------------------------------------------------------------------------
def test_patch_sets_and_clears_list_prices(api, staff):
    model = stored_model()
    response = api(staff).patch(
        f"{URL}{model.pk}/", {"price_input_per_million": 0.15, "price_output_per_million": "0.6"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert (response.json()["price_input_per_million"], response.json()["price_output_per_million"]) == (0.15, 0.6)
    cleared = api(staff).patch(f"{URL}{model.pk}/", {"price_output_per_million": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["price_output_per_million"] is None


@pytest.mark.parametrize("value", [-1, "abc", "NaN", "Infinity", 10**9, [1]])
def test_a_bad_price_is_400_naming_the_field(api, staff, value):
    model = stored_model()
    response = api(staff).patch(f"{URL}{model.pk}/", {"price_input_per_million": value}, format="json")
    assert response.status_code == 400, response.content
    assert "price_input_per_million" in response.json()
    model.refresh_from_db()
    assert model.price_input_per_million is None
