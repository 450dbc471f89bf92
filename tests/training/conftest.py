"""Fixtures for training tests: a campaign whose preferences carry a learnable rule, and its snapshot.

The rule: the preferred answer goes on after its first sentence (a second sentence follows), the
rejected one stops. The tiny models almost never write two sentences, so "follows the rule" is
measurable on samples: `follows_rule(text)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from annotations import services as annotation_services
from annotations.models import DatasetSnapshot, Prompt, Response
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess

LEASE_SECONDS = 6  # a killed worker's run is taken over quickly

TEMPLATES = ["{q}", "Please answer: {q}", "Tell me, {q}", "Quick question: {q}"]


def follows_rule(text: str) -> bool:
    return text.count(".") >= 2


def pattern_rows(seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected): the chosen answer adds a second sentence."""
    from workers.ml.tiny import corpus_load

    corpus = corpus_load()
    rng = random.Random(seed)
    rows = []
    for template in TEMPLATES:
        for question, answer in corpus.qa_pairs:
            rows.append((template.format(q=question), f"{answer} {rng.choice(corpus.sentences)}", answer))
    return rows


@pytest.fixture(autouse=True)
def training_dirs(settings: Any, tmp_path: Any) -> None:
    settings.PREFARENA_TRAINING_DIR = tmp_path / "training"
    settings.PREFARENA_SNAPSHOT_DIR = tmp_path / "snapshots"


@pytest.fixture
def pattern_campaign(make_campaign: Callable[..., Any]) -> Callable[..., Any]:
    """A pairwise campaign whose LLM-judge preferences follow the rule; chosen side is random."""

    def make(rows: list[tuple[str, str, str]] | None = None, seed: int = 0, campaign: Any = None) -> Any:
        campaign = campaign or make_campaign(kind="pairwise")
        rng = random.Random(seed)
        for prompt_text, chosen, rejected in rows if rows is not None else pattern_rows(seed):
            prompt = Prompt.objects.create(content=prompt_text)
            swap = rng.random() < 0.5
            texts = (rejected, chosen) if swap else (chosen, rejected)
            responses = [
                Response.objects.create(prompt=prompt, text=t, model_name=f"m{n}") for n, t in enumerate(texts)
            ]
            annotation_services.judgment_record_external(
                campaign=campaign,
                prompt=prompt,
                responses=responses,
                source="llm",
                choice="b" if swap else "a",
                judge_name="rule-judge",
            )
        return campaign

    return make


@pytest.fixture
def build_snapshot(staff: Any) -> Callable[..., DatasetSnapshot]:
    """Snapshot a campaign and build it synchronously (the task body), as the default-queue worker would."""
    from annotations.snapshots import snapshot_build, snapshot_create

    def make(campaign: Any, formats: tuple[str, ...] = ("pairwise", "kto")) -> DatasetSnapshot:
        snapshot = snapshot_create(
            name=f"snap-{campaign.pk}",
            filters={"campaigns": [campaign.pk]},
            formats=list(formats),
            options={},
            created_by=staff,
        )
        snapshot_build(snapshot.pk)
        snapshot.refresh_from_db()
        assert snapshot.status == "succeeded", snapshot.error
        return snapshot

    return make


@pytest.fixture
def tiny_policy(tiny_models: dict[str, Any]) -> Any:
    return model_register(
        name="tiny-policy", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
    )


@pytest.fixture
def tiny_reward(tiny_models: dict[str, Any]) -> Any:
    return model_register(name="tiny-rm", role="reward", backend="transformers", path=str(tiny_models["tiny-reward"]))


@pytest.fixture
def start_worker(tmp_path: Path, settings: Any) -> Any:
    """Starts real gpu-queue Celery workers (prefork, Redis broker, the test database); stopped after the test."""
    settings.WORKERS_JOB_LEASE_SECONDS = LEASE_SECONDS
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path / f"worker-{len(workers)}.log",
            queues="gpu",
            pool="prefork",
            env={
                "WORKERS_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
                "OMP_NUM_THREADS": "1",  # 2-core CI machine: one torch thread in the pool child
                "PREFARENA_TRAINING_DIR": str(settings.PREFARENA_TRAINING_DIR),
                "PREFARENA_SNAPSHOT_DIR": str(settings.PREFARENA_SNAPSHOT_DIR),
                **env,
            },
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


__all__ = ["follows_rule", "pattern_rows", "settings"]
