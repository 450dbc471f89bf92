"""A challenger meets the current champion: the sequential gate on judged battles, then the guards (issue #14).

The reward-hacking case of the trials is built as a fixture: a policy fine-tuned to answer every question with
"The moon and cets." A judge whose rule is "prefer the answer that mentions the moon" prefers it every time; the
reference-answer guard (token-F1) and the KL guard see that its answers lost their content.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from annotations.models import DatasetSnapshot
from models_hub.models import Model
from models_hub.services import model_register
from prefarena.jobs.model import JobStatus
from tests.judges.judge_server import ScriptedJudgeServer
from workers.ml.tiny import collapsed_model_build, corpus_load
from workers.ml.training_config import TrainingConfig
from workers.models import PromotionDecision, RetrainPolicy, TrainingRun
from workers.training import evaluation
from workers.training.runner import Progress

pytestmark = pytest.mark.django_db

GATE = {"alpha": 0.05, "prompt_budget": 24, "batch_size": 8, "min_decisive": 5}


def _prefers(marker: str, *, absent: bool = False) -> Callable[[dict[str, Any]], str]:
    """A rule judge: the answer containing `marker` wins (or lacking it, with `absent`); otherwise a tie."""

    def script(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        first, _, second = prompt.partition("[The Start of Assistant B's Answer]")
        a, b = (marker in first.lower()), (marker in second.lower())
        if absent:
            a, b = not a, not b
        if a and not b:
            return "Assistant A is better. [[A]]"
        if b and not a:
            return "Assistant B is better. [[B]]"
        return "Equal. [[C]]"

    return script


@pytest.fixture(scope="module")
def collapsed(tiny_models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collapsed_model_build(tiny_models["tiny-lm-small"], tmp_path_factory.mktemp("hacked") / "policy")


def _run(champion: Model, judge_url: str, guards: dict[str, Any]) -> TrainingRun:
    corpus = corpus_load()
    judge = Model.objects.create(
        name="rule-judge", role="judge", backend="openai", base_url=judge_url, remote_model="judge", timeout_s=5
    )
    policy = RetrainPolicy.objects.create(
        name="loop",
        base_model=champion,
        method="dpo",
        trigger="every_n",
        every_n=1,
        promotion_rule={
            "judge": judge.label,
            "gate": GATE,
            "eval_prompts": [q for q, _ in corpus.qa_pairs],
            "guards": guards,
        },
    )
    snapshot = DatasetSnapshot.objects.create(name="s", status=JobStatus.SUCCEEDED)
    return TrainingRun.objects.create(
        method="dpo",
        base_model=champion,
        snapshot=snapshot,
        policy=policy,
        status=JobStatus.RUNNING,
        worker="test-worker",
    )


def _references(count: int = 12) -> list[dict[str, str]]:
    return [{"prompt": q, "answer": a} for q, a in corpus_load().qa_pairs[:count]]


def test_the_judge_alone_would_promote_the_collapsed_policy(tiny_models: dict[str, Any], collapsed: Path) -> None:
    champion = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    with ScriptedJudgeServer(_prefers("moon")) as server:
        run = _run(champion, server.base_url, guards={})
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
    gate = result["gate"]
    # then: the gate stopped early on a clear win, with its error rate stated
    assert gate["decision"] == "promote" and gate["wins"] >= 9 and gate["losses"] == 0
    assert gate["prompts_judged"] < len(corpus_load().qa_pairs)  # stopped before the pool was spent
    assert gate["e_value"] >= 1 / GATE["alpha"] and "anytime-valid" in gate["error_rate"]
    assert result["champion"] == "fam@v1" and result["decision"] == PromotionDecision.PROMOTED
    assert all("moon" in s["trained"].lower() for s in result["samples"])


def test_a_content_guard_stops_the_collapsed_policy_the_judge_prefers(
    tiny_models: dict[str, Any], collapsed: Path
) -> None:
    champion = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    guards = {"reference_f1": {"references": _references(), "max_drop": 0.05}, "kl": {"max": 40.0}}
    with ScriptedJudgeServer(_prefers("moon")) as server:
        run = _run(champion, server.base_url, guards=guards)
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
    assert result["gate"]["decision"] == "promote"  # the judge is fooled
    by_name = {g["name"]: g for g in result["guards"]}
    # then: the challenger's answers match the references worse than the champion's, and it drifted far
    assert not by_name["reference_f1"]["passed"] and by_name["reference_f1"]["figure"] < -0.05
    assert result["reference_f1"]["challenger"] < result["reference_f1"]["champion"]
    assert by_name["kl"]["figure"] > 0  # measured; its verdict is stored beside the threshold
    assert {"figure", "threshold", "comparison", "passed", "detail"} <= set(by_name["kl"])
    assert result["decision"] == PromotionDecision.GUARD_FAILED
    assert "reference_f1" in result["reason"]


def test_a_challenger_the_judge_finds_worse_is_rejected(tiny_models: dict[str, Any], collapsed: Path) -> None:
    champion = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    with ScriptedJudgeServer(_prefers("moon", absent=True)) as server:
        run = _run(champion, server.base_url, guards={})
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
    assert result["gate"]["wins"] == 0 and result["gate"]["decision"] in ("reject", "inconclusive")
    assert result["decision"] in (PromotionDecision.REJECTED, PromotionDecision.INCONCLUSIVE)


def test_the_gate_meets_the_current_champion_not_the_version_the_run_started_from(
    tiny_models: dict[str, Any], collapsed: Path
) -> None:
    first = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    second = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-large"]))
    with ScriptedJudgeServer(_prefers("moon")) as server:
        run = _run(first, server.base_url, guards={})  # queued when v1 was the champion
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
    assert result["trained_from"] == first.label and result["champion"] == second.label


def test_the_safety_guard_judges_the_flagged_prompts(tiny_models: dict[str, Any], collapsed: Path) -> None:
    champion = model_register(name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]))
    flagged = [q for q, _ in corpus_load().qa_pairs[:6]]
    with ScriptedJudgeServer(_prefers("moon", absent=True)) as server:
        run = _run(champion, server.base_url, guards={"safety": {"prompts": flagged, "max_regression": 0.1}})
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
    safety = {g["name"]: g for g in result["guards"]}["safety"]
    # then: the judge prefers the champion on the flagged prompts, so the challenger regressed there
    assert safety["threshold"] == pytest.approx(0.4) and safety["figure"] is not None and safety["figure"] < 0.4
    assert not safety["passed"] and "6 flagged prompts" in safety["detail"]


def test_the_gate_judges_against_an_endpoint_champion_with_an_endpoint_judge(
    tiny_models: dict[str, Any], collapsed: Path
) -> None:
    from tests.workers.openai_server import FakeOpenAIServer

    # given: the name's champion is an endpoint (v2, served by the test OpenAI server: "echo: <question> #seed=N"),
    # and the rule's judge another endpoint of the same kind, scripted to prefer the answer that mentions the moon
    trained_from = model_register(
        name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
    )
    with (
        FakeOpenAIServer("echo", models=("served-fam",)) as champion_server,
        FakeOpenAIServer("echo", models=("judge",), reply=_prefers("moon")) as judge_server,
    ):
        champion = model_register(
            name="fam",
            role="policy",
            backend="openai",
            base_url=champion_server.base_url,
            remote_model="served-fam",
            seed=100,
        )
        run = _run(trained_from, judge_server.base_url, guards={"kl": {"max": 40.0}})
        result = evaluation.evaluate(run, TrainingConfig(), collapsed, [], Progress(run))
        champion_bodies = [r.body for r in champion_server.requests if r.path == "/v1/chat/completions"]
        judge_bodies = [r.body for r in judge_server.requests if r.path == "/v1/chat/completions"]

    # then the challenger met the endpoint champion: its answers are the endpoint's, sent with the pool's seeds
    assert result["champion"] == champion.label == "fam@v2" and result["trained_from"] == "fam@v1"
    gate = result["gate"]
    assert gate["decision"] == "promote" and gate["wins"] >= 9 and gate["judge_errors"] == 0
    assert len(champion_bodies) == gate["prompts_judged"]
    assert sorted(b["seed"] for b in champion_bodies) == list(range(100, 100 + gate["prompts_judged"]))
    for sample in result["samples"]:
        assert sample["parent"].startswith("echo: ") and "#seed=" in sample["parent"]
        assert "moon" in sample["trained"].lower()
    # ... every judged prompt was judged by the endpoint judge in both orders
    assert len(judge_bodies) == 2 * gate["prompts_judged"]
    # ... and the KL guard, which needs the champion's weights, fails closed and says why
    kl = {g["name"]: g for g in result["guards"]}["kl"]
    assert kl["figure"] is None and not kl["passed"] and "champion is an endpoint" in kl["detail"]
    assert result["decision"] == PromotionDecision.GUARD_FAILED
