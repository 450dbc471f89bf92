"""Hyperparameters of a training run: one dataclass, every field documented, validated before a run is queued.

Pure Python (no Django, no torch): the web process validates with it and the gpu worker trains with it
(`workers/ml/training.py`), so both read the same defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

METHODS = ("reward", "dpo", "ipo", "robust", "simpo", "orpo", "kto")
# Methods that train a policy (causal LM) from preference pairs; `reward` trains a scalar-head model instead.
POLICY_METHODS = ("dpo", "ipo", "robust", "simpo", "orpo", "kto")
# Methods whose trainer compares against a frozen reference model (the base).
REFERENCE_METHODS = ("dpo", "ipo", "robust", "kto")
# How weights are stored and matmuls computed (workers/ml/device.py `precision_resolve` turns them into dtypes):
#   auto        GPU: bf16-mixed where the GPU supports bf16, else fp16-mixed; CPU: float32
#   float32     fp32 weights, fp32 compute
#   bf16-mixed  fp32 (master) weights and optimizer, bf16 autocast for the forward/backward
#   fp16-mixed  the same with fp16 autocast and the trainer's loss scaling; CUDA only (refused on a CPU worker)
#   bfloat16    pure bf16 weights and AdamW states, no fp32 master copy: the least memory, but updates below
#               bf16's resolution (~3 significant digits) are rounded away, which at DPO learning rates
#               (5e-7..5e-6) loses much of each step. Kept for runs stored before the mixed modes existed.
PRECISIONS = ("auto", "float32", "bf16-mixed", "fp16-mixed", "bfloat16")


class TrainingConfigError(ValueError):
    """A hyperparameter is out of range; `field` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


T = TypeVar("T")


