"""Generation jobs on prompts that hold images ("vision prompts"), against a real local HTTP server standing in
for an OpenAI-compatible endpoint: the endpoint receives each stored image's exact bytes as a data URI while the
stored prompt keeps its `sha256:` reference; a model that reads text only (a local checkpoint) is refused when
the job is created (REST 400, command error, nothing queued) and fails the job readably if it still runs one."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command

from annotations.models import Prompt, StoredImage
from models_hub.models import Model
from models_hub.services import model_register
from prefarena.jobs import loop
from tests.judges.test_image_judge import png_uri
from tests.workers.openai_server import FakeOpenAIServer
from workers import runners, services
from workers.ml.errors import PermanentBackendError
from workers.ml.openai_backend import OpenAIChat
from workers.ml.types import SamplingParams
from workers.models import GenerationJob, GenerationOutput, JobStatus

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_dir")]
GENERATION = "/api/v1/generation-jobs/"


def vision_row(color: str) -> dict[str, Any]:
    prompt = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What colour is this card?"},
                {"type": "image_url", "image_url": {"url": png_uri(color)}},
            ],
        }
    ]
    return {"prompt": prompt, "responses": [{"text": "red", "model": "m1"}, {"text": "blue", "model": "m2"}]}


@pytest.fixture
def vision_campaign(make_campaign):
    text_row = {"prompt": "Name a colour.", "responses": [{"text": "green"}, {"text": "grey"}]}
    return make_campaign(kind="pairwise", name="cards", rows=[vision_row("red"), text_row])


def local_model(name: str = "small") -> Model:
    # No checkpoint: the refusal comes before anything would load it.
    return model_register(name=name, role="policy", backend="transformers", path=f"/checkpoints/{name}", check=False)


def endpoint_model(server: FakeOpenAIServer) -> Model:
    return model_register(
        name="vlm", role="policy", backend="openai", base_url=server.base_url, remote_model="fake-model"
    )


def chat_bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path.endswith("/chat/completions")]


def test_an_endpoint_job_sends_the_stored_image_as_a_data_uri_and_keeps_the_reference(vision_campaign, staff):
    # given a campaign whose first prompt holds an image, and an endpoint model
    image = StoredImage.objects.get()
    with storages["default"].open(image.storage_name, "rb") as handle:
        stored_bytes = handle.read()
    vision_prompt = Prompt.objects.get(images=image)
    with FakeOpenAIServer("echo", reply=lambda body: "A red card.") as server:
        model = endpoint_model(server)
        job = services.generation_job_create(models=[model], source_campaign=vision_campaign, created_by=staff)
        # when the job runs
        loop.job_execute(GenerationJob, job.pk, runners.generation_job_work)
        bodies = chat_bodies(server)
    # then it succeeded and stored the endpoint's answer to the vision prompt
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    output = GenerationOutput.objects.select_related("response").get(job=job, prompt=vision_prompt)
    assert output.response.text == "A red card."
    # ... the request carried the image's exact stored bytes as a data URI, after the question's text
    [vision_body] = [b for b in bodies if isinstance(b["messages"][0]["content"], list)]
    text_part, image_part = vision_body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "What colour is this card?"}
    prefix, encoded = image_part["image_url"]["url"].split(",", 1)
    assert prefix == f"data:{image.content_type};base64"
    assert base64.b64decode(encoded) == stored_bytes
    assert hashlib.sha256(base64.b64decode(encoded)).hexdigest() == image.sha256
    assert "sha256:" not in json.dumps(bodies)
    # ... the text prompt went as text, and the stored prompt still names its image by reference
    assert {"role": "user", "content": "Name a colour."} in [b["messages"][0] for b in bodies]
    vision_prompt.refresh_from_db()
    assert vision_prompt.content[0]["content"][1]["image_url"]["url"] == f"sha256:{image.sha256}"
    assert "data:" not in json.dumps(vision_prompt.content)


def test_the_api_refuses_a_text_only_model_on_vision_prompts_and_queues_nothing(
    api, staff, vision_campaign, django_capture_on_commit_callbacks
):
    # given a local checkpoint and an endpoint model
    local_model("small")
    with FakeOpenAIServer("echo") as server:
        endpoint_model(server)
    prompt = Prompt.objects.get(images__isnull=False)
    # when a job over the campaign's prompts asks for the local one (alone, or beside the endpoint)
    for models in (["small"], ["vlm", "small"]):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = api(staff).post(
                GENERATION, {"models": models, "source_campaign": vision_campaign.pk}, format="json"
            )
        # then 400, naming the prompt and the model, and nothing created or queued
        assert response.status_code == 400, response.content
        message = json.dumps(response.json())
        assert f"prompt {prompt.pk}" in message and "small@v1" in message and "hold images" in message
        assert "vlm@v1" not in message
        assert callbacks == []
    assert GenerationJob.objects.count() == 0


def test_best_of_n_and_scoring_refuse_a_reward_model_on_vision_prompts(api, staff, vision_campaign):
    # given an endpoint policy (which sees images) and a local reward model (which does not)
    reward = model_register(name="rm", role="reward", backend="transformers", path="/checkpoints/rm", check=False)
    with FakeOpenAIServer("echo") as server:
        endpoint_model(server)
    payload = {"models": ["vlm"], "source_campaign": vision_campaign.pk, "candidates": 2, "keep_top": 1}
    # when best-of-N ranks with it, or it scores the campaign's responses
    best_of_n = api(staff).post(GENERATION, {**payload, "reward_model": "rm"}, format="json")
    scoring = api(staff).post("/api/v1/scoring-jobs/", {"model": "rm", "source_campaign": vision_campaign.pk})
    # then both are refused, naming the reward model
    for response in (best_of_n, scoring):
        assert response.status_code == 400, response.content
        assert "rm@v1" in json.dumps(response.json()) and "hold images" in json.dumps(response.json())
    assert not GenerationJob.objects.exists() and not reward.scoring_jobs.exists()


def test_the_generate_command_refuses_a_text_only_model_on_vision_prompts(vision_campaign):
    local_model("small")
    prompt = Prompt.objects.get(images__isnull=False)
    with pytest.raises(CommandError, match=rf"prompt {prompt.pk}\).*small@v1.*no job was created"):
        call_command("generate", "--model", "small", "--campaign", "cards", stdout=io.StringIO())
    assert GenerationJob.objects.count() == 0


def test_a_text_only_model_that_reaches_the_worker_fails_the_job_readably(vision_campaign, staff):
    # given a job created for an endpoint model, whose model was then swapped for a local checkpoint
    with FakeOpenAIServer("echo") as server:
        job = services.generation_job_create(
            models=[endpoint_model(server)], source_campaign=vision_campaign, created_by=staff, max_attempts=1
        )
        job.policy_models.set([local_model("small")])
        # when it runs
        loop.job_execute(GenerationJob, job.pk, runners.generation_job_work)
        bodies = chat_bodies(server)
    # then it failed with a message naming the prompt and the model; nothing was generated or stored
    job.refresh_from_db()
    prompt = Prompt.objects.get(images__isnull=False)
    assert job.status == JobStatus.FAILED
    assert f"prompt {prompt.pk}" in job.error and "small@v1" in job.error and "text only" in job.error
    assert not GenerationOutput.objects.filter(job=job).exists()
    assert bodies == []


def test_the_endpoint_client_never_sends_an_image_reference_or_an_outside_url():
    with FakeOpenAIServer("echo") as server, OpenAIChat(base_url=server.base_url, model="fake-model") as chat:
        for url in ("sha256:" + "a" * 64, "https://example.com/cat.png"):
            prompt = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
            with pytest.raises(PermanentBackendError, match="prompt 0, message 0, part 0: the image .* not a data URI"):
                chat.generate([prompt], [0], SamplingParams())
        assert chat_bodies(server) == []


def test_a_local_checkpoint_refuses_to_render_a_vision_prompt(tiny_models):
    from workers.ml.generation import CausalLM

    lm = CausalLM(tiny_models["tiny-lm-small"], device="cpu")
    prompt = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_uri("red")}}]}]
    with pytest.raises(PermanentBackendError, match="reads text only"):
        lm.generate([prompt], [0], SamplingParams(max_new_tokens=2))
    assert lm.render("plain text")  # text prompts are unaffected
