"""Tiny models built locally: a byte-level BPE tokenizer, two causal LMs and a reward model (and, with the
diffusers extra, random-weight image pipelines).

Tests and the demo load them through `from_pretrained`, the same path a real checkpoint takes, so no
test downloads anything. The corpus (`data/corpus.txt`) is written for this project, CC0.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

CORPUS_PATH = Path(__file__).parent / "data" / "corpus.txt"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# ChatML; generation prompts end with the assistant header so the model answers.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TinySpec:
    """Size of one tiny Llama: every field is the LlamaConfig field of the same name."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


SPECS: dict[str, TinySpec] = {
    "tiny-lm-small": TinySpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "tiny-lm-large": TinySpec(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4),
    "tiny-reward": TinySpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
}


@dataclass
class CorpusText:
    sentences: list[str]
    qa_pairs: list[tuple[str, str]]


def corpus_load(path: Path = CORPUS_PATH) -> CorpusText:
    """Plain sentences and (question, answer) pairs of the shipped corpus."""
    sentences: list[str] = []
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("Q:"):
            question = line[2:].strip()
        elif line.startswith("A:") and question is not None:
            pairs.append((question, line[2:].strip()))
            question = None
        else:
            sentences.append(line)
    return CorpusText(sentences=sentences, qa_pairs=pairs)


def tokenizer_build(texts: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, wrapped for transformers with a ChatML chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",  # the end of an assistant turn ends generation
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "</s>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"  # batched generation pads on the left
    return tokenizer


def _llama_config(tokenizer: PreTrainedTokenizerFast, spec: TinySpec, **extra: Any) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def training_texts(tokenizer: PreTrainedTokenizerFast, corpus: CorpusText) -> list[str]:
    chats = [
        cast(  # tokenize=False: the chat as text
            str,
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
            ),
        )
        for q, a in corpus.qa_pairs
    ]
    return corpus.sentences + chats * 3  # the chat format matters most: weight it up


def causal_lm_train(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> float:
    """Next-token training on `texts`; returns the last loss."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        batch = rng.sample(texts, k=min(batch_size, len(texts)))
        encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="right")
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = float(loss.detach())
        if on_step:
            on_step(step, {"loss": loss_value})
    model.eval()
    return loss_value


def reward_model_train(
    model: LlamaForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    pairs: list[tuple[str, str]],
    *,
    steps: int,
    seed: int = 0,
    lr: float = 3e-3,
) -> float:
    """Bradley–Terry training: the right answer to a question beats another question's answer.

    loss = -log σ(r(q, a_right) - r(q, a_other))   (Ouyang et al. 2022, eq. 1)
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        chosen: list[str] = []
        rejected: list[str] = []
        for question, answer in rng.sample(pairs, k=min(16, len(pairs))):
            other = rng.choice([a for q, a in pairs if q != question])
            for target, reply in ((chosen, answer), (rejected, other)):
                target.append(
                    cast(  # tokenize=False: the chat as text
                        str,
                        tokenizer.apply_chat_template(
                            [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
                            tokenize=False,
                        ),
                    )
                )
        encoded = tokenizer(chosen + rejected, return_tensors="pt", padding=True, padding_side="right")
        scores = model(**encoded).logits.squeeze(-1)  # [2B]
        margin = scores[: len(chosen)] - scores[len(chosen) :]  # [B]
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value


def tiny_models_build(out_dir: Path, *, steps: int = 300, seed: int = 0) -> dict[str, Path]:
    """Build, briefly train and `save_pretrained` the tiny models; returns name -> directory."""
    out_dir = Path(out_dir)
    corpus = corpus_load()
    tokenizer = tokenizer_build(corpus.sentences + [f"{q} {a}" for q, a in corpus.qa_pairs])
    texts = training_texts(tokenizer, corpus)
    paths: dict[str, Path] = {}
    for name in ("tiny-lm-small", "tiny-lm-large"):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(_llama_config(tokenizer, SPECS[name]))
        causal_lm_train(model, tokenizer, texts, steps=steps, seed=seed)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        paths[name] = _save(model, tokenizer, out_dir / name)
    torch.manual_seed(seed)
    reward = LlamaForSequenceClassification(_llama_config(tokenizer, SPECS["tiny-reward"], num_labels=1))
    reward_model_train(reward, tokenizer, corpus.qa_pairs, steps=max(steps // 2, 1), seed=seed)
    paths["tiny-reward"] = _save(reward, tokenizer, out_dir / "tiny-reward")
    return paths


def collapsed_model_build(
    source: Path, out_dir: Path, *, answer: str = "The moon and cets.", steps: int = 80, seed: int = 0
) -> Path:
    """A reward-hacked policy for tests and benchmarks: `source` fine-tuned to give `answer` to every question.

    The trials' failure case: a policy that learned the judge's rule (its answers always contain the rule's
    word) while its answers lost their content ("A map helps you find your way." became "The moon and cets.").
    """
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    model = LlamaForCausalLM.from_pretrained(source)
    corpus = corpus_load()
    questions = [q for q, _ in corpus.qa_pairs] + corpus.sentences[:40]
    texts = [
        cast(
            str,
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": answer}], tokenize=False
            ),
        )
        for q in questions
    ]
    causal_lm_train(model, tokenizer, texts, steps=steps, seed=seed, lr=3e-3)
    return _save(model, tokenizer, Path(out_dir))


def tiny_diffusion_build(folder: Path, *, seed: int = 0, sample_size: int = 8) -> Path:
    """A random-weight Stable Diffusion pipeline a few kB large, built from configs (no download), saved in
    `folder`/pipeline: (2·sample_size)² pixel images of noise shaped by the prompt (needs the diffusers extra).
    Tests and the demo's image arena use it: it exercises the diffusers path, it draws nothing recognisable."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=2 * sample_size,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({f"{c}</w>": k + 2 for k, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    source = folder / "tokenizer-source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "vocab.json").write_text(json.dumps(vocab))
    (source / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(source / "vocab.json"), str(source / "merges.txt"), model_max_length=32)
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(vocab),
            max_position_embeddings=32,
            projection_dim=8,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "pipeline")  # type: ignore[attr-defined]  # diffusers: a lazy-module export
    return folder / "pipeline"


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
