"""Device and dtype choice: CUDA when present, else CPU. Never called in a Celery parent process."""

from __future__ import annotations

import torch


def device_pick(preferred: str | None = None) -> torch.device:
    """`preferred` ("cpu", "cuda", "cuda:1") wins; otherwise CUDA if available, else CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype_pick(device: torch.device, preferred: str | None = None) -> torch.dtype:
    """bf16 on GPUs that support it (halves memory, same range as fp32), fp32 on CPU."""
    if preferred and preferred != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[preferred]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
