"""Reward-model scoring in batches: one scalar per (prompt, response)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from workers.ml.device import device_pick, dtype_pick
from workers.ml.types import Prompt, text_only_check


class RewardModel:
    """A loaded sequence-classification reward model (num_labels=1) and its tokenizer."""

    def __init__(self, path: str | Path, *, device: str | None = None, dtype: str | None = None):
        self.device = device_pick(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype_pick(self.device, dtype))
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{path}: a reward model has one output (num_labels=1), not {self.model.config.num_labels}"
            )
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()

    def render(self, prompt: Prompt, response: str) -> str:
        text_only_check(prompt, "a reward model")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages.append({"role": "assistant", "content": response})
        if self.tokenizer.chat_template:
            return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False))  # tokenize=False: the text
        return "\n".join(m["content"] for m in messages)

    @torch.inference_mode()
    def score(self, pairs: list[tuple[Prompt, str]], *, batch_size: int = 16, max_length: int = 2048) -> list[float]:
        """Scores in input order. Right padding: the model reads its score at the last real token."""
        scores: list[float] = []
        for start in range(0, len(pairs), batch_size):
            texts = [self.render(p, r) for p, r in pairs[start : start + batch_size]]
            encoded = self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                padding_side="right",
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            ).to(self.device)
            logits = self.model(**encoded).logits  # [B, 1]
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores
