"""Preference training through TRL's trainers: reward model (Bradley–Terry), DPO, IPO, robust DPO, SimPO,
ORPO and KTO, full fine-tune or LoRA. Pure torch/transformers/TRL: no Django import.

The Django side (workers/training/) turns snapshot files into `PreferencePair`/`BinaryExample` lists,
passes a `TrainingConfig` (workers/ml/training_config.py, every field documented there) and callbacks,
and stores what `train` returns. Progress leaves through `on_progress(step, total, metrics)`;
`should_stop()` is asked after every optimizer step, so a cancel stops the run within one step.

Checkpoints: with a `checkpoint_dir` and `config.checkpoint_every > 0` the trainer saves model, optimizer,
scheduler and RNG state every N steps there (the last one kept); a checkpoint counts once its `complete`
marker is written (after the trainer's save returned), and `train` resumes from the latest complete one.
Under `accelerate launch` (workers/ml/launch.py) every rank runs `train`; only the main process saves.

Losses (TRL implements them; see the papers for the equations):
  reward  -log σ(r(x, y_w) - r(x, y_l))                                   Ouyang et al. 2022, eq. 1
  dpo     -log σ(β [log π/π_ref (y_w|x) - log π/π_ref (y_l|x)])            Rafailov et al. 2023, eq. 7
  ipo     (h - 1/(2β))²,  h = the log-ratio difference above                Azar et al. 2023, eq. 17
  robust  DPO with labels flipped with probability ε (label_smoothing)     Chowdhury et al. 2024, eq. 9
  simpo   -log σ(β/|y_w| log π(y_w|x) - β/|y_l| log π(y_l|x) - γ)          Meng et al. 2024, eq. 6
  orpo    NLL(y_w) - λ log σ(log odds(y_w) - log odds(y_l))                 Hong et al. 2024, eq. 6
  kto     per-example value function against a KL baseline                  Ethayarajh et al. 2024, eq. 8
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workers.ml import memory
from workers.ml.device import Precision, device_pick, precision_resolve
from workers.ml.errors import UnsupportedOnWorker
from workers.ml.training_config import POLICY_METHODS, REFERENCE_METHODS, TrainingConfig
from workers.ml.types import Prompt

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, dict[str, float]], None]
StopCheck = Callable[[], bool | int]  # falsy: go on; STOP: stop, save nothing; SAVE_AND_STOP: checkpoint, then stop
STOP = 1
SAVE_AND_STOP = 2
CHECKPOINT_MARKER = "complete"


@dataclass(frozen=True)
class PreferencePair:
    """One preference: `chosen` was preferred over `rejected` as an answer to `prompt`."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class BinaryExample:
    """One KTO row: `completion` to `prompt` was judged desirable (label True) or not."""

    prompt: str
    completion: str
    label: bool


