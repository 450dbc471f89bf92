"""The evaluation battles of a new version against its parent, judged by a registered judge over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from models_hub.models import Model
from tests.judges.judge_server import ScriptedJudgeServer
from workers.training.evaluation import judged_battles
from workers.training.services import promotion_decide


def _prefers(marker: str):  # noqa: ANN202 - a judge script
    """A judge that picks whichever answer contains `marker` (in either position), else a tie."""

    def script(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        first, _, second = prompt.partition("[The Start of Assistant B's Answer]")
        if marker in first and marker not in second:
            return "Assistant A is better. [[A]]"
        if marker in second and marker not in first:
            return "Assistant B is better. [[B]]"
        return "Equal. [[C]]"

    return script


@pytest.mark.django_db
def test_battles_against_the_parent_count_position_swapped_verdicts_and_feed_the_promotion_rule():
    samples = [
        {"prompt": f"q{k}", "trained": f"answer {k} GOOD" if k < 8 else f"answer {k}", "parent": f"plain {k}"}
        for k in range(10)
    ]
    with ScriptedJudgeServer(_prefers("GOOD")) as server:
        Model.objects.create(
            name="judge", role="judge", backend="openai", base_url=server.base_url, remote_model="judge", timeout_s=5
        )
        result = judged_battles("judge", samples)
        calls = len(server.requests)
    # then: 8 wins (the judge saw each pair in both orders and agreed), 2 ties, none lost
    assert calls == 20
    assert (result["wins"], result["losses"], result["ties"], result["errors"]) == (8, 0, 2, 0)
    assert result["win_rate"] == pytest.approx(0.9)
    assert 0.5 < result["win_rate_ci_low"] < 0.9 < result["win_rate_ci_high"] <= 1.0
    allowed, _ = promotion_decide({"battles": result}, {"judge": "judge", "min_win_rate_lower_bound": 0.5})
    assert allowed


@pytest.mark.django_db
def test_a_parent_preferring_judge_blocks_promotion():
    samples = [{"prompt": f"q{k}", "trained": f"t {k}", "parent": f"p {k} GOOD"} for k in range(6)]
    with ScriptedJudgeServer(_prefers("GOOD")) as server:
        Model.objects.create(
            name="judge", role="judge", backend="openai", base_url=server.base_url, remote_model="judge", timeout_s=5
        )
        result = judged_battles("judge", samples)
    assert (result["wins"], result["losses"]) == (0, 6) and result["win_rate"] == 0.0
    allowed, reason = promotion_decide({"battles": result}, {"judge": "judge", "min_win_rate_lower_bound": 0.5})
    assert not allowed and reason
