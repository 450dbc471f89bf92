"""Plain data passed between the Django side and the ML code (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.ml.errors import PermanentBackendError

# A prompt: text, or OpenAI-format messages whose `content` is text or a list of content parts
# (`{"type": "text", "text": ...}`, `{"type": "image_url", "image_url": {"url": ...}}`: vision prompts).
Prompt = str | list[dict[str, Any]]


def prompt_has_images(prompt: Prompt) -> bool:
    """Whether a prompt's messages hold an `image_url` content part (only a model that sees images reads it)."""
    if not isinstance(prompt, list):
        return False
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in prompt
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
    )


def text_only_check(prompt: Prompt, model: str) -> None:
    """Refuse a vision prompt for a text-only model: its chat template would render the image parts as text."""
    if prompt_has_images(prompt):
        raise PermanentBackendError(f"{model} reads text only and cannot answer a prompt that holds images")


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