@dataclass
class TrainingResult:
    """What a run produced. `stopped` is True when should_stop() ended it early (nothing should be registered)."""

    steps: int
    total_steps: int
    stopped: bool
    final_loss: float
    seconds: float  # wall time of the trainer's loop
    tokens_per_s: float
    steps_per_s: float
    log_history: list[dict[str, float]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # process CPU time of the loop (all threads): steadier than wall time on a busy host
    resumed_from_step: int = 0  # the checkpoint's step this attempt started from (0: from the base)
    world_size: int = 1  # processes that trained together (accelerate launch)


class TrainingStopped(Exception):
    """Raised by `train` when `should_stop()` asked it to stop; nothing was saved."""


class TrainingPaused(Exception):
    """Raised by `train` when `should_stop()` returned SAVE_AND_STOP: a checkpoint at `step` was saved first."""

    def __init__(self, step: int) -> None:
        super().__init__(f"paused after step {step}: checkpoint saved")
        self.step = step


def held_out_split(rows: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held out) split by prompt, so no held-out prompt is ever trained on; stable across runs."""
    if fraction <= 0:
        return list(rows), []
    train: list[Any] = []
    held_out: list[Any] = []
    for row in rows:
        digest = hashlib.blake2b(f"{seed}:{row.prompt}".encode(), digest_size=8).digest()
        (held_out if int.from_bytes(digest, "little") / 2**64 < fraction else train).append(row)
    if not train or not held_out:  # tiny snapshots: fall back to a plain tail split
        cut = max(1, min(len(rows) - 1, round(len(rows) * (1 - fraction))))
        return list(rows[:cut]), list(rows[cut:])
    return train, held_out


# --- data ------------------------------------------------------------------------------------------
def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _conversational(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _pairs_dataset(pairs: Sequence[PreferencePair], tokenizer: Any) -> Any:
    from datasets import Dataset

    rows: dict[str, list[Any]]  # conversational: lists of messages; plain: strings
    if _conversational(tokenizer):
        # TRL's conversational explicit-prompt format: the trainer applies the chat template.
        rows = {
            "prompt": [_messages(p.prompt) for p in pairs],
            "chosen": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
            "rejected": [[{"role": "assistant", "content": p.rejected}] for p in pairs],
        }
    else:
        rows = {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
        }
    return Dataset.from_dict(rows)


def _binary_dataset(examples: Sequence[BinaryExample], tokenizer: Any) -> Any:
    from datasets import Dataset

    if _conversational(tokenizer):
        rows = {
            "prompt": [_messages(e.prompt) for e in examples],
            "completion": [[{"role": "assistant", "content": e.completion}] for e in examples],
            "label": [bool(e.label) for e in examples],
        }
    else:
        rows = {
            "prompt": [e.prompt for e in examples],
            "completion": [e.completion for e in examples],
            "label": [bool(e.label) for e in examples],
        }
    return Dataset.from_dict(rows)


def _prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    if _conversational(tokenizer):
        return tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def _full_text(tokenizer: Any, prompt: Prompt, response: str) -> str:
    if _conversational(tokenizer):
        messages = [*_messages(prompt), {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return _prompt_text(tokenizer, prompt) + response


def _mean_tokens(tokenizer: Any, rows: Sequence[Any], max_length: int) -> float:
    """Average tokens of one training row (prompt + completion(s)), for the tokens/s figure."""
    sample = list(rows[:256])
    if not sample:
        return 0.0
    total = 0
    for row in sample:
        texts = [row.chosen, row.rejected] if isinstance(row, PreferencePair) else [row.completion]
        for text in texts:
            total += min(
                len(tokenizer(_full_text(tokenizer, row.prompt, text), add_special_tokens=False)["input_ids"]),
                max_length,
            )
    return total / len(sample)


# --- progress and cancellation ---------------------------------------------------------------------
def _world_size() -> int:
    """Processes training together: torchrun sets WORLD_SIZE in each rank; 1 in a plain process."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def _progress_callback(
    config: TrainingConfig, tokens_per_row: float, on_progress: ProgressCallback | None, should_stop: StopCheck | None
) -> Any:
    from transformers import TrainerCallback

    rows_per_step = config.batch_size * config.gradient_accumulation_steps * _world_size()

    class PlatformCallback(TrainerCallback):
        """Forwards the trainer's logs (loss, lr, reward accuracy/margins), stops on request after a step, and
        marks each checkpoint complete once the trainer's save returned."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.stopped = False
            self.paused = False
            self.first_step = 0  # a resumed attempt starts at its checkpoint's step
            self.history: list[dict[str, float]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()
            self.first_step = state.global_step  # called after the trainer restored a checkpoint's state

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            # Checked after every optimizer step: the trainer ends the loop before starting another step.
            # Every rank asks (in lockstep); under accelerate launch should_stop() itself makes them agree.
            request = int(should_stop()) if should_stop is not None else 0
            if request:
                control.should_training_stop = True
                self.paused = request == SAVE_AND_STOP
                self.stopped = not self.paused
                control.should_save = self.paused  # a cancelled run keeps nothing; a paused one its checkpoint
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank wrote its part (RNG state, shards) before the checkpoint counts
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                marker = folder / CHECKPOINT_MARKER
                marker.write_text(json.dumps({"step": state.global_step}))
                with marker.open("rb") as handle:
                    os.fsync(handle.fileno())

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if not logs or "train_runtime" in logs:
                return
            seconds = max(time.perf_counter() - self.started, 1e-9)
            steps = state.global_step - self.first_step
            metrics = {key: float(value) for key, value in logs.items() if isinstance(value, int | float)}
            metrics["steps_per_s"] = steps / seconds
            metrics["tokens_per_s"] = steps * rows_per_step * tokens_per_row / seconds
            self.history.append({"step": state.global_step, **metrics})
            if on_progress is not None and state.is_world_process_zero:
                on_progress(state.global_step, state.max_steps, metrics)

    return PlatformCallback()


def checkpoints_prune_incomplete(checkpoint_dir: Path) -> None:
    """Delete checkpoint folders without their `complete` marker (a save cut short by a kill): the trainer keeps
    the newest folders by step number, so a partial one ahead of the resume point would evict the next save."""
    import shutil

    for folder in checkpoint_dir.glob("checkpoint-*"):
        if folder.is_dir() and not (folder / CHECKPOINT_MARKER).is_file():
            shutil.rmtree(folder, ignore_errors=True)


def checkpoint_latest(checkpoint_dir: Path | None) -> tuple[Path, int] | None:
    """The newest complete checkpoint in `checkpoint_dir` and its step, or None."""
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for folder in checkpoint_dir.glob("checkpoint-*"):
        suffix = folder.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (folder / CHECKPOINT_MARKER).is_file() and (folder / "trainer_state.json").is_file():
            found.append((int(suffix), folder))
    if not found:
        return None
    step, folder = max(found)
    return folder, step


# --- models ----------------------------------------------------------------------------------------
def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | Path, dtype: torch.dtype, **load: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **load)


def _load_reward(path: str | Path, tokenizer: Any, dtype: torch.dtype, **load: Any) -> Any:
    """A scalar-head model from `path`: an existing reward model, or a causal LM given a fresh head."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype, **load)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


