"""The memory a training run needs, checked against what the worker may use before any weight is loaded.

A run that cannot fit fails at once with a message a person can act on: what it needs, the budget, and the
changes whose estimate fits (LoRA, gradient checkpointing, precomputed reference log-probabilities, a smaller
batch with more accumulation steps, QLoRA on CUDA). A real `torch.OutOfMemoryError` while the trainer is built
or trains becomes the same kind of message (`out_of_memory_explained`, `trainer_train`).

The estimate (bytes; P parameters, T trainable ones, w bytes per weight, a bytes per activation):

    weights       P · w                (4-bit QLoRA: the linear layers at ~0.53 byte per parameter)
    compute copy  P · a                mixed precision, full fine-tune: autocast's bf16/fp16 copies of the fp32
                                       (master) weights live through forward and backward
    gradients     T · w_T              w_T = w for a full fine-tune; LoRA adapters are fp32 (peft's default)
    AdamW         2 · T · w_T          first and second moments
    reference     P · w                dpo/ipo/robust/kto full fine-tunes, unless precompute_ref_log_probs
    activations   N · L · (8h + 4i) · a  + N · V · (a + 4)
                  N = batch_size · 2 sequences (chosen and rejected; KTO's completion and its KL completion)
                      · max_length tokens; per token and layer the attention and MLP inputs kept for the
                  backward (h hidden, i MLP width: ~Korthikanti et al. 2022, Table 2, without the s² term that
                  SDPA/flash attention do not store); the logits of V tokens in the compute dtype and in fp32.
                  With gradient checkpointing only each layer's input (N · L · h · a) is kept, plus one layer's
                  activations recomputed at a time.

It is deliberately rough (framework buffers, allocator fragmentation and the CUDA context are not counted):
it catches the run that needs 40 GiB on a 24 GiB card, not the one that needs 23.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from workers.ml.device import precision_resolve
from workers.ml.errors import PermanentBackendError
from workers.ml.training_config import REFERENCE_METHODS, TrainingConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRAINING_BUDGET_ENV = "PREFARENA_TRAINING_MEMORY_BUDGET"
FOUR_BIT_BYTES = 0.53  # NF4 with double quantization: 4 bits + ~0.127 bit of block scales per parameter


class TrainingMemoryError(PermanentBackendError):
    """The run does not fit the worker's memory; the message names the need, the budget and what would fit."""


# --- sizes in words ----------------------------------------------------------------------------------
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def bytes_parse(text: str) -> int:
    """ "8GiB" → 8589934592, "500MB" → 500000000, "1024" → 1024; ValueError for anything else."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (write e.g. 8GiB, 500MB or a number of bytes)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return value


def bytes_format(value: float) -> str:
    """1288490188 → "1.2 GiB"."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"


def env_bytes(name: str) -> int | None:
    """The size in environment variable `name`, None when unset; a malformed value fails the job, naming it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return bytes_parse(raw)
    except ValueError as exc:
        raise PermanentBackendError(f"environment variable {name}: {exc}") from exc


# --- the model's shape -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a checkpoint, read without loading its weights."""

    parameters: int  # every parameter (tied embeddings once)
    linear_parameters: int  # in the linear layers LoRA targets ("all-linear": every nn.Linear but the output head)
    linear_in_out: int  # Σ (in_features + out_features) over those layers: LoRA rank r trains r · this
    head_parameters: int  # a reward model's new scalar head (trains in full under LoRA too); 0 for policies
    hidden_size: int
    intermediate_size: int
    layers: int
    vocab_size: int


def model_shape(base_path: str | Path, *, reward: bool) -> ModelShape:
    """The shape of the checkpoint at `base_path`, built on the meta device (no weights read, no memory used)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(base_path)
    if reward:
        config.num_labels = 1
    with torch.device("meta"):
        model = (AutoModelForSequenceClassification if reward else AutoModelForCausalLM).from_config(config)
    head_names = {"lm_head", "score", "classifier"}
    linear_parameters = linear_in_out = head = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if name.split(".")[-1] in head_names:
            head += module.weight.numel() if reward else 0
            continue
        linear_parameters += module.weight.numel()
        linear_in_out += module.in_features + module.out_features
    text = config.get_text_config()
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "d_model", 0) or 0)
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        linear_parameters=linear_parameters,
        linear_in_out=linear_in_out,
        head_parameters=head,
        hidden_size=hidden,
        intermediate_size=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
        layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "num_layers", 0) or 0),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
    )


# --- the estimate ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by what holds them (see the module docstring for each term)."""

    weights: int
    compute_copy: int
    gradients: int
    optimizer: int
    reference: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.compute_copy + self.gradients + self.optimizer + self.reference + self.activations

    def describe(self) -> str:
        parts = [
            ("weights", self.weights),
            ("mixed-precision compute copy", self.compute_copy),
            ("gradients", self.gradients),
            ("AdamW states", self.optimizer),
            ("reference model", self.reference),
            ("activations", self.activations),
        ]
        return ", ".join(f"{name} {bytes_format(size)}" for name, size in parts if size)


