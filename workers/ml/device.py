"""Device and dtype choice: CUDA when present, else CPU. Never called in a Celery parent process.

Two vocabularies: a registered model's `dtype` (auto | float32 | bfloat16 | float16: how generation and scoring
load it, `dtype_pick`) and a training run's `precision` (workers/ml/training_config.py PRECISIONS: how weights are
stored and matmuls computed, `precision_resolve`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from workers.ml.errors import UnsupportedOnWorker


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


@dataclass(frozen=True)
class Precision:
    """A resolved `precision`: the dtype weights are loaded (and trained) in, the dtype matmuls run in, and the
    trainer's flags. Mixed modes keep fp32 weights (the master copy AdamW updates) and autocast the compute."""

    name: str  # float32 | bf16-mixed | fp16-mixed | bfloat16 ("auto" resolved)
    weights: torch.dtype  # dtype of the loaded parameters, gradients and AdamW states
    compute: torch.dtype  # dtype of the forward/backward matmuls (autocast in mixed modes)
    bf16: bool  # TrainingArguments.bf16: bf16 autocast
    fp16: bool  # TrainingArguments.fp16: fp16 autocast with a gradient scaler

    @property
    def mixed(self) -> bool:
        return self.weights != self.compute

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Forward passes outside the trainer (evaluation) computed as the trainer computed them."""
        if not self.mixed:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=self.compute):
            yield


def precision_resolve(precision: str, device: torch.device) -> Precision:
    """The dtypes of `precision` (TrainingConfig.precision) on `device`; UnsupportedOnWorker for fp16 on a CPU."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "fp16-mixed"
        else:
            precision = "float32"  # CPU autocast is slower than fp32 on most CPUs; memory is rarely the limit there
    if precision == "fp16-mixed" and device.type != "cuda":
        raise UnsupportedOnWorker(
            f"precision fp16-mixed needs a CUDA GPU, and this worker trains on {device.type}: "
            "use precision bf16-mixed or float32"
        )
    fp32, bf16, fp16 = torch.float32, torch.bfloat16, torch.float16
    table = {
        "float32": Precision("float32", fp32, fp32, bf16=False, fp16=False),
        "bf16-mixed": Precision("bf16-mixed", fp32, bf16, bf16=True, fp16=False),
        "fp16-mixed": Precision("fp16-mixed", fp32, fp16, bf16=False, fp16=True),
        # bf16=True as before the mixed modes: autocast still runs softmax/norms the way bf16 runs them.
        "bfloat16": Precision("bfloat16", bf16, bf16, bf16=True, fp16=False),
    }
    if precision not in table:
        raise UnsupportedOnWorker(f"precision {precision!r} is not one of {', '.join(['auto', *table])}")
    return table[precision]