QLORA_EXTRA = "pip install 'prefarena[qlora]'"


def _quantized_loading(config: TrainingConfig, precision: Precision, device: torch.device) -> dict[str, Any]:
    """from_pretrained's extra arguments for `load_in_4bit` (QLoRA, Dettmers et al. 2023: NF4 weights, double
    quantization, matmuls in the run's compute dtype), or none; UnsupportedOnWorker where it cannot run."""
    if not config.load_in_4bit:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UnsupportedOnWorker(
            f"load_in_4bit needs the bitsandbytes package on the gpu worker, which is not installed: {QLORA_EXTRA}"
            " (or train with load_in_4bit: false)"
        )
    if device.type != "cuda":
        raise UnsupportedOnWorker(
            f"load_in_4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels), and this worker trains on {device.type}:"
            " train with load_in_4bit: false"
        )
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.compute,
        ),
        "device_map": {"": device.index if device.index is not None else torch.cuda.current_device()},
    }


def _kbit_prepared(model: Any, config: TrainingConfig) -> Any:
    """A 4-bit base made trainable through an adapter (norms in fp32, input gradients for checkpointing): TRL 1.16
    no longer does this itself."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def trained_model_for_save(trainer: Any, config: TrainingConfig, base_path: str | Path) -> Any:
    """The model `train` saves: the trainer's, LoRA adapters merged in, in the dtype the base checkpoint was stored
    in (mixed precision trains fp32 weights; a bf16 base stays a bf16 checkpoint on disk).

    Under QLoRA the adapter is merged into a fresh full-precision copy of the base, loaded on the CPU: merged into
    the 4-bit weights it would be rounded to 4 bits and saved as a checkpoint only bitsandbytes can load."""
    model = trainer.model
    if config.lora:
        model = _lora_merged_onto(model, base_path, config) if config.load_in_4bit else model.merge_and_unload()
    stored = _stored_dtype(base_path)
    if stored is not None and stored.is_floating_point and model.dtype != stored:
        model = model.to(stored)
    return model


def _lora_merged_onto(peft_model: Any, base_path: str | Path, config: TrainingConfig) -> Any:
    """The trained adapter of `peft_model` merged into a fresh fp32 copy of the base at `base_path` (on the CPU)."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    adapter = {k: v.detach().to("cpu", torch.float32) for k, v in get_peft_model_state_dict(peft_model).items()}
    tokenizer = load_tokenizer(base_path)
    base = (
        _load_reward(base_path, tokenizer, torch.float32)
        if config.method == "reward"
        else load_policy(base_path, torch.float32)
    )
    fresh = get_peft_model(base, _lora_config(config, reward=config.method == "reward"))
    unexpected = list(getattr(set_peft_model_state_dict(fresh, adapter), "unexpected_keys", []))  # _IncompatibleKeys
    if unexpected:  # a trained tensor with nowhere to go would be dropped silently
        raise RuntimeError(f"adapter weights missing from the fresh base: {unexpected[:5]}")
    return fresh.merge_and_unload()