def memory_estimate(config: TrainingConfig, shape: ModelShape, device: torch.device) -> MemoryEstimate:
    """The memory `config` needs to train a model of `shape` on `device` (rough: see the module docstring)."""
    precision = precision_resolve(config.precision, device)
    weight_bytes = precision.weights.itemsize
    act_bytes = precision.compute.itemsize
    if config.load_in_4bit:
        weights = round(shape.linear_parameters * FOUR_BIT_BYTES + (shape.parameters - shape.linear_parameters) * 4)
    else:
        weights = shape.parameters * weight_bytes
    if config.lora:
        trainable, trainable_bytes = config.lora_r * shape.linear_in_out + shape.head_parameters, 4
    else:
        trainable, trainable_bytes = shape.parameters, weight_bytes
    # autocast caches its cast of a weight that requires grad for the whole forward/backward; frozen LoRA bases
    # are cast layer by layer and dropped.
    compute_copy = shape.parameters * act_bytes if precision.mixed and not config.lora else 0
    reference = (
        weights if config.method in REFERENCE_METHODS and not config.lora and not config.precompute_ref_log_probs else 0
    )
    tokens = config.batch_size * 2 * config.max_length
    per_layer = 8 * shape.hidden_size + 4 * shape.intermediate_size
    if config.gradient_checkpointing:
        layer_activations = tokens * (shape.layers * shape.hidden_size + per_layer) * act_bytes
    else:
        layer_activations = tokens * shape.layers * per_layer * act_bytes
    logits = tokens * shape.vocab_size * (act_bytes + 4)
    return MemoryEstimate(
        weights=weights,
        compute_copy=compute_copy,
        gradients=trainable * trainable_bytes,
        optimizer=2 * trainable * trainable_bytes,
        reference=reference,
        activations=layer_activations + logits,
    )


# --- the budget and the check ------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # in words, for the message: "free memory of cuda:0", "PREFARENA_TRAINING_MEMORY_BUDGET"


def memory_budget(device: torch.device, *, capacity: bool = False) -> MemoryBudget | None:
    """What a run may use: the device's free memory on CUDA (its whole memory with `capacity`, for a run that
    already holds part of it), `PREFARENA_TRAINING_MEMORY_BUDGET` (bytes, "8GiB") when set (on CUDA the smaller
    of the two); None on a CPU without a configured budget (nothing is checked)."""
    configured = env_bytes(TRAINING_BUDGET_ENV)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        available = total if capacity else free
        if configured is None or available < configured:
            words = f"{device}'s memory" if capacity else f"the free memory of {device} ({bytes_format(total)} in all)"
            return MemoryBudget(available, words)
    if configured is None:
        return None
    return MemoryBudget(configured, TRAINING_BUDGET_ENV)


