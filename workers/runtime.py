"""Loaded models, cached per worker process.

The ML modules are imported here, inside the functions, on purpose: the Celery parent process and
the web process import workers.tasks but must never import torch (CUDA may only be initialised in
the pool child that runs the job, and torch costs the web process 200+ MiB for nothing).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from django.conf import settings

from models_hub.models import GenerationEngine, Model, ModelBackend, ModelRole

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


def engine_for(model: Model, override: str | None = None) -> str:
    """The engine that generates with this local checkpoint, "hf" or "vllm" (workers/ml/vllm_engine.py).

    `override` ("auto", "hf", "vllm") replaces the model's choice; otherwise a model registered with
    engine "default" takes the worker's PREFARENA_GENERATION_ENGINE.
    """
    from workers.ml.vllm_engine import engine_choose

    requested = override or model.engine
    if requested == GenerationEngine.DEFAULT:
        requested = settings.PREFARENA_GENERATION_ENGINE
    if model.role == ModelRole.JUDGE and requested == GenerationEngine.AUTO:
        # A local judge's verdict distribution is read from transformers' logits (workers/ml/judge.py);
        # vLLM would only give sampled verdicts. Asked for by name ("vllm"), it is still honoured.
        requested = GenerationEngine.HF
    return engine_choose(requested, model.label)


def generator_for(model: Model, *, engine: str | None = None) -> Any:
    """An object with `generate(prompts, seeds, params) -> list[Completion]` for this model.

    For a local checkpoint, `engine` overrides the model's engine (see `engine_for`): callers that use
    transformers' internals (token streaming, a sampler shared with an unregistered model) pass "hf".
    """
    if model.backend == ModelBackend.OPENAI:
        from workers.ml.openai_backend import OpenAIChat

        return OpenAIChat(
            base_url=model.base_url,
            model=model.remote_model,
            api_key=_api_key(model),
            timeout_s=model.timeout_s,
            max_concurrency=model.max_concurrency,
        )

    chosen = engine_for(model, engine)

    def build() -> Any:
        from workers.ml.errors import PermanentBackendError

        try:
            if chosen == GenerationEngine.VLLM:
                from workers.ml.vllm_engine import VLLMCausalLM

                return VLLMCausalLM(model.path, dtype=model.dtype)
            from workers.ml.generation import CausalLM

            return CausalLM(model.path, dtype=model.dtype)
        except Exception as exc:  # any loader error (OSError, SafetensorError, ...) means "cannot load"
            raise PermanentBackendError(f"{model.label}: cannot load {model.path}: {exc}") from exc

    return _cached(("causal", model.pk, model.path, chosen), build)


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