def _stored_dtype(base_path: str | Path) -> torch.dtype | None:
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(base_path), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _lora_config(config: TrainingConfig, reward: bool) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="SEQ_CLS" if reward else "CAUSAL_LM",
        modules_to_save=["score"] if reward else None,  # the new scalar head trains in full
    )


def _trainer_args(config: TrainingConfig, output_dir: Path, device: torch.device) -> dict[str, Any]:
    precision = precision_resolve(config.precision, device)
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps > 0 else -1,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "max_length": config.max_length,
        "logging_steps": config.logging_steps,
        "eval_strategy": "steps" if config.eval_every > 0 else "no",
        "eval_steps": config.eval_every if config.eval_every > 0 else None,
        # Checkpoints (resume after a lost attempt); the final weights are saved once, at the end, atomically.
        "save_strategy": "steps" if config.checkpoint_every > 0 else "no",
        "save_steps": config.checkpoint_every or 500,  # unused when save_strategy is "no"
        "save_total_limit": 1,
        "report_to": "none",
        "seed": config.seed,
        "data_seed": config.seed,
        "use_cpu": device.type == "cpu",
        "bf16": precision.bf16,
        "fp16": precision.fp16,  # the trainer adds a gradient scaler
        # transformers 5.23's names for gradient checkpointing (`gradient_checkpointing*` are deprecated aliases that
        # then mirror these; TRL's configs default the alias to True, so it is always set here). Non-reentrant: it
        # works with frozen inputs (LoRA) and autocast, and the reentrant form is deprecated by torch.
        "activation_checkpointing": config.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if config.gradient_checkpointing else None,
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
    }


def _build_trainer(
    config: TrainingConfig,
    base_path: str | Path,
    train_rows: Sequence[Any],
    eval_pairs: Sequence[PreferencePair],
    work_dir: Path,
    callback: Any,
    device: torch.device,
) -> Any:
    """The TRL trainer for `config.method`, built on the base model at `base_path`.

    Before any weight is loaded: the precision and QLoRA are checked against the worker (UnsupportedOnWorker),
    and the memory the run needs against its budget (workers/ml/memory.py, TrainingMemoryError). An
    out-of-memory while the trainer places the weights or precomputes reference log-probabilities is
    explained the same way."""
    precision = precision_resolve(config.precision, device)
    quantized = _quantized_loading(config, precision, device)
    memory.training_memory_check(config, base_path, device)
    return memory.out_of_memory_explained(
        lambda: _trainer_construct(
            config, base_path, train_rows, eval_pairs, work_dir, callback, device, precision, quantized
        ),
        config,
        base_path,
        device,
    )


