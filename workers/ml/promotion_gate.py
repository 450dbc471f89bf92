"""The promotion gate: an anytime-valid sequential test of "the challenger beats the champion".

Pure numpy (no Django, no torch): the worker feeds it judged battles batch by batch and stores its state (a
JSON dict) on a row between batches; `workers/ml/promotion_gate_sim.py` runs the same decision rule on
simulated battles.

Data. Each held-out prompt gives one outcome in model terms: "challenger", "champion" or "tie". The judge is
asked in both orders and the caller collapses the two verdicts (both orders agree → that winner; they disagree
or either says tie → tie), which is what `workers.ml.judge.combine_orders` already returns
(`outcome_from_verdict` maps it). Ties carry no evidence either way and do NOT count half: the test is a
sign test on the decisive prompts. With X_t = +1 (challenger won), −1 (champion won), 0 (tie), F_t the
history and q_t = P(X_t = +1 | F_{t−1}, X_t ≠ 0):

    H0 (not better): q_t ≤ 1/2 at every t, whatever the tie rate (it may vary too).

Promotion e-process (mixture SPRT, Robbins 1970; the mSPRT of Johari et al. 2017, "Peeking at A/B tests";
Ramdas, Grünwald, Vovk & Shafer 2023, "Game-theoretic statistics and safe anytime-valid inference", Stat. Sci.).
For a win rate p ∈ (1/2, 1) the per-prompt factor is ℓ_p(+1) = 2p, ℓ_p(−1) = 2(1 − p), ℓ_p(0) = 1 (the
likelihood ratio of p against 1/2 on decisive prompts). Under H0:

    E[ℓ_p(X_t) | F_{t−1}] = P(tie) + P(decisive) · (q_t·2p + (1 − q_t)·2(1 − p))
    and q·2p + (1 − q)·2(1 − p) = 2(1 − p) + q·2(2p − 1) ≤ 2(1 − p) + (2p − 1) = 1   (q ≤ 1/2, 2p − 1 > 0),

so M_t(p) = (2p)^W (2(1 − p))^L (W wins, L losses so far) is a non-negative supermartingale with M_0 = 1 for
every null, and so is the mixture E_t = Σ_j w_j M_t(p_j) over the prior (p_j = 1/2 + d_j for the
`prior_effects` d_j, equal weights w_j; a discrete prior on (1/2, 1), so E_t is exact, no quadrature). Ville's
inequality: P_H0(∃ t: E_t ≥ 1/α) ≤ α. The gate promotes only at a look where E_t ≥ 1/α, so a challenger that
is not better is promoted with probability ≤ α however the looks are spaced, however long it runs and whatever
else stops it (futility, budget, an operator): it is anytime-valid, no correction for peeking. E_0 = 1, a win
multiplies each M(p_j) by 2p_j > 1, a loss by 2(1 − p_j) < 1, a tie by 1.

Futility (stop early as "reject"). The gate is sized to detect a challenger better by `futility_margin` m,
p1 = 1/2 + m. A second e-process mixes q_j = p1 − d_j < p1 against p1: g(+1) = q/p1, g(−1) = (1 − q)/(1 − p1),
g(0) = 1. For a challenger whose decisive win rate r ≥ p1, r·q/p1 + (1 − r)(1 − q)/(1 − p1) is linear in r,
equals 1 at r = p1 and decreases with r (q < p1), so the same argument makes it a test supermartingale: a
challenger at least m better is stopped for futility with probability ≤ `futility_alpha`. Futility stopping
only LOWERS the false-promotion rate: it ends a test without promoting, so the promoted paths are a subset of
those where E_t crossed 1/α (the bound above still holds). When the prompt budget is spent without either
decision the answer is "inconclusive" (not promoted).

Several challengers (variants of one round) against the same champion: `alpha` is the family-wise false
promotion rate, P(any challenger that is not better is promoted) ≤ alpha. Each of the k challengers is tested
at alpha/k (Bonferroni: the union bound needs no independence, and they are dependent: same champion, same
prompts, same judge). If several are promoted the caller may pick any of them (e.g. the largest e-value); the
bound holds for every choice. `futility_alpha` is not split: it protects good challengers, not the champion.

Caveats, stated rather than hidden: the "truth" is the judge's preference, not people's; prompts must be
drawn at random from a held-out pool much larger than the budget (drawn without replacement from a small pool,
q_t drifts with what was drawn and the bound is only approximate); a prompt the judge failed on is dropped by
the caller, which is fine only if failures do not depend on which model is better.

Defaults (`GateConfig()`): alpha 0.05, a budget of 512 prompts judged in batches of 32, no decision before 20
decisive prompts, futility at alpha 0.05 against a margin of 0.10 (a 60% challenger), effects 0.05–0.30.
Simulated (`benchmarks/gate.py`, 10,000 rounds, 2026-12-07): one of 10 challengers equal to the champion (20%
ties) is promoted in 1.3% of rounds (bound 5%; the old Wilson rule: 15.6%); a 60% challenger is promoted
within 512 prompts in 95% of runs (90% with 20% ties), after a median of 192 (224) prompts; among nine equal
ones, tested at alpha/10, in 71% of rounds (raise the budget for rounds of many variants: 640 prompts → 84%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Outcome = Literal["challenger", "champion", "tie"]
Decision = Literal["continue", "promote", "reject", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("challenger", "champion", "tie")
# Index = the code `gate_decide` returns; "continue" is the only one that is not final.
DECISIONS: tuple[Decision, ...] = ("continue", "promote", "reject", "inconclusive")
CONTINUE, PROMOTE, REJECT, INCONCLUSIVE = range(4)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_LOG_FLOAT_MAX = math.log(np.finfo(np.float64).max)


@dataclass(frozen=True)
class GateConfig:
    """How the gate decides; validated on construction (a bad value is a ValueError naming its field)."""

    alpha: float = 0.05  # family-wise false-promotion rate of one round: P(promote a challenger not better) ≤ alpha
    prompt_budget: int = 512  # most held-out prompts judged per challenger; spent without a decision → inconclusive
    batch_size: int = 32  # prompts judged between two looks (any size keeps the bound; smaller stops sooner)
    min_decisive: int = 20  # no decision before this many decisive prompts (a few early verdicts decide nothing)
    futility_alpha: float | None = 0.05  # P(a challenger ≥ futility_margin better is stopped as rejected); None: off
    futility_margin: float = 0.10  # the gain the gate is sized for: futility tests "decisive win rate ≥ 1/2 + margin"
    # Alternatives mixed with equal weights, as distances from the null's edge: promotion p = 1/2 + d, futility
    # q = 1/2 + futility_margin − d. Spread them over the improvements worth detecting: a mixture loses little
    # against the best single one (log of the number of points) and needs no guess of the true win rate.
    prior_effects: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.30)

    def __post_init__(self) -> None:
        _check_unit_open("alpha", self.alpha)
        _check_int("prompt_budget", self.prompt_budget, 1, 1_000_000)
        _check_int("batch_size", self.batch_size, 1, self.prompt_budget)
        _check_int("min_decisive", self.min_decisive, 0, self.prompt_budget)
        if self.futility_alpha is not None:
            _check_unit_open("futility_alpha", self.futility_alpha)
        if not _is_number(self.futility_margin) or not 0.0 <= self.futility_margin < 0.5:
            raise GateConfigError("futility_margin", f"must be a number in [0, 0.5), got {self.futility_margin!r}")
        effects = self.prior_effects
        if not isinstance(effects, tuple) or not effects:
            raise GateConfigError("prior_effects", f"must be a non-empty tuple of numbers, got {effects!r}")
        for effect in effects:
            if not _is_number(effect) or not 0.0 < effect < 0.5:
                raise GateConfigError("prior_effects", f"every effect must lie in (0, 0.5), got {effect!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prior_effects"] = list(self.prior_effects)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise GateConfigError(unknown[0], "is not a setting of the promotion gate")
        values = dict(data)
        if isinstance(values.get("prior_effects"), list):
            values["prior_effects"] = tuple(values["prior_effects"])
        return cls(**values)


class GateConfigError(ValueError):
    """A gate setting or stored state is invalid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_unit_open(name: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 < value < 1.0:
        raise GateConfigError(name, f"must be a number in (0, 1), got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise GateConfigError(name, f"must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class GateState:
    """One challenger's test so far: counts only (the e-values are functions of wins and losses)."""

    config: GateConfig = field(default_factory=GateConfig)
    challengers: int = 1  # challengers of the round tested against the same champion (alpha is split by it)
    wins: int = 0  # decisive prompts the challenger won
    losses: int = 0  # decisive prompts the champion won
    ties: int = 0  # prompts whose two orders disagreed or said tie
    batches: int = 0  # looks taken
    decision: Decision = "continue"

    def __post_init__(self) -> None:
        _check_int("challengers", self.challengers, 1, 10_000)
        for name in ("wins", "losses", "ties"):
            _check_int(name, getattr(self, name), 0, self.config.prompt_budget)
        _check_int("batches", self.batches, 0, 2**62)
        if self.wins + self.losses + self.ties > self.config.prompt_budget:
            raise GateConfigError("ties", "wins + losses + ties exceed the prompt budget")
        if self.decision not in DECISIONS:
            raise GateConfigError("decision", f"must be one of {', '.join(DECISIONS)}, got {self.decision!r}")

    @property
    def prompts(self) -> int:
        return self.wins + self.losses + self.ties

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-serialisable dict (stored on the evaluation's row between batches)."""
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateState:
        """The state `to_json` wrote; a damaged one is a ValueError naming the field."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise GateConfigError(unknown[0], "is not a field of the promotion gate's state")
        if not isinstance(data.get("config"), dict):
            raise GateConfigError("config", "the stored state has no config dict")
        return cls(**{**data, "config": GateConfig.from_dict(data["config"])})


@dataclass(frozen=True)
class GateReport:
    """The decision after a look and the figures it rests on (JSON-serialisable through `asdict`)."""

    decision: Decision
    reason: str
    wins: int
    losses: int
    ties: int
    prompts: int  # prompts used so far (wins + losses + ties)
    prompts_left: int  # of the budget
    win_rate_decisive: float | None  # wins / (wins + losses); None before any decisive prompt
    e_value: float  # promotion e-value (saturates at the largest float; the decision reads log_e_value)
    log_e_value: float
    futility_e_value: float | None  # None when futility is off
    log_futility_e_value: float | None
    alpha_used: float  # this challenger's level: alpha / challengers
    family_alpha: float  # the configured alpha: P(any challenger of the round wrongly promoted) ≤ this
    challengers: int
    threshold: float  # promote when e_value ≥ 1 / alpha_used
    error_rate: str  # the guarantee, in words


def log_e_promotion(wins: npt.ArrayLike, losses: npt.ArrayLike, config: GateConfig) -> FloatArray:
    """log E of the promotion mixture, elementwise over arrays of counts (ties do not enter)."""
    p = 0.5 + np.asarray(config.prior_effects, dtype=np.float64)
    return _log_mixture(wins, losses, np.log(2.0 * p), np.log(2.0 * (1.0 - p)))


def log_e_futility(wins: npt.ArrayLike, losses: npt.ArrayLike, config: GateConfig) -> FloatArray:
    """log E of the futility mixture (evidence that the win rate is below 1/2 + futility_margin)."""
    p1 = 0.5 + config.futility_margin
    q = p1 - np.asarray(config.prior_effects, dtype=np.float64)  # in (0, p1): margin ≥ 0 and effects < 1/2
    return _log_mixture(wins, losses, np.log(q / p1), np.log((1.0 - q) / (1.0 - p1)))


def _log_mixture(wins: npt.ArrayLike, losses: npt.ArrayLike, log_win: FloatArray, log_loss: FloatArray) -> FloatArray:
    # terms[..., j] = log w_j + W·log ℓ_j(+1) + L·log ℓ_j(−1); log-sum-exp over j keeps large counts finite
    w = np.asarray(wins, dtype=np.float64)[..., None]
    losses_ = np.asarray(losses, dtype=np.float64)[..., None]
    terms = w * log_win + losses_ * log_loss - math.log(len(log_win))
    top = terms.max(axis=-1)
    return np.asarray(top + np.log(np.exp(terms - top[..., None]).sum(axis=-1)), dtype=np.float64)


def gate_decide(
    wins: npt.ArrayLike, losses: npt.ArrayLike, ties: npt.ArrayLike, config: GateConfig, challengers: int = 1
) -> IntArray:
    """Decision codes (index into DECISIONS) for counts at a look, elementwise: the one rule, also simulated."""
    w, losses_, t = (np.asarray(x, dtype=np.int64) for x in (wins, losses, ties))
    ready = (w + losses_) >= config.min_decisive
    promote = ready & (log_e_promotion(w, losses_, config) >= math.log(challengers / config.alpha))
    if config.futility_alpha is not None:
        futile = ready & ~promote & (log_e_futility(w, losses_, config) >= -math.log(config.futility_alpha))
    else:
        futile = np.zeros_like(promote)
    spent = (w + losses_ + t) >= config.prompt_budget
    codes = np.where(promote, PROMOTE, np.where(futile, REJECT, np.where(spent, INCONCLUSIVE, CONTINUE)))
    return np.asarray(codes, dtype=np.int64)


def gate_start(config: GateConfig | None = None, *, challengers: int = 1) -> GateState:
    """A fresh test for one of `challengers` challengers of a round (E = 1, nothing judged)."""
    return GateState(config=config or GateConfig(), challengers=challengers)


def gate_next_batch_size(state: GateState) -> int:
    """How many prompts to judge for the next look: the batch size, less at the end of the budget, 0 when over."""
    if state.decision != "continue":
        return 0
    return min(state.config.batch_size, state.config.prompt_budget - state.prompts)


def gate_update(state: GateState, outcomes: Sequence[str]) -> tuple[GateState, GateReport]:
    """Add one batch of outcomes, look at the evidence, and return the new state with its report."""
    if state.decision != "continue":
        raise ValueError(f"the test has ended ({state.decision}); a new round starts a new test")
    left = state.config.prompt_budget - state.prompts
    if len(outcomes) > left:
        raise ValueError(f"the batch holds {len(outcomes)} outcomes but only {left} prompts of the budget are left")
    bad = sorted({str(o) for o in outcomes if o not in OUTCOMES})
    if bad:
        raise ValueError(f"unknown outcomes {bad}: each is one of {', '.join(OUTCOMES)}")
    wins = state.wins + sum(o == "challenger" for o in outcomes)
    losses = state.losses + sum(o == "champion" for o in outcomes)
    ties = state.ties + sum(o == "tie" for o in outcomes)
    code = int(gate_decide(wins, losses, ties, state.config, state.challengers))
    new = replace(state, wins=wins, losses=losses, ties=ties, batches=state.batches + 1, decision=DECISIONS[code])
    return new, gate_report(new)


def gate_report(state: GateState) -> GateReport:
    """The figures of a state: counts, both e-values, the level used and the guarantee in words."""
    config = state.config
    alpha_used = config.alpha / state.challengers
    log_e = float(log_e_promotion(state.wins, state.losses, config))
    log_f = float(log_e_futility(state.wins, state.losses, config)) if config.futility_alpha is not None else None
    decisive = state.wins + state.losses
    reason = {
        "continue": f"e = {math.exp(min(log_e, _LOG_FLOAT_MAX)):.3g} below {1 / alpha_used:.3g}; judge more prompts",
        "promote": f"e = {math.exp(min(log_e, _LOG_FLOAT_MAX)):.3g} reached 1/alpha = {1 / alpha_used:.3g}",
        "reject": f"futility: evidence {math.exp(min(log_f or 0.0, _LOG_FLOAT_MAX)):.3g} that the decisive win rate"
        f" is below {0.5 + config.futility_margin:.2f}",
        "inconclusive": f"budget of {config.prompt_budget} prompts spent without a decision: not promoted",
    }[state.decision]
    if state.decision == "continue" and decisive < config.min_decisive:
        reason = f"{decisive} decisive prompts of the {config.min_decisive} needed before any decision"
    family = f" (family of {state.challengers}: ≤ {config.alpha:g} for the round)" if state.challengers > 1 else ""
    return GateReport(
        decision=state.decision,
        reason=reason,
        wins=state.wins,
        losses=state.losses,
        ties=state.ties,
        prompts=state.prompts,
        prompts_left=config.prompt_budget - state.prompts,
        win_rate_decisive=state.wins / decisive if decisive else None,
        e_value=math.exp(min(log_e, _LOG_FLOAT_MAX)),
        log_e_value=log_e,
        futility_e_value=math.exp(min(log_f, _LOG_FLOAT_MAX)) if log_f is not None else None,
        log_futility_e_value=log_f,
        alpha_used=alpha_used,
        family_alpha=config.alpha,
        challengers=state.challengers,
        threshold=1 / alpha_used,
        error_rate=f"P(promote a challenger that is not better) ≤ {alpha_used:.3g}{family}, anytime-valid",
    )


def outcome_from_verdict(verdict: str) -> Outcome | None:
    """The outcome of `judge_pairwise(prompt, challenger, champion)`'s combined verdict; None for "error"."""
    # combine_orders already collapses the two orders: they agree → that side, they disagree or tie → "tie".
    mapping: dict[str, Outcome | None] = {"a": "challenger", "b": "champion", "tie": "tie", "error": None}
    if verdict not in mapping:
        raise ValueError(f"unknown verdict {verdict!r}: one of a, b, tie, error")
    return mapping[verdict]
