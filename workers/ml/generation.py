"""Batched generation with transformers: pad left, one `generate` per batch, stop at EOS.

Sampling is reproducible per row: each row carries its own seed, and its random numbers come from a
counter-based hash of (seed, step, token id). A row's text therefore depends only on its prompt, its
seed and the model — not on which other rows share its batch, nor on the batch size or padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from workers.ml.device import device_pick, dtype_pick
from workers.ml.types import Completion, Prompt, SamplingParams, text_only_check

__all__ = ["CausalLM", "Completion", "Prompt", "SamplingParams", "SeededSampler"]

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31, so products of 32-bit values fit in int64 without overflow.
_M1, _M2, _M3 = 0x7FEB352D, 0x68E31DA5, 0x5BD1E995


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (murmur-style finaliser) on int64 tensors; values stay in [0, 2**32)."""
    x = x & _MASK32
    x = ((x ^ (x >> 16)) * _M1) & _MASK32
    x = ((x ^ (x >> 15)) * _M2) & _MASK32
    x = ((x ^ (x >> 13)) * _M3) & _MASK32
    return x ^ (x >> 16)


class SeededSampler(LogitsProcessor):
    """Samples each row with its own seed inside one `generate` call (run it with do_sample=False).

    Gumbel-max: argmax(logits / T + g) with g = -log(-log u) is a sample from softmax(logits / T);
    u comes from _hash32(seed, step, token), so no RNG state is shared between rows. The processor
    returns scores that are 0 at the sampled token and -inf elsewhere, so greedy search picks it.
    """

    def __init__(self, seeds: list[int], params: SamplingParams, prompt_length: int, vocab_size: int, device: Any):
        self.seeds = torch.tensor([s & _MASK32 for s in seeds], dtype=torch.int64, device=device)
        self.params = params
        self.prompt_length = prompt_length
        self.token_hash = _hash32(torch.arange(vocab_size, dtype=torch.int64, device=device) * _M2 + 1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length  # same for every row, independent of padding
        logits = scores.float()
        if self.params.temperature > 0:
            logits = logits / self.params.temperature
            if self.params.top_p < 1.0:
                logits = _top_p_filter(logits, self.params.top_p)
            vocab = logits.shape[-1]
            row_key = _hash32(self.seeds * _M1 + step * _M3 + 0x9E3779B)  # [B]
            bits = _hash32(self.token_hash[None, :vocab] ^ row_key[:, None])  # [B, V]
            uniform = ((bits.float() + 0.5) / 4294967296.0).clamp_(1e-7, 1 - 1e-7)
            logits = logits - torch.log(-torch.log(uniform))
        chosen = logits.argmax(dim=-1, keepdim=True)  # [B, 1]
        out = torch.full_like(logits, float("-inf"))
        return cast(torch.FloatTensor, out.scatter_(-1, chosen, 0.0))  # float32, as LogitsProcessor declares


def _top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_scores.softmax(dim=-1) > top_p  # keep the token that crosses top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


class CausalLM:
    """A loaded causal LM and its tokenizer, ready for batched generation."""

    def __init__(self, path: str | Path, *, device: str | None = None, dtype: str | None = None):
        self.device = device_pick(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_pick(self.device, dtype))
        # transformers wraps PreTrainedModel.to with functools.wraps: typeshed's _Wrapped is no descriptor,
        # so mypy takes the device for `self`.
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [self.tokenizer.eos_token_id])

    def render(self, prompt: Prompt) -> str:
        """The chat template when the tokenizer has one; plain text otherwise."""
        text_only_check(prompt, str(getattr(self.model, "name_or_path", "") or "this local model"))
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.tokenizer.chat_template:
            # tokenize=False: the text
            return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "\n".join(m["content"] for m in messages)

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], seeds: list[int], params: SamplingParams) -> list[Completion]:
        """One `generate` call for the whole batch; row i is sampled with seeds[i]."""
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        texts = [self.render(p) for p in prompts]
        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        ).to(self.device)
        prompt_length = encoded["input_ids"].shape[1]
        sampler = SeededSampler(seeds, params, prompt_length, self.model.config.vocab_size, self.device)
        # transformers types generate's `self` as a Protocol (for the `ty` checker) that its own
        # auto-model class does not satisfy under mypy.
        output = self.model.generate(  # type: ignore[misc]
            **encoded,
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=LogitsProcessorList([sampler]),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
        )
        completions = []
        for row, ids in enumerate(output[:, prompt_length:].tolist()):
            n_prompt = int(encoded["attention_mask"][row].sum())
            stop = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
            kept = ids if stop is None else ids[:stop]
            completions.append(
                Completion(
                    text=cast(str, self.tokenizer.decode(kept, skip_special_tokens=True)),  # one sequence: str
                    prompt_tokens=n_prompt,
                    completion_tokens=len(kept) + (0 if stop is None else 1),
                    finish_reason="length" if stop is None else "stop",
                )
            )
        return completions
