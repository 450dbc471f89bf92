"""The model registry in the Django admin: adding runs the registration checks, versions stay immutable,
the arena actions only let policy models in."""

from __future__ import annotations

import pytest
from django.test import Client

from models_hub.models import Model
from models_hub.services import model_register

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/models_hub/model/"


@pytest.fixture
def admin_client_for_staff(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def add_form(**fields: object) -> dict[str, object]:
    return {
        "name": "tiny",
        "version": 1,
        "role": "policy",
        "backend": "transformers",
        "kind": "text",
        "dtype": "auto",
        "engine": "default",
        "timeout_s": 60,
        "max_concurrency": 4,
        "max_new_tokens": 256,
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": 0,
        **fields,
    }


def test_adding_a_checkpoint_runs_the_registration_checks(admin_client_for_staff, staff, tiny_models, tmp_path):
    refused = admin_client_for_staff.post(f"{CHANGELIST}add/", add_form(path=str(tmp_path)))
    assert refused.status_code == 200  # the form again, with the error on the path field
    assert "no config.json" in refused.context["adminform"].form.errors["path"][0]
    assert Model.objects.count() == 0
    added = admin_client_for_staff.post(f"{CHANGELIST}add/", add_form(path=str(tiny_models["tiny-lm-small"])))
    assert added.status_code == 302, added.context["adminform"].form.errors if added.context else added
    model = Model.objects.get()
    assert model.created_by == staff and model.path == str(tiny_models["tiny-lm-small"].resolve())


def test_an_image_model_is_a_diffusers_pipeline_folder_or_an_endpoint(admin_client_for_staff, tmp_path):
    for fields, field, message in [
        ({"backend": "diffusers", "kind": "image", "path": str(tmp_path)}, "path", "no model_index.json"),
        ({"backend": "diffusers", "path": str(tmp_path)}, "kind", "kind must be image"),
        ({"kind": "image", "path": str(tmp_path)}, "kind", "an images endpoint (openai) or a diffusers pipeline"),
    ]:
        refused = admin_client_for_staff.post(f"{CHANGELIST}add/", add_form(**fields))
        assert refused.status_code == 200
        assert message in refused.context["adminform"].form.errors[field][0]
    assert Model.objects.count() == 0
    (tmp_path / "model_index.json").write_text("{}")
    added = admin_client_for_staff.post(
        f"{CHANGELIST}add/", add_form(backend="diffusers", kind="image", path=str(tmp_path), in_arena="on")
    )
    assert added.status_code == 302
    assert Model.objects.get().kind == "image"


def test_an_engine_is_refused_for_an_endpoint_and_editable_for_a_checkpoint(admin_client_for_staff):
    # given an endpoint added with an engine: the form comes back with the error on `engine`
    endpoint = add_form(backend="openai", base_url="http://127.0.0.1:9/v1", remote_model="m", engine="vllm")
    refused = admin_client_for_staff.post(f"{CHANGELIST}add/", endpoint)
    assert refused.status_code == 200
    assert "local transformers checkpoints" in refused.context["adminform"].form.errors["engine"][0]
    assert Model.objects.count() == 0
    # a checkpoint's engine is a setting of its change form
    model = model_register(name="m", role="policy", backend="transformers", path="/checkpoints/m", check=False)
    page = admin_client_for_staff.get(f"{CHANGELIST}{model.pk}/change/")
    assert "engine" in page.context["adminform"].form.fields


def test_a_registered_version_keeps_its_identity(admin_client_for_staff):
    model = model_register(name="m", role="policy", backend="transformers", path="/checkpoints/m", check=False)
    page = admin_client_for_staff.get(f"{CHANGELIST}{model.pk}/change/")
    assert page.status_code == 200
    form_fields = set(page.context["adminform"].form.fields)
    assert {"name", "version", "path", "role", "backend"}.isdisjoint(form_fields)
    assert {"in_arena", "temperature", "description"} <= form_fields
    assert admin_client_for_staff.get(f"{CHANGELIST}{model.pk}/delete/").status_code == 403


def test_arena_actions_let_only_policy_models_in(admin_client_for_staff):
    policy = model_register(name="p", role="policy", backend="transformers", path="/checkpoints/p", check=False)
    reward = model_register(name="r", role="reward", backend="transformers", path="/checkpoints/r", check=False)
    response = admin_client_for_staff.post(
        CHANGELIST, {"action": "put_in_arena", "_selected_action": [policy.pk, reward.pk]}, follow=True
    )
    assert response.status_code == 200
    assert dict(Model.objects.values_list("name", "in_arena")) == {"p": True, "r": False}
    messages = [str(m) for m in response.context["messages"]]
    assert "1 model(s) put in the arena." in messages
    admin_client_for_staff.post(CHANGELIST, {"action": "take_out_of_arena", "_selected_action": [policy.pk]})
    assert not Model.objects.get(pk=policy.pk).in_arena
