"""An LLM/VLM judge compares two image responses through an OpenAI-compatible chat endpoint that accepts images:
both images go as data URIs in `image_url` parts, in both orders, and the verdict is combined across the swap."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from PIL import Image

from annotations.models import Item, Judgment
from models_hub.services import model_register
from tests.judges.judge_server import ScriptedJudgeServer
from workers import judging
from workers.models import JobStatus, JudgeCall

pytestmark = pytest.mark.usefixtures("media_dir")  # images stored in a fresh folder per test


def png_uri(color: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def shown_images(body: dict[str, Any]) -> list[bytes]:
    parts = body["messages"][-1]["content"]
    return [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts if p["type"] == "image_url"]


def is_red(data: bytes) -> bool:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.django_db
def test_image_judge_sees_both_images_in_both_orders_and_records_the_swapped_verdict(tmp_path, make_campaign):
    # given a pairwise text-to-image item (the red image first) and a judge that prefers the red picture
    campaign = make_campaign(kind="pairwise", name="t2i-judged")
    row = {
        "prompt": "Draw something red",
        "responses": [{"image": png_uri("red"), "model": "m0"}, {"image": png_uri("blue"), "model": "m1"}],
    }
    (tmp_path / "items.jsonl").write_text(json.dumps(row))
    call_command("import_items", "--campaign", "t2i-judged", str(tmp_path / "items.jsonl"))
    item = Item.objects.get(campaign=campaign)
    red, blue = (link.response.image for link in item.item_responses.order_by("position"))

    def script(body: dict[str, Any]) -> str:
        first, second = shown_images(body)
        return "The first is red. [[A]]" if is_red(first) else "The second is red. [[B]]"

    with ScriptedJudgeServer(script) as server:
        judge = model_register(
            name="vlm-judge", role="judge", backend="openai", base_url=server.base_url, remote_model="judge"
        )
        job = judging.judge_job_create(campaign=campaign, model=judge, created_by=None, items=[item])
        judging.judge_job_run(job.pk)
        requests = list(server.requests)

    # then two requests, each with both images as data URIs whose bytes are the stored ones, swapped in the second
    chats = [r for r in requests if "messages" in r]
    assert len(chats) == 2
    sent = [[hashlib.sha256(data).hexdigest() for data in shown_images(body)] for body in chats]
    assert sorted(sent) == sorted([[red.sha256, blue.sha256], [blue.sha256, red.sha256]])
    text_part = chats[0]["messages"][-1]["content"][0]
    assert text_part["type"] == "text" and "Draw something red" in text_part["text"]
    # ... each call is kept with the canonical positions it showed
    calls = {c.order: c for c in JudgeCall.objects.filter(job=job)}
    assert {order: (c.parsed, c.positions) for order, c in calls.items()} == {"ab": ("A", [0, 1]), "ba": ("B", [1, 0])}
    # ... and the position-swapped verdict is consistent: the first (red) response wins
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    verdict = Judgment.objects.get(item=item, source="llm")
    assert verdict.choice == "a" and verdict.meta["consistent"] is True


def test_judge_messages_name_images_by_reference_for_the_call_hash():
    from workers.ml.judge import ImageAnswer, JudgeConfig, _pairwise_messages, messages_for_audit

    a = ImageAnswer(data_uri=png_uri("red"), reference="sha256:" + "a" * 64)
    b = ImageAnswer(data_uri=png_uri("blue"), reference="sha256:" + "b" * 64, caption="a blue card")
    messages = _pairwise_messages("Draw", a, b, JudgeConfig())
    urls = [p["image_url"]["url"] for p in messages[-1]["content"] if p["type"] == "image_url"]
    assert urls == [a.data_uri, b.data_uri]
    assert any("a blue card" in p.get("text", "") for p in messages[-1]["content"])
    audited = messages_for_audit(messages, [a, b])
    assert [p["image_url"]["url"] for p in audited[-1]["content"] if p["type"] == "image_url"] == [
        a.reference,
        b.reference,
    ]
    assert messages_for_audit([{"role": "user", "content": "text"}], ["x", "y"]) == [
        {"role": "user", "content": "text"}
    ]
