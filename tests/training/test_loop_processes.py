"""The closed loop, two rounds, through real processes: beat fires the policy, a default-queue worker builds the
snapshot, a gpu-queue worker trains and evaluates the challenger against the champion (issue #14).

A second policy on another name runs the same round with a content guard: its challenger learned the rule by
dropping its answers' content, the judge prefers it, the reference-answer guard stops it.

Annotators follow a learnable rule in round 1 ("prefer the answer about the moon"), and the policy's judge applies
the same rule. Round 1's challenger learns it and beats the champion fam@v1: it becomes the champion fam@v2 and
enters the arena. Round 2's annotators turn against the rule (a new campaign, which the
edited policy now reads); the policy trains fam@v3 from the champion fam@v2 (not from v1) and meets fam@v2 (not v1):
the judge prefers v2, so v3 is not promoted, and no live battle ever pairs it.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from annotations import services as annotation_services
from annotations.models import Prompt, Response
from arena import services as arena_services
from arena.identity import VoterIdentity
from arena.models import Battle
from models_hub.models import Model
from models_hub.selectors import model_get_by_label
from models_hub.services import model_register
from prefarena.jobs.model import JobStatus
from tests.celery_worker import ROOT, WorkerProcess, wait_for
from tests.celery_worker import test_database_url as database_url
from tests.deploy.processes import Process
from tests.judges.judge_server import ScriptedJudgeServer
from workers.ml.tiny import corpus_load
from workers.models import PromotionDecision, TrainingRun
from workers.training import services as training_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MOON = "The moon is bright tonight and the sky is clear."
TEMPLATES = ["{q}", "Please answer: {q}", "Tell me, {q}"]


def moon_judge(body: dict[str, Any]) -> str:
    """The rule judge: the answer that mentions the moon wins; both or neither: a tie."""
    prompt = body["messages"][-1]["content"]
    first, _, second = prompt.partition("[The Start of Assistant B's Answer]")
    a, b = "moon" in first.lower(), "moon" in second.lower()
    if a != b:
        return "Assistant A is better. [[A]]" if a else "Assistant B is better. [[B]]"
    return "Equal. [[C]]"


def annotate(campaign: Any, *, prefer_moon: bool, rounds: int, seed: int) -> None:
    """Scripted annotators: every prompt gets the moon sentence against the reference answer."""
    rng = random.Random(seed)
    for _ in range(rounds):
        for template in TEMPLATES:
            for question, answer in corpus_load().qa_pairs:
                prompt = Prompt.objects.create(content=template.format(q=question))
                texts = [MOON, answer] if rng.random() < 0.5 else [answer, MOON]
                responses = [
                    Response.objects.create(prompt=prompt, text=t, model_name=f"m{n}") for n, t in enumerate(texts)
                ]
                moon_first = texts[0] == MOON
                choice = "a" if moon_first == prefer_moon else "b"
                annotation_services.judgment_record_external(
                    campaign=campaign,
                    prompt=prompt,
                    responses=responses,
                    source="llm",
                    choice=choice,
                    judge_name="rule",
                )


def policy_run(policy_id: int, number: int) -> TrainingRun | None:
    runs = TrainingRun.objects.filter(policy_id=policy_id).order_by("created_at").select_related("output_model")
    return runs[number - 1] if runs.count() >= number else None


def finished(policy_id: int, number: int) -> bool:
    run = policy_run(policy_id, number)
    return run is not None and run.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def test_two_rounds_iterate_on_the_champion_and_a_worse_challenger_stays_out(
    tmp_path: Path, settings: Any, tiny_models: dict[str, Any], make_campaign: Any, staff: Any
) -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    env = {
        "OMP_NUM_THREADS": "1",
        "PREFARENA_TRAINING_DIR": str(settings.PREFARENA_TRAINING_DIR),
        "PREFARENA_SNAPSHOT_DIR": str(settings.PREFARENA_SNAPSHOT_DIR),
        "RETRAIN_POLICIES_CHECK_SECONDS": "2",
    }
    champion = model_register(
        name="fam", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]), in_arena=True
    )
    other = model_register(
        name="other", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-large"]), in_arena=True
    )
    campaign = make_campaign(kind="pairwise")
    annotate(campaign, prefer_moon=True, rounds=1, seed=0)
    with ScriptedJudgeServer(moon_judge) as judge_server:
        judge = Model.objects.create(
            name="rule-judge", role="judge", backend="openai", base_url=judge_server.base_url, remote_model="j"
        )
        policy = training_services.retrain_policy_create(
            name="loop",
            base_model=champion,
            method="dpo",
            trigger="every_n",
            every_n=60,
            snapshot_filters={"campaigns": [campaign.pk]},
            hyperparameters={
                "max_steps": 40,
                "learning_rate": 3e-3,
                "batch_size": 8,
                "warmup_ratio": 0.0,
                "max_length": 128,
                "eval_fraction": 0.25,
            },
            enter_arena=True,
            promotion_rule={
                "judge": judge.label,
                "gate": {"alpha": 0.05, "prompt_budget": 48, "batch_size": 8, "min_decisive": 5},
                "eval_prompts": [q for q, _ in corpus_load().qa_pairs],
                "guards": {"held_out_accuracy": {"min": 0.5}},
            },
            created_by=staff,
        )
        # beside it, the same loop on another name with a content guard: its challenger learns the judge's rule
        # so well that its answers lose their content ("The moon is bright tonight..." to every question)
        hacky = model_register(
            name="hacky", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
        )
        references = [{"prompt": q, "answer": a} for q, a in corpus_load().qa_pairs[:12]]
        guarded = training_services.retrain_policy_create(
            name="guarded",
            base_model=hacky,
            method="dpo",
            trigger="every_n",
            every_n=60,
            snapshot_filters={"campaigns": [campaign.pk]},
            hyperparameters=policy.hyperparameters,
            enter_arena=True,
            promotion_rule={
                **policy.promotion_rule,
                "guards": {"reference_f1": {"references": references, "max_drop": 0.05}},
            },
            created_by=staff,
        )
        processes = [
            WorkerProcess(tmp_path / "gpu.log", queues="gpu", pool="prefork", env=env),
            WorkerProcess(tmp_path / "default.log", queues="default", pool="prefork", env=env),
        ]
        beat_env = {"DATABASE_URL": database_url(), "DEBUG": "1", **env}
        beat = Process(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "prefarena",
                "beat",
                "-s",
                str(tmp_path / "beat-schedule"),
                "-l",
                "info",
            ],
            tmp_path / "beat.log",
            {**os.environ, **beat_env},
            cwd=ROOT,
        )
        try:
            # round 1: beat fires, the challenger learns the rule and beats fam@v1
            assert wait_for(lambda: finished(policy.pk, 1) and finished(guarded.pk, 1), timeout=420, interval=1), _logs(
                tmp_path
            )
            # the guarded loop: the judge prefers the collapsed challenger, the reference guard stops it
            hacked = policy_run(guarded.pk, 1)
            assert hacked is not None and hacked.status == JobStatus.SUCCEEDED, hacked and hacked.error
            assert hacked.evaluation["gate"]["decision"] == "promote", hacked.evaluation["gate"]
            assert hacked.decision == PromotionDecision.GUARD_FAILED, hacked.evaluation.get("reason")
            assert hacked.evaluation["guards"][0]["name"] == "reference_f1"
            assert not hacked.evaluation["guards"][0]["passed"]
            hacked_version = Model.objects.get(pk=hacked.output_model_id)
            assert (hacked_version.is_current, hacked_version.in_arena) == (False, False)
            assert model_get_by_label("hacky") == hacky
            first = policy_run(policy.pk, 1)
            assert first is not None and first.status == JobStatus.SUCCEEDED, (first and first.error, _logs(tmp_path))
            assert first.base_model == champion and first.evaluation["champion"] == "fam@v1"
            assert first.decision == PromotionDecision.PROMOTED, first.evaluation.get("reason")
            v2 = Model.objects.get(pk=first.output_model_id)
            assert (v2.label, v2.is_current, v2.in_arena) == ("fam@v2", True, True)
            assert model_get_by_label("fam") == v2
            # round 2: the team's annotators turn against the rule, in a new campaign the policy now reads (edited)
            turned = make_campaign(kind="pairwise")
            annotate(turned, prefer_moon=False, rounds=3, seed=1)
            training_services.retrain_policy_update(policy=policy, snapshot_filters={"campaigns": [turned.pk]})
            assert wait_for(lambda: finished(policy.pk, 2), timeout=420, interval=1), _logs(tmp_path)
        finally:
            beat.stop()
            for worker in processes:
                worker.stop()
    second = policy_run(policy.pk, 2)
    assert second is not None and second.status == JobStatus.SUCCEEDED, second and second.error
    # then: round 2 trained from the champion v2 and met v2
    assert second.base_model == v2 and second.evaluation["trained_from"] == "fam@v2"
    assert second.evaluation["champion"] == "fam@v2"
    v3 = Model.objects.get(pk=second.output_model_id)
    assert v3.label == "fam@v3" and v3.parent == v2
    # the judge preferred v2: v3 is not promoted, stays out of the arena, and the bare name is still v2
    assert second.decision in (PromotionDecision.REJECTED, PromotionDecision.INCONCLUSIVE), second.evaluation
    assert second.evaluation["gate"]["losses"] > second.evaluation["gate"]["wins"]
    assert (v3.is_current, v3.in_arena) == (False, False) and model_get_by_label("fam") == v2
    # and no live battle pairs it
    sides = set()
    for n in range(30):
        identity = VoterIdentity(session_hash=f"s{n}", ip_hash=f"ip{n}", user_id=None)
        battle = arena_services.battle_create_live(prompt=f"Question {n}?", identity=identity)
        sides |= {battle.model_a_id, battle.model_b_id}
    assert v3.pk not in sides and sides <= {champion.pk, other.pk, v2.pk}
    assert Battle.objects.filter(model_a=v3).count() + Battle.objects.filter(model_b=v3).count() == 0
    # the loop's history, as the API shows it
    assert [r.decision for r in TrainingRun.objects.filter(policy=policy).order_by("created_at")] == [
        PromotionDecision.PROMOTED,
        second.decision,
    ]


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
