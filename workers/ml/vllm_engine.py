"""Generation of local checkpoints with vLLM's offline engine, and the choice between it and transformers.

`VLLMCausalLM.generate` keeps the contract of `workers.ml.generation.CausalLM.generate`: one `Completion`
per prompt, in input order, row i sampled with seeds[i]. The prompt is rendered exactly as CausalLM renders
it (the tokenizer's chat template with the generation prompt, or the messages' contents joined by newlines)
and tokenized by the same tokenizer without special tokens, then handed to vLLM as token ids, so both
engines see the same prompt tokens and stop on the same EOS ids. The texts differ: vLLM draws from its own
per-request generator (`SamplingParams.seed`), CausalLM from a hash of (seed, step, token). Each engine is
reproducible for a row and seed; the two are not interchangeable.

`engine_choose` decides which engine a model gets: "auto" takes vLLM when it is installed and CUDA is
present, else transformers; "vllm" asked for where it cannot run falls back to transformers with one log
line naming the model and the reason; "hf" is always transformers.

vllm is imported inside the functions only: it is an optional extra (`pip install 'prefarena[vllm]'`), it
initialises CUDA, and the web process must never load it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from workers.ml.types import Completion, Prompt, SamplingParams, text_only_check

logger = logging.getLogger(__name__)

ENGINES = ("auto", "hf", "vllm")  # what may be asked for; engine_choose answers "hf" or "vllm"
INSTALL_HINT = "pip install 'prefarena[vllm]'"
_FALLBACKS_LOGGED: set[tuple[str, str]] = set()  # (model label, reason): each fallback is said once per process


def vllm_unusable_reason() -> str | None:
    """Why vLLM cannot generate in this process ("not installed", "no CUDA device"), or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return f"not installed ({INSTALL_HINT})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    try:
        import vllm  # noqa: F401  # a broken install (CUDA or torch mismatch) fails here, not mid-job
    except Exception as exc:  # any import-time failure means "cannot use it"
        return f"cannot be imported ({type(exc).__name__}: {exc})"
    return None


def engine_choose(requested: str, label: str) -> str:
    """The engine that generates for model `label`: "hf" or "vllm" (see the module docstring)."""
    if requested not in ENGINES:
        raise ValueError(f"unknown generation engine {requested!r}; one of {', '.join(ENGINES)}")
    if requested == "hf":
        return "hf"
    reason = vllm_unusable_reason()
    if reason is None:
        return "vllm"
    if requested == "vllm" and (label, reason) not in _FALLBACKS_LOGGED:
        # At WARNING, once per model and process: someone asked for vLLM, every job of the model would repeat it.
        _FALLBACKS_LOGGED.add((label, reason))
        logger.warning("vLLM requested for %s but %s; generating with transformers", label, reason)
    return "hf"


def tensor_parallel_size(path: str | Path, visible_gpus: int) -> int:
    """Every visible GPU, or the most GPUs that divide the model's attention heads (vLLM shards heads evenly)."""
    heads = None
    try:
        config = json.loads((Path(path) / "config.json").read_text())
        heads = config.get("num_attention_heads") or (config.get("text_config") or {}).get("num_attention_heads")
    except (OSError, ValueError):
        pass  # vLLM reads the config itself and says what is wrong
    size = max(1, visible_gpus)
    if isinstance(heads, int) and heads > 0:
        while heads % size:
            size -= 1
    return size


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start vLLM's engine and GPU worker processes.

    A Celery prefork child is daemonic (billiard marks multiprocessing's current process so), and
    multiprocessing refuses to start children from a daemon: vLLM's engine core and tensor-parallel
    workers would fail with "daemonic processes are not allowed to have children". The flag only
    guards Process.start(); vLLM ends its own processes when the engine shuts down or its parent dies.
    """
    process = multiprocessing.current_process()
    daemonic = process._config.get("daemon", False)  # type: ignore[attr-defined]  # BaseProcess._config
    process._config["daemon"] = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        process._config["daemon"] = daemonic  # type: ignore[attr-defined]


class VLLMCausalLM:
    """A checkpoint loaded into vLLM's offline engine (`vllm.LLM`), over every visible GPU."""

    def __init__(self, path: str | Path, *, dtype: str | None = None, gpu_memory_utilization: float | None = None):
        import torch
        import vllm
        from transformers import AutoTokenizer, GenerationConfig

        self.path = str(path)
        self.name_or_path = self.path  # what judge records name a local backend by
        # The HF tokenizer renders and tokenizes the prompt as CausalLM does (vLLM's own would add a BOS
        # to a text prompt that the chat template already starts with).
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        try:
            eos = GenerationConfig.from_pretrained(self.path).eos_token_id
        except OSError:  # no generation_config.json
            eos = None
        if isinstance(eos, int):
            self.eos_ids = {eos}
        elif eos:
            self.eos_ids = set(eos)
        else:
            self.eos_ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        options: dict[str, Any] = {
            "model": self.path,
            "tokenizer": self.path,
            "tensor_parallel_size": tensor_parallel_size(self.path, torch.cuda.device_count()),
            "dtype": dtype or "auto",  # the registry's values (auto, float32, bfloat16, float16) are vLLM's
        }
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        with _children_allowed():
            self.llm = vllm.LLM(**options)

    def render(self, prompt: Prompt) -> str:
        """The chat template when the tokenizer has one; plain text otherwise (as CausalLM.render)."""
        text_only_check(prompt, str(self.name_or_path))
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.tokenizer.chat_template:
            return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[Prompt], seeds: list[int], params: SamplingParams) -> list[Completion]:
        """One `LLM.generate` call for the batch (vLLM schedules it); row i is sampled with seeds[i]."""
        import vllm

        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        if not prompts:
            return []
        token_prompts = [
            {"prompt_token_ids": self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"]} for p in prompts
        ]
        sampling = [
            vllm.SamplingParams(
                n=1,
                temperature=params.temperature,  # 0 is greedy in vLLM too
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=seed,
                stop_token_ids=sorted(self.eos_ids),
                skip_special_tokens=True,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(token_prompts, sampling, use_tqdm=False)
        completions = []
        for token_prompt, output in zip(token_prompts, outputs, strict=True):
            sample = output.outputs[0]
            ids = list(sample.token_ids)
            while ids and ids[-1] in self.eos_ids:  # vLLM may or may not keep the stop token in token_ids
                ids.pop()
            stopped = sample.finish_reason != "length"
            completions.append(
                Completion(
                    text=cast(str, self.tokenizer.decode(ids, skip_special_tokens=True)),
                    prompt_tokens=len(token_prompt["prompt_token_ids"]),
                    # counted as CausalLM counts: the kept tokens, plus the EOS when the model stopped
                    completion_tokens=len(ids) + (1 if stopped else 0),
                    finish_reason="stop" if stopped else "length",
                )
            )
        return completions

    def close(self) -> None:
        """Stop vLLM's engine processes and free their GPU memory (the object cannot generate afterwards)."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
