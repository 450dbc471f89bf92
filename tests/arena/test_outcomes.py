"""The four pairwise outcomes are defined once (arena/outcomes.py); every place that maps them agrees."""

from __future__ import annotations

import pytest

from annotations.models import PairwiseChoice
from arena import outcomes
from arena.models import Winner
from arena.ratings import Battle, PairCounts, elo_online


def test_the_vote_enum_is_the_judgment_enum_built_from_the_outcomes():
    assert Winner is PairwiseChoice
    assert PairwiseChoice.values == list(outcomes.OUTCOMES)
    assert [label for _, label in PairwiseChoice.choices] == list(outcomes.OUTCOMES.values())
    assert PairwiseChoice.BOTH_BAD == "both_bad" and PairwiseChoice.__module__ == "annotations.models"


def test_file_spellings_round_trip_and_both_bad_counts_as_a_tie_in_battle_files():
    assert {outcomes.FROM_FILE_WINNER[s] for s in outcomes.FILE_WINNER.values()} == set(outcomes.OUTCOMES)
    battles = [Battle("x", "y", outcomes.FILE_WINNER[o]) for o in outcomes.OUTCOMES]
    counts = PairCounts.from_battles(battles)
    assert counts.wins.tolist() == [[0, 1], [1, 0]] and counts.ties.tolist() == [[0, 2], [2, 0]]


@pytest.mark.parametrize(
    ("outcome", "a_is_lo", "column"),
    [
        ("a", True, "wins_lo"),
        ("a", False, "wins_hi"),
        ("b", True, "wins_hi"),
        ("b", False, "wins_lo"),
        ("tie", True, "ties"),
        ("both_bad", False, "both_bad"),
    ],
)
def test_pair_columns(outcome, a_is_lo, column):
    assert outcomes.pair_column(outcome, a_is_lo) == column
    assert column in outcomes.PAIR_COLUMNS


def test_pair_column_refuses_what_is_not_an_outcome():
    with pytest.raises(ValueError, match="not an outcome"):
        outcomes.pair_column("model_a", True)


def test_one_elo_step_is_the_online_elo_of_battle_files():
    sequence = ["a", "b", "tie", "a", "both_bad", "a"]
    ra = rb = outcomes.ELO_INIT
    for outcome in sequence:
        ra, rb = outcomes.elo_step(ra, rb, outcome)
    online = elo_online([Battle("x", "y", outcomes.FILE_WINNER[o], tstamp=t) for t, o in enumerate(sequence)])
    assert online == {"x": ra, "y": rb}
    assert ra > outcomes.ELO_INIT > rb  # three wins, one loss
    assert ra + rb == pytest.approx(2 * outcomes.ELO_INIT)  # zero-sum
