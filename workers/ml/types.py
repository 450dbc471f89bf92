"""Plain data passed between the Django side and the ML code (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy decoding."""

    max_new_tokens: int = 128  # hard cap on generated tokens per row
    temperature: float = 0.7  # softmax temperature; 0 = argmax
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much mass


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS reached) or "length" (max_new_tokens reached)
