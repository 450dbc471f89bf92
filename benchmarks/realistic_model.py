"""A realistic causal LM with random weights, built locally: Qwen2.5-0.5B's shape, no download.

    .venv/bin/python benchmarks/realistic_model.py --size 0.5b [--layers 2] [--cache-dir DIR]

prints the checkpoint's folder (built on first use, reused afterwards) and its parameter count.
`generation.py` and `training.py` call `benchmark_model(size, layers, ...)` for their `--size` option.

Shape: Qwen2.5-0.5B's config (hidden 896, 14 query heads and 2 key/value heads of 64, 24 layers, MLP 4864,
RMSNorm eps 1e-6, rope theta 1e6, tied input/output embeddings) with its 151,936 embedding rows:
494.0 M parameters, of which 136.1 M are the embedding that is also the output head. `--layers N`
keeps every size but the depth (a CPU smoke run: 2 layers are 165.9 M parameters).

Tokenizer: there is none to download, so a byte-level BPE is trained on the project's corpus
(`workers.ml.tiny.tokenizer_build`, ChatML chat template, `<|im_end|>` ends a turn). It has ~830 tokens
while the model keeps Qwen2.5's 151,936 rows, as Qwen2.5 itself keeps 151,936 rows for a 151,665-token
vocabulary: the parameter count, the output head's cost per token, the logits' memory and the seeded
sampler's per-vocabulary work are those of the real model. The price: a random model samples ids the
tokenizer does not have, which decode to nothing, so the texts are short while the token counts are exact.

Weights are drawn by `AutoModelForCausalLM.from_config` (transformers' own initialisation, seeded) and
saved in bfloat16 as Qwen2.5's checkpoint is; both sides of a benchmark load the folder through
`from_pretrained`. The folder's name carries a hash of everything that decides its contents (shape,
tokenizer, seed, dtype, this builder's version), so repeated runs reuse it and a change builds a new
one; it is written to a scratch folder and renamed into place, so a build killed half-way is never reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = ("tiny", "0.5b")
# Qwen2.5-0.5B's config.json, less what does not change the computation (ids, names, versions).
QWEN25_05B: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}
TOKENIZER_VOCAB = 8192  # asked of the BPE trainer; the corpus yields fewer (~830)
BUILDER_VERSION = 1  # bump when the way a checkpoint is built changes: the cache key includes it
DEFAULT_CACHE = Path(os.environ.get("PREFARENA_BENCH_MODELS", Path.home() / ".cache" / "prefarena" / "bench-models"))


def realistic_spec(layers: int | None = None) -> dict[str, Any]:
    """Qwen2.5-0.5B's shape, with `layers` decoder layers instead of 24 when given."""
    spec = dict(QWEN25_05B)
    if layers is not None:
        if layers < 1:
            raise ValueError("layers must be >= 1")
        spec["num_hidden_layers"] = layers
    return spec


def parameter_count(spec: dict[str, Any]) -> int:
    """Parameters of a Qwen2 model of `spec` (tied embeddings; q/k/v carry biases, o_proj and the MLP none)."""
    hidden, heads, kv_heads = spec["hidden_size"], spec["num_attention_heads"], spec["num_key_value_heads"]
    head_dim = hidden // heads
    attention = hidden * heads * head_dim + heads * head_dim  # q_proj with bias
    attention += 2 * (hidden * kv_heads * head_dim + kv_heads * head_dim)  # k_proj, v_proj with bias
    attention += heads * head_dim * hidden  # o_proj
    mlp = 3 * hidden * spec["intermediate_size"]  # gate, up, down
    layer = attention + mlp + 2 * hidden  # two RMSNorms
    embedding = spec["vocab_size"] * hidden * (1 if spec["tie_word_embeddings"] else 2)
    return embedding + spec["num_hidden_layers"] * layer + hidden  # final norm


def _cache_key(spec: dict[str, Any], seed: int, dtype: str) -> str:
    from workers.ml.tiny import CORPUS_PATH

    material = {
        "spec": spec,
        "seed": seed,
        "dtype": dtype,
        "tokenizer_vocab": TOKENIZER_VOCAB,
        "corpus": hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest(),
        "builder": BUILDER_VERSION,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


def realistic_model_build(
    *, layers: int | None = None, cache_dir: Path | None = None, seed: int = 0, dtype: str = "bfloat16"
) -> Path:
    """The checkpoint folder of a random-weight Qwen2.5-0.5B-shaped model; built only if not cached yet."""
    spec = realistic_spec(layers)
    cache_dir = Path(cache_dir or DEFAULT_CACHE)
    final = cache_dir / f"qwen2-0.5b-shape-{spec['num_hidden_layers']}l-{_cache_key(spec, seed, dtype)}"
    if (final / "config.json").is_file():
        return final
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, Qwen2Config

    from workers.ml.tiny import corpus_load, tokenizer_build

    transformers.utils.logging.disable_progress_bar()  # the benchmarks print their own lines
    corpus = corpus_load()
    tokenizer = tokenizer_build(corpus.sentences + [f"{q} {a}" for q, a in corpus.qa_pairs], TOKENIZER_VOCAB)
    config = Qwen2Config(
        **spec,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    scratch = cache_dir / f".{final.name}.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    del model
    try:
        os.replace(scratch, final)
    except OSError:  # another process renamed its build into place first: same contents, keep that one
        if not (final / "config.json").is_file():
            raise
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def benchmark_model(
    size: str, layers: int | None, work: Path, *, tiny_name: str, tiny_steps: int, cache_dir: Path | None = None
) -> tuple[Path, str]:
    """(checkpoint folder, display name) of `--size`: the trained tiny model `tiny_name` or the realistic one."""
    started = time.perf_counter()
    if size == "tiny":
        if layers is not None:
            raise SystemExit("--layers applies to --size 0.5b only")
        from workers.ml.tiny import tiny_models_build

        path = tiny_models_build(work / "tiny", steps=tiny_steps, seed=0)[tiny_name]
        print(f"built the tiny models in {time.perf_counter() - started:.1f} s")
        return path, tiny_name
    if size != "0.5b":
        raise SystemExit(f"--size must be one of {', '.join(SIZES)}")
    path = realistic_model_build(layers=layers, cache_dir=cache_dir)
    spec = realistic_spec(layers)
    print(
        f"realistic model: Qwen2.5-0.5B shape, {spec['num_hidden_layers']} layers, random weights "
        f"({parameter_count(spec) / 1e6:.1f} M parameters) at {path} ({time.perf_counter() - started:.1f} s)"
    )
    return path, f"qwen2-0.5b-shape-{spec['num_hidden_layers']}l"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["0.5b"], default="0.5b")
    parser.add_argument("--layers", type=int, help="decoder layers (24, Qwen2.5-0.5B's depth)")
    parser.add_argument("--cache-dir", type=Path, help=f"where checkpoints are kept ({DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path = realistic_model_build(layers=args.layers, cache_dir=args.cache_dir)
    spec = realistic_spec(args.layers)
    print(f"{path}  ({parameter_count(spec) / 1e6:.1f} M parameters, {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