def _trainer_construct(
    config: TrainingConfig,
    base_path: str | Path,
    train_rows: Sequence[Any],
    eval_pairs: Sequence[PreferencePair],
    work_dir: Path,
    callback: Any,
    device: torch.device,
    precision: Precision,
    quantized: dict[str, Any],
) -> Any:
    tokenizer = load_tokenizer(base_path)
    # Mixed precision loads fp32 weights (the master copy AdamW updates) and the trainer autocasts; `bfloat16`
    # loads bf16 weights. The frozen reference is loaded like the policy, so their log-ratio starts at exactly 0.
    dtype = precision.weights
    args = _trainer_args(config, work_dir, device)
    peft_config = _lora_config(config, reward=config.method == "reward") if config.lora else None
    eval_dataset = _pairs_dataset(eval_pairs, tokenizer) if eval_pairs and config.eval_every > 0 else None
    # Full fine-tune with precomputed reference log-probs: no reference model at all. TRL 1.16 computes them with
    # the policy itself before its first step (trl/trainer/dpo_trainer.py, kto_trainer.py: `ref_model` None and
    # `precompute_ref_log_probs`), so nothing is left on the device afterwards. LoRA: the disabled adapter is the
    # reference.
    needs_reference = not config.lora and not config.precompute_ref_log_probs
    reference_args: dict[str, Any] = {
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
        "precompute_ref_batch_size": config.batch_size,
    }
    method = config.method
    if method == "reward":
        from trl import RewardConfig, RewardTrainer

        model = _load_reward(base_path, tokenizer, dtype, **quantized)
        return RewardTrainer(
            model=_kbit_prepared(model, config) if quantized else model,
            args=RewardConfig(**args),
            train_dataset=_pairs_dataset(train_rows, tokenizer),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
        )
    model = load_policy(base_path, dtype, **quantized)
    if quantized:
        model = _kbit_prepared(model, config)
    if method in ("dpo", "ipo", "robust"):
        from trl import DPOConfig, DPOTrainer

        loss = {"dpo": "sigmoid", "ipo": "ipo", "robust": "robust"}[method]
        return DPOTrainer(
            model=model,
            ref_model=load_policy(base_path, dtype) if needs_reference else None,
            args=DPOConfig(
                **args,
                **reference_args,
                loss_type=[loss],
                beta=config.beta,
                label_smoothing=config.label_smoothing if method == "robust" else 0.0,
            ),
            train_dataset=_pairs_dataset(train_rows, tokenizer),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
        )
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer(
            model=model,
            args=CPOConfig(**args, loss_type="simpo", cpo_alpha=0.0, beta=config.beta, simpo_gamma=config.simpo_gamma),
            train_dataset=_pairs_dataset(train_rows, tokenizer),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
        )
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(
            model=model,
            args=ORPOConfig(**args, beta=config.beta),
            train_dataset=_pairs_dataset(train_rows, tokenizer),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
        )
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer(
            model=model,
            ref_model=load_policy(base_path, dtype) if needs_reference else None,
            args=KTOConfig(
                **{**args, "eval_strategy": "no", "eval_steps": None},  # KTO evaluates on binary rows only
                **reference_args,
                beta=config.beta,
                desirable_weight=config.kto_desirable_weight,
                undesirable_weight=config.kto_undesirable_weight,
            ),
            train_dataset=_binary_dataset(train_rows, tokenizer),
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
        )
    raise ValueError(f"unknown method {method!r}")


