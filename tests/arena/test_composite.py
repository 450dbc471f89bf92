"""The composite fit: one rating from human votes and LLM-judge verdicts, each with its weight and position bias."""

from __future__ import annotations

import numpy as np
import pytest

from arena import composite
from arena.intervals import ELO_PER_LOGIT


def draw(rng: np.random.Generator, truth: np.ndarray, n: int, bias: float = 0.0) -> composite.SourceBattles:
    first, second = rng.integers(0, len(truth), (2, n))
    keep = first != second
    first, second = first[keep], second[keep]
    p = 1 / (1 + np.exp(-(truth[first] - truth[second] + bias)))
    return composite.SourceBattles(first, second, (rng.random(len(first)) < p).astype(float))


def rmse(ratings: np.ndarray, truth: np.ndarray) -> float:
    centred = ELO_PER_LOGIT * (truth - truth.mean()) + 1000
    return float(np.sqrt(np.mean((ratings - centred) ** 2)))


def test_a_biased_judge_with_75_percent_agreement_plus_humans_beats_either_source_alone():
    # given 12 models, 1,500 human votes and 8,000 verdicts of a judge that favours the first answer (+0.8 logit)
    rng = np.random.default_rng(5)
    truth = np.linspace(-2.75, 2.75, 12)  # two BT voters agree ~75% on these gaps
    models = [f"m{k}" for k in range(12)]
    human = draw(rng, truth, 1500)
    judge = draw(rng, truth, 8000, bias=0.8)
    # and 600 shared items labelled by both, from which the judge's weight is learned
    shared = draw(rng, truth, 600)
    p_judge = 1 / (1 + np.exp(-(truth[shared.first] - truth[shared.second] + 0.8)))
    judge_on_shared = (rng.random(len(shared.first)) < p_judge).astype(float)
    agreement = composite.agreement(shared.outcome, judge_on_shared)
    assert agreement == pytest.approx(0.75, abs=0.04)
    weight = composite.weight_from_agreement(agreement)
    # when fused, with a position term per source
    fused = composite.fit(models, {"human": human, "llm": judge}, {"human": 1.0, "llm": weight})
    humans_only = composite.fit(models, {"human": human}, {"human": 1.0})
    judge_only = composite.fit(models, {"llm": judge}, {"llm": 1.0}, position_terms=False)
    # then the fused ratings are closer to the truth than either source alone
    assert rmse(fused.ratings, truth) < rmse(humans_only.ratings, truth)
    assert rmse(fused.ratings, truth) < rmse(judge_only.ratings, truth)
    # and the judge's position bias is found within its interval, the humans' is ~0
    value, low, high = fused.position_bias["llm"]
    assert low <= 0.8 <= high
    assert fused.position_bias["human"][1] <= 0.0 <= fused.position_bias["human"][2]


def test_weights_learned_from_agreement():
    assert composite.weight_from_agreement(1.0) == 1.0
    assert composite.weight_from_agreement(0.75) == pytest.approx(0.25)
    assert composite.weight_from_agreement(0.5) == 0.0
    assert composite.weight_from_agreement(0.4) == 0.0  # worse than chance: no weight
    assert composite.weight_from_agreement(0.75, human_agreement=0.75) == 1.0


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"human": -1.0}, "finite number"),
        ({"human": float("nan")}, "finite number"),
        ({"crowd": 1.0}, "unknown source"),
        ({"human": 0.0}, "at least one source"),
    ],
)
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        composite.validate_weights(weights)
