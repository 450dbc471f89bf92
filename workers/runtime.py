"""Loaded models, cached per worker process, within a memory budget.

The ML modules are imported here, inside the functions, on purpose: the Celery parent process and
the web process import workers.tasks but must never import torch (CUDA may only be initialised in
the pool child that runs the job, and torch costs the web process 200+ MiB for nothing).

The cache holds generation and reward models between jobs (a best-of-N job uses one of each), least
recently used first out, within `PREFARENA_MODEL_CACHE_BUDGET` bytes ("12GiB") of weights; by default
`CACHE_DEVICE_SHARE` of the GPU's memory, or, on a CPU worker without a budget, `CACHE_CPU_MODELS` models.
A training run empties it first (`model_cache_clear`): the run's estimate assumes the device to itself.
After every gpu-queue job, `device_memory_release` hands the memory the job freed back to the device.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from annotations import images
from annotations.models import Prompt, StoredImage
from annotations.selectors import image_data_uri
from models_hub.models import GenerationEngine, Model, ModelBackend, ModelRole
from workers.ml.errors import PermanentBackendError  # torch-free

logger = logging.getLogger(__name__)

CACHE_BUDGET_ENV = "PREFARENA_MODEL_CACHE_BUDGET"
CACHE_DEVICE_SHARE = 0.5  # of the GPU's memory; the rest is for activations, KV caches and the job's own models
CACHE_CPU_MODELS = 2  # a generation model and a reward model side by side (best-of-N)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class _Entry:
    value: Any
    size: int  # bytes of its parameters and buffers


_CACHE: OrderedDict[tuple, _Entry] = OrderedDict()  # least recently used first


@dataclass(frozen=True)
class CacheBudget:
    bytes: int | None  # at most this many bytes of weights, or
    models: int | None  # at most this many models (a CPU worker without a configured budget)


def model_cache_budget() -> CacheBudget:
    """`PREFARENA_MODEL_CACHE_BUDGET` when set; else CACHE_DEVICE_SHARE of the GPU, or CACHE_CPU_MODELS models."""
    from workers.ml.memory import env_bytes

    configured = env_bytes(CACHE_BUDGET_ENV)
    if configured is not None:
        return CacheBudget(bytes=configured, models=None)
    if "torch" in sys.modules:  # a model was loaded in this process: asking costs nothing and cannot load torch
        import torch

        if torch.cuda.is_available():
            return CacheBudget(
                bytes=int(
                    torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory * CACHE_DEVICE_SHARE
                ),
                models=None,
            )
    return CacheBudget(bytes=None, models=CACHE_CPU_MODELS)


def _loaded_size(value: Any) -> int:
    model = getattr(value, "model", None)
    if model is None:
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _checkpoint_size(path: str) -> int:
    """Bytes of a checkpoint's weight files: what loading it will take, before it is loaded (dtype aside)."""
    folder = Path(path)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in _WEIGHT_SUFFIXES and f.is_file())


def _evict_beyond(budget: CacheBudget, incoming: int, keep: tuple | None = None) -> None:
    """Drop least recently used entries until `incoming` more bytes (or one more model) fit; `keep` stays."""
    evicted = False
    while _CACHE:
        if budget.models is not None:
            fits = len(_CACHE) + (0 if keep else 1) <= budget.models
        else:
            fits = sum(e.size for e in _CACHE.values()) + incoming <= (budget.bytes or 0)
        candidates = [key for key in _CACHE if key != keep]
        if fits or not candidates:
            break
        key = candidates[0]
        entry = _CACHE.pop(key)
        logger.info("model cache: evicted %s (%d bytes)", key, entry.size)
        del entry
        evicted = True
    if evicted:
        device_memory_release()


def _cached(key: tuple, build: Any, path: str | None = None) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].value
    budget = model_cache_budget()
    _evict_beyond(budget, _checkpoint_size(path) if path else 0)  # make room before loading, not after
    value = build()
    _CACHE[key] = _Entry(value, _loaded_size(value))
    _evict_beyond(model_cache_budget(), 0, keep=key)  # the measured size; the model in use always stays
    return value


