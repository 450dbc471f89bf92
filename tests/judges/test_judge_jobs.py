"""Judge jobs end to end through a real Celery worker: items → judge job → routing → human queue.

Local tiny judges run on the `gpu` queue; a scripted OpenAI-compatible server (verdicts, garbage,
time-outs) is judged from the `default` queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from annotations import routing, services
from annotations.importing import rows_from_list
from annotations.models import AssignmentSlot, ItemState, Judgment, JudgmentSource
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess, wait_for
from tests.judges.judge_server import Scripted, ScriptedJudgeServer, shown_answers
from workers import judging
from workers.models import JobStatus, JudgeCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    process = WorkerProcess(tmp_path / "worker.log", queues="gpu,default", pool="prefork")
    yield process
    process.stop()


def campaign_with_items(make_campaign, judge, rows: list[dict[str, Any]], **options: Any):
    campaign = make_campaign(kind="pairwise")
    routing.campaign_routing_configure(
        campaign=campaign, judge_models=[judge], **{"routing_mode": "hybrid", "audit_fraction": 0.0, **options}
    )
    services.items_import(campaign=campaign, rows=rows_from_list(rows, kind="pairwise", aspects=[], max_responses=8))
    return campaign


def pair(i: int, good_first: bool, **extra: Any) -> dict[str, Any]:
    good, bad = f"good answer {i}", f"poor {i}"
    texts = (good, bad) if good_first else (bad, good)
    return {"prompt": f"Question {i}?", "responses": [{"text": t, "model": "m"} for t in texts], **extra}


def routed(campaign) -> bool:
    return not campaign.items.filter(state=ItemState.AWAITING_JUDGE).exists()


def leased_item_ids(campaign, user) -> list[int]:
    services.membership_set(campaign=campaign, user=user)
    ids = []
    while (slot := services.item_lease_next(campaign=campaign, annotator=user)) is not None:
        ids.append(slot.item_id)
        shown = "a" if slot.presented_order == [0, 1] else "b"
        services.judgment_submit(item=slot.item, annotator=user, data={"choice": shown, "strength": "clear"})
    return ids


def test_tiny_local_judge_end_to_end(worker, tiny_models, make_campaign, make_user, staff):
    judge = model_register(
        name="tiny-judge", role="judge", backend="transformers", path=str(tiny_models["tiny-lm-small"])
    )
    rows = [pair(i, i % 2 == 0) for i in range(8)]
    rows[1]["meta"] = {"tags": ["safety"]}
    campaign = campaign_with_items(
        make_campaign, judge, rows, human_budget=0.25, judge_templates={"pairwise_system_3": "Pick: [[A]] [[B]] [[C]]"}
    )
    user = make_user()
    services.membership_set(campaign=campaign, user=user)
    assert services.item_lease_next(campaign=campaign, annotator=user) is None  # all awaiting the judge
    [job] = judging.campaign_judge(campaign=campaign, created_by=staff)
    assert job.queue == "gpu"
    assert wait_for(lambda: routed(campaign), timeout=180), worker.log.read_text()[-3000:]
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.items_judged, job.items_failed) == (8, 0)
    calls = JudgeCall.objects.filter(job=job)
    assert calls.count() == 16 and set(calls.values_list("order", flat=True)) == {"ab", "ba"}
    call = calls.first()
    assert len(call.prompt_hash) == 64 and call.raw_output in ("[[A]]", "[[B]]", "[[C]]")
    assert call.distribution_source == "logprobs" and call.model_label == "tiny-judge@v1" and call.prompt_tokens > 0
    judgments = Judgment.objects.filter(item__campaign=campaign, source=JudgmentSource.LLM)
    assert judgments.count() == 8
    assert {j.judge_name for j in judgments} == {"tiny-judge@v1"}
    assert all(0 <= j.confidence <= 1 and 0 <= j.meta["p_a"] <= 1 for j in judgments)
    human = set(campaign.items.filter(route="human").values_list("pk", flat=True))
    assert len(human) == 2 and campaign.items.get(pk__in=human, route_reason="rule").meta["tags"] == ["safety"]
    assert campaign.items.filter(route="judge", state=ItemState.DONE).count() == 6
    # the human queue receives only the routed items
    assert set(leased_item_ids(campaign, make_user())) == human
    assert AssignmentSlot.objects.filter(campaign=campaign).count() == 2


def test_http_judge_with_scripted_verdicts_and_garbage(worker, make_campaign, make_user, staff):
    def script(body: dict[str, Any]) -> str:
        a, b = shown_answers(body)
        if "garbage" in a + b:
            return "I will not answer in the format."
        return "A is good. [[A]]" if "good" in a else "B is good. [[B]]"

    with ScriptedJudgeServer(script) as server:
        judge = model_register(
            name="http-judge", role="judge", backend="openai", base_url=server.base_url, remote_model="judge"
        )
        rows = [pair(i, i % 3 != 0) for i in range(6)]
        rows[4]["responses"][0]["text"] = "garbage please"
        campaign = campaign_with_items(make_campaign, judge, rows, routing_mode="judge_only")
        [job] = judging.campaign_judge(campaign=campaign, created_by=staff)
        assert job.queue == "default"
        assert wait_for(lambda: routed(campaign), timeout=120), worker.log.read_text()[-3000:]
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and (job.items_judged, job.items_failed) == (5, 1)
    items = list(campaign.items.order_by("pk"))
    assert items[4].judge_errors == 1 and (items[4].route, items[4].route_reason) == ("human", "judge_error")
    choices = {j.item_id: j.choice for j in Judgment.objects.filter(item__campaign=campaign, source="llm")}
    assert choices == {item.pk: ("a" if n % 3 != 0 else "b") for n, item in enumerate(items) if n != 4}
    assert all(i.state == ItemState.DONE for n, i in enumerate(items) if n != 4)
    garbage_calls = JudgeCall.objects.filter(job=job, item=items[4])
    assert [c.parsed for c in garbage_calls] == ["error", "error"]
    assert garbage_calls[0].raw_output == "I will not answer in the format."
    assert leased_item_ids(campaign, make_user()) == [items[4].pk]


def test_http_judge_time_out_fails_the_job_and_leaves_items_for_humans(worker, make_campaign, staff):
    with ScriptedJudgeServer(lambda body: Scripted(text="[[A]]", delay_s=5)) as server:
        judge = model_register(
            name="slow-judge",
            role="judge",
            backend="openai",
            base_url=server.base_url,
            remote_model="judge",
            timeout_s=0.5,
        )
        campaign = campaign_with_items(make_campaign, judge, [pair(i, True) for i in range(2)])
        job = judging.judge_job_create(campaign=campaign, model=judge, created_by=staff, max_attempts=1)
        assert wait_for(lambda: routed(campaign), timeout=120), worker.log.read_text()[-3000:]
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "timed out" in job.error
    assert set(campaign.items.values_list("route", "route_reason", "state")) == {
        ("human", "judge_failed", ItemState.NEEDS_HUMANS)
    }
