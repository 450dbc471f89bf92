"""The image arena: two image models (an OpenAI-compatible images endpoint, a tiny local diffusers pipeline) draw a
visitor's text prompt on the gpu queue's battle task; the battle shows both images by side, the vote reveals the
names, and the image leaderboard (`?category=image`) rates both models. Text battles never draw image models."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from PIL import Image
from rest_framework.test import APIClient

from arena import controlled, leaderboard, services
from arena.identity import VoterIdentity
from arena.models import Battle, BattleStatus, PairStats
from models_hub.models import Model
from models_hub.services import model_register
from tests.arena.test_api import BATTLES, NO_LIMITS, vote

pytestmark = pytest.mark.usefixtures("media_dir")  # images stored in a fresh folder per test

LEADERBOARD = "/api/v1/arena/leaderboard/"
# Each remote model draws its own picture: a colour and a size (so the battle's image features differ).
DRAWINGS = {"painter-a": ("red", (64, 64)), "painter-b": ("blue", (96, 48))}


def png(color: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@contextmanager
def images_endpoint() -> Iterator[tuple[str, list[dict]]]:
    """A stdlib server answering POST /v1/images/generations with a b64_json PNG drawn by Pillow."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, **body})
            color, size = DRAWINGS[body["model"]]
            reply = json.dumps({"created": 0, "data": [{"b64_json": base64.b64encode(png(color, size)).decode()}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def image_model(name: str, **fields: Any) -> Model:
    return model_register(name=name, role="policy", kind="image", in_arena=True, check=False, **fields)


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_image_battle_on_an_images_endpoint_is_generated_shown_voted_and_rated():
    from workers.tasks import battle_generate

    with images_endpoint() as (base_url, requests):
        models = [
            image_model(f"painter-{side}", backend="openai", base_url=base_url, remote_model=f"painter-{side}")
            for side in ("a", "b")
        ]
        Model.objects.create(name="talker", role="policy", backend="transformers", path="/nowhere", in_arena=True)
        client = APIClient()

        # when a visitor asks the image arena for a battle on a text prompt
        created = client.post(BATTLES, {"kind": "image", "prompt": "a lighthouse at dusk"}, format="json")
        assert created.status_code == 201, created.content
        battle = created.json()
        assert battle["status"] == "generating" and battle["images"] == {"a": None, "b": None}
        stored = Battle.objects.get(pk=battle["id"])
        assert {stored.model_a_id, stored.model_b_id} == {m.pk for m in models}  # image models only
        assert stored.categories[0] == "image"

        # ... and the gpu queue's battle task generates both images
        battle_generate.apply(args=[battle["id"]])

    # then both models were asked once, for a b64_json image of the prompt
    assert sorted((r["path"], r["model"], r["prompt"], r["response_format"]) for r in requests) == [
        ("/v1/images/generations", f"painter-{side}", "a lighthouse at dusk", "b64_json") for side in ("a", "b")
    ]
    # ... the page reads two images by side, no model name anywhere
    fetched = client.get(f"{BATTLES}{battle['id']}/")
    assert fetched.status_code == 200 and fetched.json()["status"] == "ready"
    hidden = [word for m in models for word in (m.name, m.label, m.base_url)]
    assert [word for word in hidden if word in fetched.content.decode()] == []
    shown = fetched.json()["images"]
    stored = Battle.objects.select_related("model_a").get(pk=battle["id"])
    sizes = {side: (shown[side]["width"], shown[side]["height"]) for side in ("a", "b")}
    assert sizes["a"] == DRAWINGS[stored.model_a.remote_model][1]
    for side in ("a", "b"):
        served = client.get(shown[side]["url"])
        assert served.status_code == 200 and served["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(b"".join(served.streaming_content))).size == sizes[side]
    # ... its image features (megapixels, distance from square) are stored for the `image` control
    (wa, ha), (wb, hb) = sizes["a"], sizes["b"]
    assert stored.features["megapixels_a"] == round(wa * ha / 1e6, 4)
    assert stored.features["megapixels_b"] == round(wb * hb / 1e6, 4)
    assert {stored.features["aspect_a"], stored.features["aspect_b"]} == {0.0, round(math.log(2), 4)}
    # ... which the `image` control reads; a text battle (style counts only) is left out of it
    names, matrix, usable = controlled._covariates(["image"], [stored.features, {"length_a": 9, "length_b": 3}])
    assert names == ["megapixels", "aspect"] and usable.tolist() == [True, False]
    assert matrix[0].tolist() == [
        stored.features["megapixels_a"] - stored.features["megapixels_b"],
        stored.features["aspect_a"] - stored.features["aspect_b"],
    ]

    # when the visitor votes for side a, the names are revealed
    voted = vote(client, battle, "a")
    assert voted.status_code == 201
    assert voted.json()["model_a"] == stored.model_a.label

    # then the image leaderboard rates both image models, and the pair is counted there
    leaderboard.leaderboard_recompute("image")
    board = client.get(LEADERBOARD, {"category": "image"}).json()
    assert {row["model"] for row in board["rows"]} == {m.label for m in models}
    lo, hi = sorted(m.pk for m in models)
    assert PairStats.objects.filter(category="image", model_lo_id=lo, model_hi_id=hi).count() == 1

    # ... and a text battle never draws an image model (one text model: no pair)
    assert client.post(BATTLES, {"prompt": "hello"}, format="json").status_code == 409
    # ... an image battle's prompt is one text
    refused = client.post(BATTLES, {"kind": "image", "prompt": [{"role": "user", "content": "x"}]}, format="json")
    assert refused.status_code == 400 and "one text" in refused.json()["detail"]


@pytest.mark.django_db
@override_settings(PREFARENA_DIFFUSERS_STEPS=2)
def test_image_battle_between_two_local_diffusers_pipelines(tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from workers.arena_runner import battle_generate_run
    from workers.ml.tiny import tiny_diffusion_build
    from workers.runtime import model_cache_clear

    # given two tiny random-weight pipelines registered as image models, and a battle between them
    models = [
        image_model(
            f"tiny-diffusion-{k}",
            backend="diffusers",
            path=str(tiny_diffusion_build(tmp_path / str(k), seed=k)),
            dtype="float32",  # random weights in float16 (the GPU's "auto") may overflow to one black picture
        )
        for k in range(2)
    ]
    from annotations.models import Prompt

    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="a red circle"),
        model_a=models[0],
        model_b=models[1],
        session_hash="s" * 64,
        categories=["image"],
    )

    # when the worker runs it
    try:
        stored = battle_generate_run(battle.pk)
    finally:
        model_cache_clear()

    # then both sides are 16×16 PNGs, different pipelines drawing different pictures
    assert stored is not None and stored.status == BattleStatus.READY, stored and stored.error
    stored = Battle.objects.select_related("response_a__image", "response_b__image").get(pk=battle.pk)
    a, b = stored.response_a.image, stored.response_b.image
    assert (a.width, a.height, a.content_type) == (16, 16, "image/png") == (b.width, b.height, b.content_type)
    assert a.sha256 != b.sha256 and a.is_public and b.is_public
    assert stored.features == {"megapixels_a": 0.0003, "aspect_a": 0.0, "megapixels_b": 0.0003, "aspect_b": 0.0}


@pytest.mark.django_db
def test_build_tiny_models_registers_the_demos_image_models_once(tmp_path: Path):
    pytest.importorskip("diffusers")
    from workers.runtime import model_cache_clear

    # when the demo's command builds the tiny models with --image-models, twice
    out = io.StringIO()
    args = ("build_tiny_models", "--out", str(tmp_path), "--steps", "1", "--register", "--image-models")
    call_command(*args, stdout=out)
    call_command(*args, stdout=out)

    # then two image models are in the arena, registered once each, with pipelines that load
    models = list(Model.objects.filter(kind="image").order_by("name"))
    assert [(m.name, m.backend, m.in_arena, m.dtype) for m in models] == [
        ("tiny-diffusion-a", "diffusers", True, "float32"),
        ("tiny-diffusion-b", "diffusers", True, "float32"),
    ]
    assert "tiny-diffusion-a: already registered" in out.getvalue()
    # ... and a visitor's image battle pairs them and is drawn as two 64×64 pictures
    from workers.arena_runner import battle_generate_run

    battle = services.battle_create_live(
        prompt="a red circle", kind="image", identity=VoterIdentity(session_hash="s" * 64, ip_hash="i", user_id=None)
    )
    assert {battle.model_a.name, battle.model_b.name} == {"tiny-diffusion-a", "tiny-diffusion-b"}
    try:
        with override_settings(PREFARENA_DIFFUSERS_STEPS=2):
            stored = battle_generate_run(battle.pk)
    finally:
        model_cache_clear()
    assert stored is not None and stored.status == BattleStatus.READY, stored and stored.error
    stored = Battle.objects.select_related("response_a__image", "response_b__image").get(pk=battle.pk)
    assert (stored.response_a.image.width, stored.response_b.image.height) == (64, 64)


def test_image_models_need_the_diffusers_extra_or_the_command_says_so(monkeypatch, tmp_path: Path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    with pytest.raises(CommandError, match="needs the diffusers extra"):
        call_command("build_tiny_models", "--out", str(tmp_path), "--image-models", stdout=io.StringIO())
    assert list(tmp_path.iterdir()) == []  # nothing built


@pytest.mark.django_db
def test_image_models_are_registered_with_a_kind_that_fits_their_backend(tmp_path: Path):
    from prefarena.errors import InvalidInput

    with pytest.raises(InvalidInput, match="model_index.json"):
        model_register(name="x", role="policy", kind="image", backend="diffusers", path=str(tmp_path))
    with pytest.raises(InvalidInput, match="kind must be image"):
        model_register(name="x", role="policy", backend="diffusers", path=str(tmp_path), check=False)
    with pytest.raises(InvalidInput, match="only policy models"):
        model_register(name="x", role="judge", kind="image", backend="openai", base_url="http://x/v1", remote_model="m")
    with pytest.raises(CommandError, match="model_index.json"):
        call_command(
            "register_model",
            "x",
            "--role",
            "policy",
            "--backend",
            "diffusers",
            "--kind",
            "image",
            "--path",
            str(tmp_path),
        )
    (tmp_path / "model_index.json").write_text("{}")
    call_command(
        "register_model", "x", "--role", "policy", "--backend", "diffusers", "--kind", "image", "--path", str(tmp_path)
    )
    assert Model.objects.get().kind == "image"
