"""Judging items whose prompt holds images. An endpoint judge (a VLM behind a local scripted OpenAI-compatible
server) receives the prompt's image as an `image_url` part (data URI, the stored bytes) inside the question,
in both orders, and the calls are audited by the image's `sha256:` reference. A judge that reads text only (a
local checkpoint) does not judge such items: it records why, and routing sends them to humans
(`judge_cannot_see_images`) unless another judge saw the images."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core.files.storage import storages

from annotations import routing, services
from annotations.importing import rows_from_list
from annotations.models import AssignmentSlot, Item, ItemRoute, ItemState, Judgment, StoredImage
from models_hub.models import Model
from models_hub.services import model_register
from tests.judges.judge_server import ScriptedJudgeServer
from tests.judges.test_image_judge import png_uri
from workers import judging
from workers.ml.errors import PermanentBackendError
from workers.ml.judge import JudgeConfig, _pairwise_messages, judge_pairwise, judge_rating, prompt_hash
from workers.ml.openai_backend import OpenAIChat
from workers.models import JobStatus, JudgeCall

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_dir")]


def vision_row() -> dict[str, Any]:
    prompt = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What colour is this card?"},
                {"type": "image_url", "image_url": {"url": png_uri("red")}},
                {"type": "text", "text": "Answer in one word."},
            ],
        }
    ]
    return {"prompt": prompt, "responses": [{"text": "red", "model": "m1"}, {"text": "blue", "model": "m2"}]}


def routed_campaign(make_campaign, judges: list[Model], mode: str = "hybrid"):
    campaign = make_campaign(kind="pairwise")
    routing.campaign_routing_configure(
        campaign=campaign, judge_models=judges, routing_mode=mode, audit_fraction=0.0, human_budget=0.0
    )
    services.items_import(
        campaign=campaign, rows=rows_from_list([vision_row()], kind="pairwise", aspects=[], max_responses=8)
    )
    return campaign


def stored_bytes(image: StoredImage) -> bytes:
    with storages["default"].open(image.storage_name, "rb") as handle:
        return handle.read()


def image_urls(body: dict[str, Any]) -> list[str]:
    content = body["messages"][-1]["content"]
    return [p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


def prefers_red(body: dict[str, Any]) -> str:
    text = "".join(p.get("text", "") for p in body["messages"][-1]["content"] if p["type"] == "text")
    first = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
    return "The first says red. [[A]]" if first == "red" else "The second says red. [[B]]"


def vlm_judge(server: ScriptedJudgeServer) -> Model:
    return model_register(
        name="vlm-judge", role="judge", backend="openai", base_url=server.base_url, remote_model="judge"
    )


def text_only_judge() -> Model:
    # No checkpoint: a text-only judge never loads for items it cannot read.
    return model_register(name="text-judge", role="judge", backend="transformers", path="/checkpoints/j", check=False)


def test_an_endpoint_judge_sees_the_prompt_image_inside_the_question_in_both_orders(make_campaign):
    # given a routed campaign whose item's prompt holds an image, and a VLM judge that prefers "red"
    with ScriptedJudgeServer(prefers_red) as server:
        judge = vlm_judge(server)
        campaign = routed_campaign(make_campaign, [judge])
        item = Item.objects.get(campaign=campaign)
        image = StoredImage.objects.get()
        # when the judge job runs
        job = judging.judge_job_create(campaign=campaign, model=judge, created_by=None)
        judging.judge_job_run(job.pk)
        bodies = [b for b in server.requests if "messages" in b]
    # then both calls carried the stored bytes as a data URI, between the question's two texts
    assert len(bodies) == 2
    expected = f"data:{image.content_type};base64," + base64.b64encode(stored_bytes(image)).decode()
    for body in bodies:
        assert image_urls(body) == [expected]
        kinds = [(p["type"], p.get("text", "")) for p in body["messages"][-1]["content"]]
        assert [k for k, _ in kinds] == ["text", "image_url", "text"]
        assert kinds[0][1].startswith("[User Question]\nuser: What colour is this card?")
        assert kinds[2][1].startswith("Answer in one word.\n\n[The Start of Assistant A's Answer]")
    assert "sha256:" not in json.dumps(bodies)
    # ... the verdict is stored (red, response a, wins consistently) and the item routed by it
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    verdict = Judgment.objects.get(item=item, source="llm")
    assert verdict.choice == "a" and verdict.meta["consistent"] is True
    # ... and the calls are audited by reference: their hash is that of the messages naming `sha256:<hex>`
    reference = f"sha256:{image.sha256}"
    audited = [
        {
            **m,
            "content": [
                {**p, "image_url": {"url": reference}} if p["type"] == "image_url" else p for p in m["content"]
            ],
        }
        if isinstance(m["content"], list)
        else m
        for m in bodies[0]["messages"]
    ]
    hashes = set(JudgeCall.objects.filter(job=job).values_list("prompt_hash", flat=True))
    assert prompt_hash(audited) in hashes


def test_judge_calls_record_prompt_images_by_reference_not_data_uri():
    # given a prompt naming an image by reference, and its data URI handed to the judge
    reference, uri = "sha256:" + "c" * 64, png_uri("green")
    prompt = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Colour?"}, {"type": "image_url", "image_url": {"url": reference}}],
        }
    ]
    with (
        ScriptedJudgeServer(lambda body: "Fine. [[A]] [RESULT] 4") as server,
        OpenAIChat(base_url=server.base_url, model="j") as backend,
    ):
        verdict = judge_pairwise(backend, prompt, "green", "blue", JudgeConfig(), {reference: uri})
        rated = judge_rating(
            backend, prompt, "green", {"name": "accuracy"}, JudgeConfig(), prompt_images={reference: uri}
        )
        sent = list(server.requests)
    # then the requests held the data URI, the recorded calls the reference
    assert all(image_urls(body) == [uri] for body in sent) and len(sent) == 3
    for call in [*verdict.calls, *rated.calls]:
        recorded = json.dumps(call.messages)
        assert reference in recorded and "data:" not in recorded
        assert call.prompt_hash == prompt_hash(call.messages)


def test_a_prompt_image_missing_from_the_mapping_is_an_error_not_text():
    prompt = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "sha256:" + "d" * 64}}]}]
    with pytest.raises(PermanentBackendError, match="was not given to the judge"):
        _pairwise_messages(prompt, "a", "b", JudgeConfig(), {})
    # text prompts render exactly as before: "role: content"
    messages = _pairwise_messages([{"role": "user", "content": "Hi"}], "a", "b", JudgeConfig())
    assert "[User Question]\nuser: Hi\n\n" in messages[-1]["content"]


@pytest.mark.parametrize("mode", ["hybrid", "judge_only"])
def test_a_text_only_judge_leaves_vision_items_to_humans_with_the_reason(make_campaign, mode):
    # given a routed campaign whose item's prompt holds an image, judged by a local (text-only) checkpoint
    judge = text_only_judge()
    campaign = routed_campaign(make_campaign, [judge], mode=mode)
    item = Item.objects.get(campaign=campaign)
    # when the judge job runs and the campaign is routed
    job = judging.judge_job_create(campaign=campaign, model=judge, created_by=None)
    judging.judge_job_run(job.pk)
    judging.campaign_route_after_judges(campaign.pk)
    # then the job succeeded without judging (nor loading the model): the call records why
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.metrics["items_images_unseen"] == 1 and job.items_judged == 0 and job.items_failed == 0
    [call] = JudgeCall.objects.filter(job=job)
    assert call.parsed == judging.IMAGES_UNSEEN
    assert "text-judge@v1 reads text only" in call.error and "1 image(s)" in call.error
    assert not Judgment.objects.filter(item=item, source="llm").exists()
    # ... and the item went to humans with the reason, not as a judge error
    item.refresh_from_db()
    assert (item.state, item.route, item.route_reason) == (
        ItemState.NEEDS_HUMANS,
        ItemRoute.HUMAN,
        routing.IMAGES_UNSEEN_REASON,
    )
    assert item.judge_errors == 0
    assert AssignmentSlot.objects.filter(item=item).count() == campaign.overlap


def test_a_vision_item_another_judge_saw_is_routed_by_that_verdict(make_campaign):
    # given a judge-only campaign with a VLM judge and a text-only judge
    with ScriptedJudgeServer(prefers_red) as server:
        vlm, blind = vlm_judge(server), text_only_judge()
        campaign = routed_campaign(make_campaign, [vlm, blind], mode="judge_only")
        item = Item.objects.get(campaign=campaign)
        # when both judge jobs run
        for job in judging.campaign_judge(campaign=campaign, created_by=None):
            judging.judge_job_run(job.pk)
        judging.campaign_route_after_judges(campaign.pk)
    # then the VLM's verdict labels the item; the text-only judge abstained
    item.refresh_from_db()
    assert (item.state, item.route) == (ItemState.DONE, ItemRoute.JUDGE)
    assert list(Judgment.objects.filter(item=item, source="llm").values_list("judge_name", "choice")) == [
        ("vlm-judge@v1", "a")
    ]