def model_cache_clear() -> None:
    """Drop every cached model and give their memory back: a training run needs the device to itself."""
    _CACHE.clear()
    device_memory_release()


def device_memory_release() -> None:
    """Collect unreachable objects (a model dropped by a job, tensors of a failed step held in a cycle) and,
    where CUDA is initialised, return the caching allocator's free blocks to the device, so the next job (or
    another process on the GPU) sees them free. Never imports torch."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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

    return _cached(("causal", model.pk, model.path, chosen), build, model.path)


def image_generator_for(model: Model) -> Any:
    """An image model's generator (`workers/ml/image_generation.py`): `generate(prompt, seed) -> bytes`.

    An endpoint (openai backend) answers /v1/images/generations; a diffusers pipeline folder is loaded once
    into the model cache (on the GPU when there is one; the optional `diffusers` extra)."""
    if model.backend == ModelBackend.OPENAI:
        from workers.ml.image_generation import OpenAIImages

        return OpenAIImages(
            base_url=model.base_url, model=model.remote_model, api_key=_api_key(model), timeout_s=model.timeout_s
        )

    def build() -> Any:
        from workers.ml.errors import PermanentBackendError
        from workers.ml.image_generation import DiffusersImages

        try:
            return DiffusersImages(model.path, steps=settings.PREFARENA_DIFFUSERS_STEPS, dtype=model.dtype)
        except PermanentBackendError:
            raise
        except Exception as exc:
            raise PermanentBackendError(f"{model.label}: cannot load the pipeline {model.path}: {exc}") from exc

    return _cached(("diffusers", model.pk, model.path), build, model.path)


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
    return _cached(("reward", model.pk, model.path), build, model.path)


VISION_PROMPTS_NAMED = 10  # prompts a refusal names before "and N more"


def vision_prompts_refusal(models: Sequence[Model], prompts: Sequence[Prompt]) -> str | None:
    """Why these prompts cannot go to these models, or None: the prompts holding images (`image_url` parts) and
    the models that cannot see them (`Model.sees_images`: a local checkpoint's chat template would render the
    parts as text). Checked when a generation job is created and again when it runs."""
    blind = [model.label for model in models if not model.sees_images]
    if not blind:
        return None
    with_images = [prompt.pk for prompt in prompts if images.prompt_image_hashes(prompt.content)]
    if not with_images:
        return None
    named = ", ".join(str(pk) for pk in with_images[:VISION_PROMPTS_NAMED])
    more = f" and {len(with_images) - VISION_PROMPTS_NAMED} more" if len(with_images) > VISION_PROMPTS_NAMED else ""
    return (
        f"{len(with_images)} prompt(s) hold images (prompt {named}{more}) and {', '.join(blind)} read(s) text only "
        "(a local checkpoint): use a model behind an OpenAI-compatible endpoint that accepts images, or prompts "
        "without images"
    )


def prompt_for_model(content: Any, data_uris: dict[str, str]) -> Any:
    """A stored prompt as a model that sees images is sent it: each `sha256:<hex>` image as its data URI (read
    through the storage once per hash into `data_uris`, a cache the caller keeps for a batch). The stored prompt
    is left as it is."""
    hashes = images.prompt_image_hashes(content)
    if not hashes:
        return content
    missing = [digest for digest in hashes if digest not in data_uris]
    if missing:
        stored = {image.sha256: image for image in StoredImage.objects.filter(sha256__in=missing)}
        for digest in missing:
            if digest not in stored:
                raise PermanentBackendError(f"the prompt names image sha256:{digest}, which is not stored")
            data_uris[digest] = image_data_uri(stored[digest])
    return images.prompt_images_resolve(content, data_uris.__getitem__)


def sampling_params(model: Model, *, max_new_tokens: int | None, temperature: float | None, top_p: float | None) -> Any:
    from workers.ml.types import SamplingParams

    return SamplingParams(
        max_new_tokens=max_new_tokens or model.max_new_tokens,
        temperature=model.temperature if temperature is None else temperature,
        top_p=model.top_p if top_p is None else top_p,
    )