def train(
    *,
    base_path: str | Path,
    config: TrainingConfig,
    train_rows: Sequence[PreferencePair] | Sequence[BinaryExample],
    output_dir: str | Path,
    eval_pairs: Sequence[PreferencePair] = (),
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    device: str | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """Train `config.method` on `train_rows` from the checkpoint at `base_path`; save the result to `output_dir`.

    `train_rows` are PreferencePair rows, or BinaryExample rows for KTO. The saved checkpoint is a plain
    `save_pretrained` directory (LoRA adapters are merged), loadable like the base. Raises TrainingStopped
    (and saves nothing) when `should_stop()` returned STOP (or True), TrainingPaused after saving a checkpoint
    when it returned SAVE_AND_STOP. With `checkpoint_dir`, checkpoints are saved there every
    `config.checkpoint_every` steps and the run resumes from the latest complete one found there.
    Under `accelerate launch` every rank calls this; only the main process writes `output_dir`.
    """
    if not train_rows:
        raise ValueError("no training rows")
    torch.manual_seed(config.seed)
    target = device_pick(device)
    output_dir = Path(output_dir)
    work_dir = scratch_dir(output_dir)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None and config.checkpoint_every > 0 else None
    if checkpoints is None:
        config = dataclasses.replace(config, checkpoint_every=0)
    if checkpoints is not None and os.environ.get("RANK", "0") == "0":
        checkpoints_prune_incomplete(checkpoints)
    resume = checkpoint_latest(checkpoints)
    tokenizer = load_tokenizer(base_path)
    tokens_per_row = _mean_tokens(tokenizer, train_rows, config.max_length)
    callback = _progress_callback(config, tokens_per_row, on_progress, should_stop)
    try:
        trainer = _build_trainer(config, base_path, train_rows, eval_pairs, checkpoints or work_dir, callback, target)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for noisy in (PrinterCallback, ProgressCallback):  # progress leaves through on_progress, not stdout
            trainer.remove_callback(noisy)
        if resume is not None:
            logger.info("resuming from %s (step %s)", resume[0], resume[1])
        started, cpu_started = time.perf_counter(), time.process_time()
        checkpoint = str(resume[0]) if resume is not None else None
        # An out-of-memory in the loop becomes a TrainingMemoryError naming the need and the options that fit.
        output = memory.out_of_memory_explained(
            lambda: trainer.train(resume_from_checkpoint=checkpoint), config, base_path, target
        )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        if callback.stopped:
            raise TrainingStopped(f"stopped on request after step {trainer.state.global_step}")
        if callback.paused:
            raise TrainingPaused(trainer.state.global_step)
        _final_save(trainer, config, base_path, output_dir)
    finally:  # success, a stop on request or an error alike: nothing in it outlives the attempt
        _remove_tree(work_dir)
    losses = [entry["loss"] for entry in callback.history if "loss" in entry]
    steps = trainer.state.global_step
    trained = steps - callback.first_step  # this attempt's own steps (a resumed one started at its checkpoint)
    world = _world_size()
    return TrainingResult(
        steps=steps,
        total_steps=trainer.state.max_steps,
        stopped=False,
        final_loss=losses[-1] if losses else float(output.training_loss),
        seconds=seconds,
        steps_per_s=trained / max(seconds, 1e-9),
        tokens_per_s=trained
        * config.batch_size
        * config.gradient_accumulation_steps
        * world
        * tokens_per_row
        / max(seconds, 1e-9),
        log_history=callback.history,
        cpu_seconds=cpu_seconds,
        resumed_from_step=callback.first_step,
        world_size=world,
    )


def _final_save(trainer: Any, config: TrainingConfig, base_path: str | Path, output_dir: Path) -> None:
    """The trained weights and tokenizer as a plain checkpoint, written by the main process only.

    One copy per process (a single process, DDP, ZeRO-2): `trained_model_for_save` (LoRA merged, the base's
    dtype). Sharded weights (FSDP, ZeRO-3): the trainer's `save_model`, which gathers them on every rank and
    writes on the main one, in the dtype they trained in.
    """
    accelerator = trainer.accelerator
    if getattr(trainer, "is_fsdp_enabled", False) or _zero3(trainer):
        trainer.save_model(str(output_dir))
        if accelerator.is_main_process:
            (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle of the trainer's arguments
    else:
        model = trained_model_for_save(trainer, config, base_path)
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(output_dir)
            trainer.processing_class.save_pretrained(output_dir)
    accelerator.wait_for_everyone()


def _zero3(trainer: Any) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(plugin is not None and getattr(plugin, "zero_stage", 0) == 3)


def scratch_dir(output_dir: Path) -> Path:
    """The trainer's scratch folder for `output_dir` (next to it); `train` removes it when it returns or raises.
    A process killed mid-training leaves it: its caller removes stale ones before the next attempt."""
    return output_dir.parent / f".{output_dir.name}-trainer"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --- evaluation ------------------------------------------------------------------------------------
@torch.inference_mode()
def completion_logps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    device: torch.device,
    batch: int = 16,
) -> tuple[list[float], list[int]]:
    """Sum of log π(response tokens | prompt) per row, and the number of response tokens."""
    sums: list[float] = []
    counts: list[int] = []
    for start in range(0, len(prompts), batch):
        ids, masks = [], []
        for prompt, response in zip(prompts[start : start + batch], responses[start : start + batch], strict=True):
            prefix = tokenizer(_prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
            full = tokenizer(_full_text(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
            ids.append(full)
            masks.append([0] * len(prefix) + [1] * (len(full) - len(prefix)))
        width = max(len(x) for x in ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)  # [B, T]
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)  # [B, T]
        loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)  # [B, T]
        logits = model(input_ids=input_ids, attention_mask=attention).logits.float()  # [B, T, V]
        logps = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts token t+1 from t: [B, T-1, V]
        token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
        mask = loss_mask[:, 1:].float()  # [B, T-1]
        sums.extend((token_logps * mask).sum(-1).tolist())
        counts.extend(mask.sum(-1).long().tolist())
    return sums, counts


@dataclass
class PairAccuracy:
    """Held-out preference accuracy: share of pairs where the model ranks chosen above rejected."""

    accuracy: float
    mean_margin: float
    pairs: int


def policy_pair_accuracy(
    *,
    policy_path: str | Path,
    reference_path: str | Path | None,
    pairs: Sequence[PreferencePair],
    method: str,
    beta: float = 0.1,
    device: str | None = None,
    precision: str = "auto",
) -> PairAccuracy:
    """Implicit reward accuracy of a trained policy on held-out pairs, computed in the run's `precision` (its
    weights' dtype, under its autocast): the log-probabilities the trainer optimised.

    DPO family and KTO: r(x, y) = β (log π(y|x) - log π_ref(y|x))  (Rafailov et al. 2023, eq. 5).
    SimPO and ORPO have no reference: r(x, y) = β · mean token log π(y|x) (SimPO's length-normalised reward).
    """
    if not pairs:
        return PairAccuracy(accuracy=float("nan"), mean_margin=float("nan"), pairs=0)
    target = device_pick(device)
    compute = precision_resolve(precision, target)
    tokenizer = load_tokenizer(policy_path)
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    policy = load_policy(policy_path, compute.weights).to(target).eval()
    with compute.autocast(target):
        logps, counts = completion_logps(policy, tokenizer, prompts, responses, target)
    del policy  # one model on the device at a time
    if method in REFERENCE_METHODS and reference_path is not None:
        reference = load_policy(reference_path, compute.weights).to(target).eval()
        with compute.autocast(target):
            ref_logps, _ = completion_logps(reference, tokenizer, prompts, responses, target)
        del reference
        rewards = [beta * (a - b) for a, b in zip(logps, ref_logps, strict=True)]
    else:
        rewards = [beta * s / max(n, 1) for s, n in zip(logps, counts, strict=True)]
    n = len(pairs)
    margins = [rewards[i] - rewards[n + i] for i in range(n)]
    return PairAccuracy(accuracy=sum(m > 0 for m in margins) / n, mean_margin=sum(margins) / n, pairs=n)


def reward_pair_accuracy(
    *, reward_path: str | Path, pairs: Sequence[PreferencePair], device: str | None = None, precision: str = "auto"
) -> PairAccuracy:
    """Plain accuracy of a reward model on held-out pairs, r(chosen) > r(rejected), scored in the run's
    `precision` (weights' dtype and autocast)."""
    from workers.ml.reward import RewardModel

    if not pairs:
        return PairAccuracy(accuracy=float("nan"), mean_margin=float("nan"), pairs=0)
    target = device_pick(device)
    compute = precision_resolve(precision, target)
    weights = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[compute.weights]
    scorer = RewardModel(reward_path, device=str(target), dtype=weights)
    with compute.autocast(target):
        chosen = scorer.score([(p.prompt, p.chosen) for p in pairs])
        rejected = scorer.score([(p.prompt, p.rejected) for p in pairs])
    margins = [a - b for a, b in zip(chosen, rejected, strict=True)]
    return PairAccuracy(
        accuracy=sum(m > 0 for m in margins) / len(pairs), mean_margin=sum(margins) / len(pairs), pairs=len(pairs)
    )


def evaluate(
    *,
    method: str,
    output_path: str | Path,
    base_path: str | Path,
    pairs: Sequence[PreferencePair],
    beta: float,
    device: str | None = None,
    precision: str = "auto",
) -> PairAccuracy:
    """Held-out accuracy fit for the method: plain for reward models, implicit reward for policies; computed in
    the run's `precision` (TrainingConfig.precision)."""
    if method in POLICY_METHODS:
        return policy_pair_accuracy(
            policy_path=output_path,
            reference_path=base_path,
            pairs=pairs,
            method=method,
            beta=beta,
            device=device,
            precision=precision,
        )
    return reward_pair_accuracy(reward_path=output_path, pairs=pairs, device=device, precision=precision)
