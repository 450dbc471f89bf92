"""workers.ml on tiny models: isolation from Django, generation, reward scoring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_workers_ml_never_imports_django():
    """Every module of workers.ml (training, judging and the OpenAI client included), found by walking the
    package so a new module is covered too: none imports Django or another part of the project."""
    code = (
        "import importlib, pkgutil, sys, workers.ml;"
        "names = sorted(m.name for m in pkgutil.walk_packages(workers.ml.__path__, 'workers.ml.'));"
        "[importlib.import_module(n) for n in names];"
        "project = ('annotations', 'arena', 'models_hub', 'prefarena', 'django');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in project"
        " or (m.startswith('workers.') and not m.startswith('workers.ml')));"
        "print(names, bad); sys.exit(1 if bad or 'workers.ml.training' not in names else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_process_does_not_import_torch():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'prefarena.settings');"
        "os.environ.setdefault('DEBUG', '1'); django.setup();"
        "import prefarena.urls, prefarena.asgi, sys;"
        "bad = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'vllm') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tiny_models_load_with_from_pretrained_and_answer_in_chat_format(tiny_models):
    from workers.ml.generation import CausalLM, SamplingParams

    for name in ("tiny-lm-small", "tiny-lm-large"):
        lm = CausalLM(tiny_models[name])
        [completion] = lm.generate(["What do bees make?"], seeds=[0], params=SamplingParams(temperature=0))
        # the corpus answer: the tiny model learnt it, and stopped at the end of its turn
        assert "honey" in completion.text, (name, completion)
        assert completion.finish_reason == "stop"
    small = sum(p.numel() for p in CausalLM(tiny_models["tiny-lm-small"]).model.parameters())
    large = sum(p.numel() for p in CausalLM(tiny_models["tiny-lm-large"]).model.parameters())
    assert large > small


def test_generation_is_reproducible_per_row_whatever_the_batch(tiny_models):
    from workers.ml.generation import CausalLM, SamplingParams

    lm = CausalLM(tiny_models["tiny-lm-small"])
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95)
    prompts = ["What do bees make?", "Tell me about the sea and the long road to the old mill.", "Hi"]
    batch = lm.generate(prompts, seeds=[11, 22, 33], params=params)
    alone = [lm.generate([p], seeds=[s], params=params)[0] for p, s in zip(prompts, [11, 22, 33], strict=True)]
    reordered = lm.generate(prompts[::-1], seeds=[33, 22, 11], params=params)[::-1]
    assert [c.text for c in batch] == [c.text for c in alone] == [c.text for c in reordered]
    other_seeds = lm.generate(prompts, seeds=[12, 23, 34], params=params)
    assert [c.text for c in other_seeds] != [c.text for c in batch]


def test_generation_respects_max_new_tokens(tiny_models):
    from workers.ml.generation import CausalLM, SamplingParams

    lm = CausalLM(tiny_models["tiny-lm-small"])
    [completion] = lm.generate(
        ["Tell me a long story"], seeds=[1], params=SamplingParams(max_new_tokens=3, temperature=1.0)
    )
    assert completion.completion_tokens <= 3
    if completion.finish_reason == "length":
        assert completion.completion_tokens == 3


def test_seeded_sampler_matches_softmax_distribution():
    import torch

    from workers.ml.generation import SamplingParams, SeededSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    expected = torch.softmax(logits, dim=-1)[0]
    counts = torch.zeros(4)
    for seed in range(4000):
        sampler = SeededSampler([seed], SamplingParams(temperature=1.0), prompt_length=0, vocab_size=4, device="cpu")
        out = sampler(torch.zeros((1, 0), dtype=torch.long), logits.clone())
        counts[int(out.argmax())] += 1
    frequencies = counts / counts.sum()
    assert torch.allclose(frequencies, expected, atol=0.03), (frequencies, expected)


def test_top_p_keeps_only_the_nucleus():
    import torch

    from workers.ml.generation import SamplingParams, SeededSampler

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    seen = set()
    for seed in range(500):
        sampler = SeededSampler([seed], SamplingParams(temperature=1.0, top_p=0.8), 0, 4, "cpu")
        seen.add(int(sampler(torch.zeros((1, 0), dtype=torch.long), logits.clone()).argmax()))
    assert seen == {0, 1}


def test_reward_model_prefers_right_answers(tiny_models):
    from workers.ml.reward import RewardModel
    from workers.ml.tiny import corpus_load

    model = RewardModel(tiny_models["tiny-reward"])
    pairs = corpus_load().qa_pairs
    right = model.score([(q, a) for q, a in pairs], batch_size=7)
    wrong = model.score([(q, pairs[(i + 5) % len(pairs)][1]) for i, (q, _) in enumerate(pairs)], batch_size=5)
    wins = sum(r > w for r, w in zip(right, wrong, strict=True))
    assert wins / len(pairs) >= 0.8
    # batching does not change a score
    assert model.score([pairs[0]], batch_size=1)[0] == pytest.approx(right[0], abs=1e-4)


def test_reward_model_path_that_is_not_a_reward_model_is_a_clear_error(tiny_models):
    from workers.ml.reward import RewardModel

    with pytest.raises(Exception) as error:
        RewardModel(tiny_models["tiny-lm-small"])
    assert "tiny-lm-small" in str(error.value) or "num_labels" in str(error.value)
