"""The worker's model cache (workers/runtime.py): least recently used out beyond its budget, in bytes
(`PREFARENA_MODEL_CACHE_BUDGET`) or, on a CPU worker without one, in models; emptied for training; what it
drops is freed, and every gpu task hands freed memory back when it returns."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from models_hub.models import Model
from models_hub.services import model_register
from workers import runtime, tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    runtime.model_cache_clear()
    yield
    runtime.model_cache_clear()


@pytest.fixture
def policies(tiny_models: dict[str, Any]) -> list[Model]:
    """Three registered versions of the same small checkpoint: three cache entries of one known size."""
    return [
        model_register(
            name=f"cached-{n}", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
        )
        for n in range(3)
    ]


def cached_size(model: Model) -> int:
    return runtime._CACHE[("causal", model.pk, model.path, runtime.engine_for(model))].size


def test_without_a_budget_a_cpu_worker_keeps_two_models_least_recently_used_out(
    policies: list[Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(runtime.CACHE_BUDGET_ENV, raising=False)
    assert runtime.model_cache_budget() == runtime.CacheBudget(bytes=None, models=2)
    first, second, third = policies
    a, b = runtime.generator_for(first), runtime.generator_for(second)
    assert runtime.generator_for(first) is a  # a hit, and `first` is now the most recently used
    runtime.generator_for(third)
    assert runtime.generator_for(first) is a  # kept
    assert runtime.generator_for(second) is not b  # `second` was the least recently used: loaded again


def test_a_byte_budget_evicts_least_recently_used_until_the_weights_fit(
    policies: list[Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a budget of two and a half copies of the small model's weights
    first, second, third = policies
    monkeypatch.setenv(runtime.CACHE_BUDGET_ENV, "1GiB")
    a = runtime.generator_for(first)
    size = cached_size(first)
    assert size == sum(p.numel() * p.element_size() for p in [*a.model.parameters(), *a.model.buffers()])
    monkeypatch.setenv(runtime.CACHE_BUDGET_ENV, str(size * 5 // 2))
    assert runtime.model_cache_budget() == runtime.CacheBudget(bytes=size * 5 // 2, models=None)
    b = runtime.generator_for(second)
    runtime.generator_for(first)  # touch: `second` is now the least recently used
    # when a third model comes in
    runtime.generator_for(third)
    # then `second` alone went, and the cache is within its budget
    assert [key[1] for key in runtime._CACHE] == [first.pk, third.pk]
    assert sum(entry.size for entry in runtime._CACHE.values()) <= size * 5 // 2
    assert runtime.generator_for(first) is a and runtime.generator_for(second) is not b  # now first, second
    # and a budget below one model still keeps the model in use (alone)
    monkeypatch.setenv(runtime.CACHE_BUDGET_ENV, str(size // 2))
    c = runtime.generator_for(third)
    assert list(runtime._CACHE) == [("causal", third.pk, third.path, "hf")] and runtime.generator_for(third) is c


def test_clearing_the_cache_frees_the_models(policies: list[Model], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.CACHE_BUDGET_ENV, raising=False)
    loaded = weakref.ref(runtime.generator_for(policies[0]).model)
    runtime.model_cache_clear()
    assert runtime._CACHE == {} and loaded() is None


def test_an_evicted_model_is_freed(policies: list[Model], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.CACHE_BUDGET_ENV, raising=False)
    loaded = weakref.ref(runtime.generator_for(policies[0]).model)
    runtime.generator_for(policies[1])
    runtime.generator_for(policies[2])
    assert loaded() is None


def test_a_malformed_cache_budget_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.ml.errors import PermanentBackendError

    monkeypatch.setenv(runtime.CACHE_BUDGET_ENV, "half")
    with pytest.raises(PermanentBackendError, match="PREFARENA_MODEL_CACHE_BUDGET"):
        runtime.model_cache_budget()


def test_every_gpu_task_releases_device_memory_when_it_returns() -> None:
    # given an object only a reference cycle keeps (as a failed step's tensors can be)
    class Holder:
        pass

    holder = Holder()
    holder.cycle = holder  # type: ignore[attr-defined]
    collected = weakref.ref(holder)
    del holder
    gc.disable()  # only the task's release may collect it
    try:
        assert collected() is not None
        # when a gpu task returns
        for name in (
            "generation_job_run",
            "scoring_job_run",
            "battle_generate",
            "judge_job_run",
            "training_run_execute",
        ):
            assert isinstance(getattr(tasks, name), tasks.GpuTask), name
        tasks.generation_job_run.after_return("SUCCESS", None, "task-id", (1,), {}, None)
        # then it was collected
        assert collected() is None
    finally:
        gc.enable()
