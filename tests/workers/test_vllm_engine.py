"""The generation engine of local checkpoints: vLLM where it can run, else transformers (workers/ml/vllm_engine.py).

This machine has neither vLLM nor a GPU, so the vLLM path itself does not run here. What runs: the choice and
its fallback through `workers.runtime.generator_for` (a registered model, the worker's default setting), and, in
the last test, `VLLMCausalLM`'s plumbing against a stand-in `vllm` module (said so there).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from models_hub.services import model_register
from workers import runtime

pytestmark = pytest.mark.django_db

VLLM_ABSENT = importlib.util.find_spec("vllm") is None
needs_vllm_absent = pytest.mark.skipif(not VLLM_ABSENT, reason="vllm is installed here: the fallback is not taken")


def _fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "workers.ml.vllm_engine"]


@needs_vllm_absent
def test_vllm_requested_without_vllm_says_so_once_and_generates_what_transformers_generates(tiny_models, caplog):
    from workers.ml.generation import CausalLM
    from workers.ml.types import SamplingParams

    # given a checkpoint registered with engine "vllm" on a worker without vLLM
    model = model_register(
        name="fast-tiny", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]), engine="vllm"
    )
    prompts = ["What do bees make?", "Where does the sun rise?", "What colour is the sky?"]
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95)
    # when a job asks for its generator, twice (a second job of the same worker)
    with caplog.at_level(logging.INFO, logger="workers.ml.vllm_engine"):
        generator = runtime.generator_for(model)
        again = runtime.generator_for(model)
    # then one WARNING line names the model, the reason and the way out, and transformers generates
    assert _fallback_lines(caplog) == [
        "vLLM requested for fast-tiny@v1 but not installed (pip install 'prefarena[vllm]'); "
        "generating with transformers"
    ]
    assert [r.levelname for r in caplog.records if r.name == "workers.ml.vllm_engine"] == ["WARNING"]
    assert isinstance(generator, CausalLM) and again is generator
    # ... the very samples transformers draws for the same seeds
    expected = CausalLM(model.path).generate(prompts, [7, 8, 9], params)
    assert generator.generate(prompts, [7, 8, 9], params) == expected
    assert len({c.text for c in expected}) > 1  # sampled texts, not one greedy answer repeated


@needs_vllm_absent
def test_auto_picks_transformers_here_without_a_warning(tiny_models, caplog, settings):
    from workers.ml.generation import CausalLM

    settings.PREFARENA_GENERATION_ENGINE = "auto"
    explicit = model_register(
        name="auto-tiny", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"]), engine="auto"
    )
    inherited = model_register(name="plain-tiny", role="policy", backend="transformers", path=explicit.path)
    with caplog.at_level(logging.DEBUG, logger="workers.ml.vllm_engine"):
        assert runtime.engine_for(explicit) == "hf" and runtime.engine_for(inherited) == "hf"
        assert isinstance(runtime.generator_for(explicit), CausalLM)
    assert _fallback_lines(caplog) == []


@needs_vllm_absent
def test_the_worker_default_applies_to_models_registered_with_the_default_engine(tiny_models, caplog, settings):
    # given a worker whose PREFARENA_GENERATION_ENGINE asks for vLLM
    settings.PREFARENA_GENERATION_ENGINE = "vllm"
    path = str(tiny_models["tiny-lm-small"])
    inherited = model_register(name="inherits", role="policy", backend="transformers", path=path)
    pinned = model_register(name="pinned-hf", role="policy", backend="transformers", path=path, engine="hf")
    with caplog.at_level(logging.INFO, logger="workers.ml.vllm_engine"):
        engines = runtime.engine_for(inherited), runtime.engine_for(pinned)
    # then the model that inherits it falls back with the line; the one registered with "hf" is not asked
    assert engines == ("hf", "hf")
    assert len(_fallback_lines(caplog)) == 1 and "vLLM requested for inherits@v1" in _fallback_lines(caplog)[0]


def test_an_unknown_worker_default_stops_the_settings_from_loading():
    import subprocess

    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'prefarena.settings'; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**_env(), "PREFARENA_GENERATION_ENGINE": "tensorrt"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "PREFARENA_GENERATION_ENGINE must be one of auto, hf, vllm" in result.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PREFARENA_GENERATION_ENGINE"}


def test_tensor_parallel_size_uses_every_gpu_that_divides_the_heads(tmp_path):
    from workers.ml.vllm_engine import tensor_parallel_size

    (tmp_path / "config.json").write_text('{"num_attention_heads": 12}')
    assert [tensor_parallel_size(tmp_path, gpus) for gpus in (0, 1, 2, 3, 4, 5, 8)] == [1, 1, 2, 3, 4, 4, 6]
    assert tensor_parallel_size(tmp_path / "missing", 8) == 8  # no config: every GPU, vLLM reports the problem


# --- VLLMCausalLM's plumbing, against a STAND-IN vllm module ------------------------------------------------
@dataclass
class _StandInSample:
    token_ids: list[int]
    finish_reason: str


@dataclass
class _StandInOutput:
    outputs: list[_StandInSample]


def test_vllm_engine_sends_the_rendered_prompt_tokens_and_one_seed_per_row(tiny_models, monkeypatch):
    """NOT vLLM: a stand-in `vllm` module that records what VLLMCausalLM hands it and answers with fixed token
    ids, to check the prompt tokens, per-row seeds, stop ids and token counts of the contract; real vLLM
    generation is untested without a GPU."""
    from workers.ml.generation import CausalLM
    from workers.ml.types import SamplingParams
    from workers.ml.vllm_engine import VLLMCausalLM

    calls: dict[str, Any] = {}

    class LLM:
        def __init__(self, **options: Any) -> None:
            calls["options"] = options

        def generate(self, prompts: list[dict], sampling: list[Any], use_tqdm: bool) -> list[_StandInOutput]:
            calls["prompts"], calls["sampling"] = prompts, sampling
            stop = sampling[0].kwargs["stop_token_ids"][0]
            return [
                _StandInOutput([_StandInSample([40, 41, stop], "stop")]),  # ended on EOS (kept in token_ids)
                _StandInOutput([_StandInSample([42, 43, 44], "length")]),  # hit max_tokens
            ]

    class StandInSamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=StandInSamplingParams))
    path = str(tiny_models["tiny-lm-small"])
    engine = VLLMCausalLM(path, dtype="bfloat16")
    hf = CausalLM(path)
    prompts: list[Any] = ["What do bees make?", [{"role": "user", "content": "Where does the sun rise?"}]]

    completions = engine.generate(prompts, [11, 12], SamplingParams(max_new_tokens=3, temperature=0.5, top_p=0.9))

    assert calls["options"] == {"model": path, "tokenizer": path, "tensor_parallel_size": 1, "dtype": "bfloat16"}
    # the prompt tokens are those CausalLM feeds its model: same chat template, no extra special tokens
    expected_ids = [hf.tokenizer(hf.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
    assert [p["prompt_token_ids"] for p in calls["prompts"]] == expected_ids
    assert [s.kwargs["seed"] for s in calls["sampling"]] == [11, 12]
    assert calls["sampling"][0].kwargs | {"seed": 0} == {
        "n": 1,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 3,
        "seed": 0,
        "stop_token_ids": sorted(hf.eos_ids),
        "skip_special_tokens": True,
    }
    # counted as CausalLM counts: the kept tokens plus the EOS when the model stopped
    assert [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in completions] == [
        (len(expected_ids[0]), 3, "stop"),
        (len(expected_ids[1]), 3, "length"),
    ]
    assert completions[0].text == hf.tokenizer.decode([40, 41], skip_special_tokens=True)
