"""The promotion gate (workers/ml/promotion_gate.py): the e-value's arithmetic, its state, and its error rates
on simulated rounds (no models, no database)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

from workers.ml.promotion_gate import (
    GateConfig,
    GateConfigError,
    GateState,
    gate_decide,
    gate_next_batch_size,
    gate_report,
    gate_start,
    gate_update,
    log_e_futility,
    log_e_promotion,
    outcome_from_verdict,
)
from workers.ml.promotion_gate_sim import gate_simulate, wilson_lower_bound

RUNS = 1000


def _fed(outcomes: list[str], config: GateConfig | None = None, challengers: int = 1) -> GateState:
    state = gate_start(config or GateConfig(min_decisive=0, futility_alpha=None), challengers=challengers)
    state, _ = gate_update(state, outcomes)
    return state


def test_e_value_is_exactly_one_at_the_start():
    report = gate_report(gate_start())
    assert report.e_value == 1.0
    assert report.log_e_value == 0.0
    assert report.decision == "continue"
    assert report.prompts == 0 and report.prompts_left == 512


def test_e_value_grows_on_every_win_and_falls_on_every_loss():
    config = GateConfig(min_decisive=0, futility_alpha=None)
    previous = 0.0
    for wins in range(1, 12):
        log_e = float(log_e_promotion(wins, 0, config))
        assert log_e > previous
        previous = log_e
    assert float(log_e_promotion(5, 1, config)) < float(log_e_promotion(5, 0, config))


def test_ties_leave_the_e_value_unchanged():
    # given the same decisive verdicts, with and without ties between them
    without = gate_report(_fed(["challenger", "champion", "challenger"]))
    with_ties = gate_report(_fed(["tie", "challenger", "tie", "champion", "tie", "challenger", "tie"]))
    # then the evidence is the same; only the prompts used differ
    assert with_ties.log_e_value == without.log_e_value
    assert with_ties.ties == 4 and with_ties.prompts == 7 and without.prompts == 3


def test_e_value_is_the_mixture_of_likelihood_ratios_against_one_half():
    config = GateConfig(prior_effects=(0.1, 0.3))
    expected = 0.5 * (1.2**7 * 0.8**2) + 0.5 * (1.6**7 * 0.4**2)
    assert math.exp(float(log_e_promotion(7, 2, config))) == pytest.approx(expected, rel=1e-12)
    futility = 0.5 * ((0.5 / 0.6) ** 2 * (0.5 / 0.4) ** 7) + 0.5 * ((0.3 / 0.6) ** 2 * (0.7 / 0.4) ** 7)
    assert math.exp(float(log_e_futility(2, 7, config))) == pytest.approx(futility, rel=1e-12)


def test_both_e_processes_are_supermartingales_on_their_nulls():
    """One more decisive prompt: the expected e-value does not grow under the null (the Ville argument's step)."""
    config = GateConfig()
    for wins, losses in [(0, 0), (3, 1), (10, 12)]:
        now = math.exp(float(log_e_promotion(wins, losses, config)))
        for rate in (0.5, 0.45, 0.3, 0.0):
            step = rate * math.exp(float(log_e_promotion(wins + 1, losses, config)))
            step += (1 - rate) * math.exp(float(log_e_promotion(wins, losses + 1, config)))
            assert step <= now * (1 + 1e-12), (wins, losses, rate)
        now = math.exp(float(log_e_futility(wins, losses, config)))
        for rate in (0.6, 0.7, 1.0):  # futility's null: the challenger is at least 1/2 + margin
            step = rate * math.exp(float(log_e_futility(wins + 1, losses, config)))
            step += (1 - rate) * math.exp(float(log_e_futility(wins, losses + 1, config)))
            assert step <= now * (1 + 1e-12), (wins, losses, rate)


def test_state_round_trips_through_json():
    # given a test in progress, stored as JSON on a row
    state = gate_start(GateConfig(prompt_budget=200, batch_size=20), challengers=3)
    state, report = gate_update(state, ["challenger"] * 9 + ["champion"] * 4 + ["tie"] * 7)
    stored = json.loads(json.dumps(state.to_json()))
    # when it is read back
    restored = GateState.from_json(stored)
    # then it is the same test and reports the same figures
    assert restored == state
    assert gate_report(restored) == report
    json.dumps(asdict(report))  # the report is storable too
    assert isinstance(stored["config"]["prior_effects"], list)


def test_damaged_stored_state_is_a_value_error_naming_the_field():
    stored = gate_start().to_json()
    with pytest.raises(ValueError, match="wins"):
        GateState.from_json({**stored, "wins": -1})
    with pytest.raises(ValueError, match="decision"):
        GateState.from_json({**stored, "decision": "maybe"})
    with pytest.raises(ValueError, match="colour: is not a setting"):
        GateState.from_json({**stored, "config": {**stored["config"], "colour": 1}})


def test_spent_budget_without_a_decision_is_inconclusive_and_ends_the_test():
    config = GateConfig(prompt_budget=64, batch_size=32)
    state = gate_start(config)
    state, report = gate_update(state, ["challenger", "champion"] * 16)
    assert report.decision == "continue" and gate_next_batch_size(state) == 32
    state, report = gate_update(state, ["champion", "challenger"] * 16)
    assert report.decision == "inconclusive"
    assert report.prompts == 64 and report.prompts_left == 0
    assert gate_next_batch_size(state) == 0
    with pytest.raises(ValueError, match="ended"):
        gate_update(state, ["challenger"])


def test_a_batch_beyond_the_budget_or_with_unknown_outcomes_is_refused():
    state = gate_start(GateConfig(prompt_budget=40, batch_size=32))
    state, _ = gate_update(state, ["tie"] * 32)
    assert gate_next_batch_size(state) == 8  # the last batch is short
    with pytest.raises(ValueError, match="only 8 prompts"):
        gate_update(state, ["tie"] * 9)
    with pytest.raises(ValueError, match="unknown outcomes"):
        gate_update(state, ["a"])


def test_clear_wins_promote_and_clear_losses_reject():
    state, report = gate_update(gate_start(), ["challenger"] * 28 + ["champion"] * 4)
    assert report.decision == "promote" and report.e_value >= 20
    state, report = gate_update(gate_start(), ["champion"] * 24 + ["challenger"] * 8)
    assert report.decision == "reject" and report.futility_e_value is not None and report.futility_e_value >= 20


def test_no_decision_before_min_decisive():
    config = GateConfig(min_decisive=20, batch_size=16)
    state, report = gate_update(gate_start(config), ["challenger"] * 15 + ["tie"])
    assert report.e_value > 20 and report.decision == "continue"
    assert "15 decisive prompts of the 20" in report.reason


def test_alpha_is_split_across_the_challengers_of_a_round():
    # given 16 wins and 2 losses: enough at alpha 0.05, not at alpha 0.05 / 10
    outcomes = ["challenger"] * 16 + ["champion"] * 2
    config = GateConfig(min_decisive=0)
    alone, family = gate_report(_fed(outcomes, config)), gate_report(_fed(outcomes, config, challengers=10))
    assert alone.alpha_used == 0.05 and alone.threshold == pytest.approx(20)
    assert family.alpha_used == pytest.approx(0.005) and family.threshold == pytest.approx(200)
    assert family.family_alpha == 0.05 and "family of 10" in family.error_rate
    assert alone.e_value == family.e_value
    assert 20 <= alone.e_value < 200
    assert alone.decision == "promote" and family.decision == "continue"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"prompt_budget": 0}, "prompt_budget"),
        ({"prompt_budget": 100.0}, "prompt_budget"),
        ({"batch_size": 1000}, "batch_size"),
        ({"min_decisive": -1}, "min_decisive"),
        ({"futility_alpha": 0.0}, "futility_alpha"),
        ({"futility_margin": 0.5}, "futility_margin"),
        ({"prior_effects": ()}, "prior_effects"),
        ({"prior_effects": (0.1, 0.5)}, "prior_effects"),
        ({"prior_effects": (-0.1,)}, "prior_effects"),
    ],
)
def test_bad_config_is_a_value_error_naming_the_field(values, field):
    with pytest.raises(ValueError, match=f"^{field}: ") as error:
        GateConfig(**values)
    assert isinstance(error.value, GateConfigError) and error.value.field == field