def _documented(default: T, help_text: str) -> T:
    """A TrainingConfig field with its meaning in `metadata["help"]` (as TRL's configs), shown by the run form."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class TrainingConfig:
    """What a run does and how. Defaults suit a 0.5–8B model on one GPU; the tiny test models need larger lr.

    Memory: before loading, the worker estimates what the run needs from these fields (workers/ml/memory.py) and
    refuses a run over its budget, naming the fields whose change would fit: `lora` (or `load_in_4bit`),
    `gradient_checkpointing`, `precompute_ref_log_probs`, a smaller `batch_size` with more
    `gradient_accumulation_steps` (the same effective batch).
    """

    method: str = _documented("dpo", "reward | dpo | ipo | robust | simpo | orpo | kto")
    learning_rate: float = _documented(5e-6, "AdamW peak learning rate (DPO papers use 5e-7..5e-6 for full fine-tunes)")
    epochs: float = _documented(1.0, "Passes over the training pairs; ignored when max_steps > 0")
    max_steps: int = _documented(0, 'Optimizer steps to run; 0 means "as many as `epochs` take"')
    batch_size: int = _documented(8, "Pairs (or KTO rows) per device per forward pass")
    gradient_accumulation_steps: int = _documented(
        1,
        "Forward passes per optimizer step (effective batch = product); more of them with a smaller "
        "batch_size needs less activation memory for the same update",
    )
    warmup_ratio: float = _documented(0.1, "Fraction of steps with a linear learning-rate warm-up")
    weight_decay: float = _documented(0.0, "AdamW weight decay")
    max_grad_norm: float = _documented(1.0, "Gradient clipping norm")
    max_length: int = _documented(1024, "Tokens of prompt + completion kept per row (longer rows are truncated)")
    beta: float = _documented(
        0.1, "DPO family and KTO: strength of the pull toward the reference; SimPO/ORPO: reward scale"
    )
    label_smoothing: float = _documented(
        0.1, "Robust DPO only: assumed probability a preference label is flipped, [0, 0.5)"
    )
    simpo_gamma: float = _documented(0.5, "SimPO only: target reward margin between chosen and rejected")
    kto_desirable_weight: float = _documented(1.0, "KTO only: loss weight of desirable (label true) rows")
    kto_undesirable_weight: float = _documented(1.0, "KTO only: loss weight of undesirable (label false) rows")
    lora: bool = _documented(
        False, "Train a LoRA adapter (peft) and save it merged into the weights; else full fine-tune"
    )
    lora_r: int = _documented(16, "LoRA rank")
    lora_alpha: int = _documented(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = _documented(0.05, "Dropout on the LoRA branch")
    eval_fraction: float = _documented(
        0.1, "Share of the snapshot's pairs held out for evaluation (by prompt, never trained on)"
    )
    eval_every: int = _documented(
        0, "Also score the held-out pairs every N steps for the live curves; 0 = only at the end"
    )
    logging_steps: int = _documented(1, "Report loss / lr / throughput every N optimizer steps")
    seed: int = _documented(0, "Shuffling, held-out split and initialisation of new heads/adapters")
    precision: str = _documented(
        "auto", "auto | float32 | bf16-mixed | fp16-mixed | bfloat16 (PRECISIONS above says each)"
    )
    gradient_checkpointing: bool = _documented(
        False, "Recompute activations in the backward pass: less memory, ~30% slower"
    )
    precompute_ref_log_probs: bool = _documented(
        False,
        "dpo/ipo/robust/kto: reference log-probs computed once before training, so no reference model is held "
        "during it (full fine-tunes; LoRA already uses the adapter-free base)",
    )
    load_in_4bit: bool = _documented(
        False, "QLoRA: the frozen base quantized to 4-bit NF4 (bitsandbytes, CUDA); needs lora"
    )
    checkpoint_every: int = _documented(
        200,
        "Checkpoints and resume: model, optimizer, scheduler and RNG state saved every N optimizer steps into "
        "the run's checkpoint folder (the newest kept); a new attempt of the run resumes there; 0 = no "
        "checkpoints",
    )
    num_processes: int = _documented(
        0,
        "Processes to train with: 0 = the worker's setting (PREFARENA_TRAINING_PROCESSES, default one per "
        "visible GPU); 1 = inside the worker process; >= 2 = `accelerate launch` with that many processes on "
        "this host",
    )
    distributed: str = _documented(
        "auto",
        "How several processes share the work: auto (the worker's accelerate config file when it has one, "
        "else ddp) | ddp (a full copy per process) | fsdp (parameters, gradients and optimizer state sharded) "
        "| zero2 / zero3 (DeepSpeed ZeRO stage 2 / 3; needs the `deepspeed` package on the worker)",
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (low, high, inclusive-high) per numeric field; low is always inclusive unless noted in _STRICT_LOW.
_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (0.0, 1.0),
    "epochs": (0.0, 1000.0),
    "max_steps": (0, 10_000_000),
    "batch_size": (1, 4096),
    "gradient_accumulation_steps": (1, 4096),
    "warmup_ratio": (0.0, 1.0),
    "weight_decay": (0.0, 1.0),
    "max_grad_norm": (0.0, 1e6),
    "max_length": (8, 1_000_000),
    "beta": (0.0, 100.0),
    "label_smoothing": (0.0, 0.5),
    "simpo_gamma": (0.0, 100.0),
    "kto_desirable_weight": (0.0, 1000.0),
    "kto_undesirable_weight": (0.0, 1000.0),
    "lora_r": (1, 4096),
    "lora_alpha": (1, 1_000_000),
    "lora_dropout": (0.0, 1.0),
    "eval_fraction": (0.0, 0.9),
    "eval_every": (0, 10_000_000),
    "logging_steps": (1, 10_000_000),
    "seed": (0, 2**31 - 1),
    "checkpoint_every": (0, 10_000_000),
    "num_processes": (0, 4096),
}
_STRICT_LOW = {"learning_rate", "beta", "max_grad_norm"}
_STRICT_HIGH = {"label_smoothing", "lora_dropout"}
DISTRIBUTED = ("auto", "ddp", "fsdp", "zero2", "zero3")
# The text fields and the values each accepts.
CHOICES: dict[str, tuple[str, ...]] = {"precision": PRECISIONS, "distributed": DISTRIBUTED}


def training_config_validate(method: str, hyperparameters: dict[str, Any] | None) -> TrainingConfig:
    """A TrainingConfig from user input; TrainingConfigError names the first bad field."""
    if method not in METHODS:
        raise TrainingConfigError("method", f"must be one of {', '.join(METHODS)}")
    data = dict(hyperparameters or {})
    data.pop("method", None)
    known = {f.name: f for f in fields(TrainingConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainingConfigError(unknown[0], f"unknown hyperparameter (known: {', '.join(sorted(known))})")
    defaults = TrainingConfig()
    values: dict[str, Any] = {"method": method}
    for name, value in data.items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TrainingConfigError(name, "must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TrainingConfigError(name, "must be an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise TrainingConfigError(name, "must be a finite number")
            value = float(value)
        elif isinstance(default, str) and value not in CHOICES[name]:
            raise TrainingConfigError(name, f"must be one of {', '.join(CHOICES[name])}")
        if name in _RANGES:
            low, high = _RANGES[name]
            too_low = value <= low if name in _STRICT_LOW else value < low
            too_high = value >= high if name in _STRICT_HIGH else value > high
            if too_low or too_high:
                lo = "(" if name in _STRICT_LOW else "["
                hi = ")" if name in _STRICT_HIGH else "]"
                raise TrainingConfigError(name, f"must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")
        values[name] = value
    config = TrainingConfig(**values)
    if config.max_steps == 0 and config.epochs <= 0:
        raise TrainingConfigError("epochs", "must be > 0 when max_steps is 0")
    if config.load_in_4bit and not config.lora:
        raise TrainingConfigError("load_in_4bit", "needs lora: true (a 4-bit base is frozen; only an adapter trains)")
    if config.precompute_ref_log_probs and method not in REFERENCE_METHODS:
        raise TrainingConfigError(
            "precompute_ref_log_probs", f"only {', '.join(REFERENCE_METHODS)} use a reference model, not {method}"
        )
    return config


@dataclass(frozen=True)
class ConfigField:
    """How one TrainingConfig field is entered: its type, default, meaning and the values validation accepts."""

    name: str
    kind: str  # "bool" | "int" | "float" | "choice"
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[str, ...] = ()

    @property
    def allowed(self) -> str:
        """The accepted values in words, as training_config_validate's messages write them."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None or self.high is None:
            return "true or false" if self.kind == "bool" else ""
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


def training_config_fields() -> list[ConfigField]:
    """Every hyperparameter but `method`, in declaration order, described from the dataclass and the ranges above
    (what a form needs to offer them; validation stays `training_config_validate`)."""
    described = []
    for item in fields(TrainingConfig):
        if item.name == "method":
            continue
        default = item.default
        kind = (
            "bool"
            if isinstance(default, bool)
            else "int"
            if isinstance(default, int)
            else "float"
            if isinstance(default, float)
            else "choice"
        )
        low, high = _RANGES.get(item.name, (None, None))
        described.append(
            ConfigField(
                name=item.name,
                kind=kind,
                default=default,
                help=str(item.metadata.get("help", "")),
                low=low,
                high=high,
                low_inclusive=item.name not in _STRICT_LOW,
                high_inclusive=item.name not in _STRICT_HIGH,
                choices=CHOICES.get(item.name, ()),
            )
        )
    return described
