"""Loaded models, cached per worker process.

The ML modules are imported here, inside the functions, on purpose: the Celery parent process and
the web process import workers.tasks but must never import torch (CUDA may only be initialised in
the pool child that runs the job, and torch costs the web process 200+ MiB for nothing).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from models_hub.models import Model, ModelBackend

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 2  # a generation model and a reward model side by side (best-of-N)


def _cached(key: tuple, build: Any) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    while len(_CACHE) >= _CACHE_SIZE:
        _CACHE.popitem(last=False)
    _CACHE[key] = build()
    return _CACHE[key]


def _api_key(model: Model) -> str | None:
    from workers.ml.errors import PermanentBackendError

    if not model.api_key_env:
        return None
    key = os.environ.get(model.api_key_env)
    if key is None:
        raise PermanentBackendError(f"environment variable {model.api_key_env} (API key of {model.label}) is not set")
    return key


def generator_for(model: Model) -> Any:
    """An object with `generate(prompts, seeds, params) -> list[Completion]` for this model."""
    if model.backend == ModelBackend.OPENAI:
        from workers.ml.openai_backend import OpenAIChat

        return OpenAIChat(
            base_url=model.base_url,
            model=model.remote_model,
            api_key=_api_key(model),
            timeout_s=model.timeout_s,
            max_concurrency=model.max_concurrency,
        )

    def build() -> Any:
        from workers.ml.errors import PermanentBackendError
        from workers.ml.generation import CausalLM

        try:
            return CausalLM(model.path, dtype=model.dtype)
        except Exception as exc:  # any loader error (OSError, SafetensorError, ...) means "cannot load"
            raise PermanentBackendError(f"{model.label}: cannot load {model.path}: {exc}") from exc

    return _cached(("causal", model.pk, model.path), build)


def reward_for(model: Model) -> Any:
    """An object with `score(pairs, batch_size=...) -> list[float]` for this reward model."""

    def build() -> Any:
        from workers.ml.errors import PermanentBackendError
        from workers.ml.reward import RewardModel

        try:
            return RewardModel(model.path, dtype=model.dtype)
        except Exception as exc:  # any loader error (OSError, SafetensorError, ...) means "cannot load"
            raise PermanentBackendError(f"{model.label}: cannot load {model.path}: {exc}") from exc

    if model.backend != ModelBackend.TRANSFORMERS:
        from workers.ml.errors import PermanentBackendError

        raise PermanentBackendError(f"{model.label}: reward models must be local transformers checkpoints")
    return _cached(("reward", model.pk, model.path), build)


def sampling_params(model: Model, *, max_new_tokens: int | None, temperature: float | None, top_p: float | None) -> Any:
    from workers.ml.types import SamplingParams

    return SamplingParams(
        max_new_tokens=max_new_tokens or model.max_new_tokens,
        temperature=model.temperature if temperature is None else temperature,
        top_p=model.top_p if top_p is None else top_p,
    )