def test_challengers_must_be_positive():
    with pytest.raises(ValueError, match="challengers"):
        gate_start(challengers=0)


def test_judge_verdicts_map_to_outcomes():
    assert [outcome_from_verdict(v) for v in ("a", "b", "tie", "error")] == ["challenger", "champion", "tie", None]
    with pytest.raises(ValueError, match="unknown verdict"):
        outcome_from_verdict("first")


def test_decision_rule_is_elementwise():
    config = GateConfig()
    codes = gate_decide([28, 4, 10], [4, 28, 10], [0, 0, 492], config)
    assert codes.tolist() == [1, 2, 3]  # promote, reject, inconclusive (the budget of 512 spent)


def test_wilson_lower_bound_matches_the_old_rule():
    # workers/training.py: 12 of 16 → (0.505, 0.899)
    assert float(wilson_lower_bound(12, 16)) == pytest.approx(0.5050, abs=1e-4)


# --- the Done-when rates, on simulated rounds (fixed seeds) ---------------------------------------------------
def test_ten_challengers_equal_to_the_champion_are_promoted_in_at_most_5_percent_of_rounds():
    result = gate_simulate(GateConfig(), win_rates=[0.5] * 10, tie_rate=0.2, runs=RUNS, seed=1)
    assert result.false_promoted_any == result.promoted_any <= 0.05, result
    assert result.promoted <= 0.005 * 1.5, result  # per challenger: alpha / 10, with room for sampling noise
    # the old rule (best of 10 by Wilson lower bound, 16 prompts, ties half) on the same battles does far worse
    assert result.old_rule_false_any > 0.10, result


@pytest.mark.parametrize("tie_rate", [0.0, 0.2])
def test_a_challenger_at_60_percent_is_promoted_within_the_budget_in_80_percent_of_runs(tie_rate):
    result = gate_simulate(GateConfig(), win_rates=[0.6], tie_rate=tie_rate, runs=RUNS, seed=2)
    assert result.promoted >= 0.80, result
    assert result.prompts_median < GateConfig().prompt_budget / 2, result