def fitting_options(
    config: TrainingConfig, shape: ModelShape, device: torch.device, budget: int
) -> list[tuple[str, int]]:
    """Changes to `config` (in words, with their estimate) that each fit `budget`; every change at once when no
    single one does; empty when nothing fits."""
    candidates: list[tuple[str, TrainingConfig]] = []
    if not config.lora:
        candidates.append(("lora: true", replace(config, lora=True)))
    if not config.gradient_checkpointing:
        candidates.append(("gradient_checkpointing: true", replace(config, gradient_checkpointing=True)))
    if config.method in REFERENCE_METHODS and not config.lora and not config.precompute_ref_log_probs:
        candidates.append(("precompute_ref_log_probs: true", replace(config, precompute_ref_log_probs=True)))
    batch, accumulation = config.batch_size, config.gradient_accumulation_steps
    smaller = None
    while batch > 1:  # the largest smaller batch that fits, with the same effective batch
        batch, accumulation = max(1, batch // 2), accumulation * 2
        smaller = replace(config, batch_size=batch, gradient_accumulation_steps=min(accumulation, 4096))
        if memory_estimate(smaller, shape, device).total <= budget:
            break
    if smaller is not None:
        words = (
            f"batch_size: {smaller.batch_size} with gradient_accumulation_steps: {smaller.gradient_accumulation_steps}"
        )
        candidates.append((words, smaller))
    if device.type == "cuda" and not config.load_in_4bit:
        candidates.append(("lora: true with load_in_4bit: true (QLoRA)", replace(config, lora=True, load_in_4bit=True)))
    fitting = [(words, memory_estimate(c, shape, device).total) for words, c in candidates]
    fitting = [(words, total) for words, total in fitting if total <= budget]
    if fitting or not candidates:
        return fitting
    everything = replace(
        config,
        lora=True,
        gradient_checkpointing=True,
        batch_size=1,
        gradient_accumulation_steps=min(config.batch_size * config.gradient_accumulation_steps, 4096),
        load_in_4bit=config.load_in_4bit or device.type == "cuda",
    )
    total = memory_estimate(everything, shape, device).total
    if total > budget:
        return []
    words = "all of: lora: true, gradient_checkpointing: true, batch_size: 1 with gradient_accumulation_steps: "
    words += str(everything.gradient_accumulation_steps) + (", load_in_4bit: true" if everything.load_in_4bit else "")
    return [(words, total)]


def _explain(config: TrainingConfig, shape: ModelShape, device: torch.device, budget: MemoryBudget) -> str:
    estimate = memory_estimate(config, shape, device)
    needs = f"about {bytes_format(estimate.total)} of memory ({estimate.describe()})"
    if estimate.total > budget.bytes:
        said = f"the run needs {needs}, more than the {bytes_format(budget.bytes)} of {budget.source}"
        options = fitting_options(config, shape, device, budget.bytes)
    else:  # a real out-of-memory the estimate did not foresee: offer what needs less
        said = f"the run was estimated to need {needs}, within the {bytes_format(budget.bytes)} of {budget.source}"
        options = fitting_options(config, shape, device, estimate.total * 3 // 4)
    advice = (
        "options whose estimate fits: " + "; ".join(f"{words} (about {bytes_format(t)})" for words, t in options)
        if options
        else "no change among lora, gradient_checkpointing, precompute_ref_log_probs and a smaller batch_size fits:"
        " use a smaller model or a larger device"
    )
    return f"{said}; {advice}"


def training_memory_check(config: TrainingConfig, base_path: str | Path, device: torch.device) -> MemoryEstimate | None:
    """Before any weight is loaded: TrainingMemoryError when the run's estimate exceeds the budget
    (`memory_budget`); returns the estimate, or None when there is no budget to check against."""
    budget = memory_budget(device)
    if budget is None:
        return None
    shape = model_shape(base_path, reward=config.method == "reward")
    estimate = memory_estimate(config, shape, device)
    logger.info(
        "training memory: about %s needed (%s), budget %s (%s)",
        bytes_format(estimate.total),
        estimate.describe(),
        bytes_format(budget.bytes),
        budget.source,
    )
    if estimate.total > budget.bytes:
        raise TrainingMemoryError(_explain(config, shape, device, budget))
    return estimate


# --- a real out-of-memory ----------------------------------------------------------------------------
def out_of_memory_explained(
    call: Callable[[], T], config: TrainingConfig, base_path: str | Path, device: torch.device
) -> T:
    """`call()`, a `torch.OutOfMemoryError` in it turned into a TrainingMemoryError that says what the run was
    estimated to need and what would need less. Raised after the `except` ends, so it chains nothing: the
    original's traceback holds the frames (and tensors) of the failed step, which must be freed for the next job."""
    try:
        return call()
    except torch.OutOfMemoryError as exc:
        failure = (str(exc).strip().splitlines() or ["out of memory"])[0]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    message = f"out of memory while training ({failure})"
    budget = memory_budget(device, capacity=True)
    if budget is not None:
        message += ": " + _explain(config, model_shape(base_path, reward=config.method == "reward"), device, budget)
    raise TrainingMemoryError(message)


def trainer_train(trainer: Any, config: TrainingConfig, base_path: str | Path, device: torch.device) -> Any:
    """`trainer.train()`, with an out-of-memory turned into a readable TrainingMemoryError."""
    return out_of_memory_explained(trainer.train, config, base_path, device)
