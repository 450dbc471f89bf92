"""Simulated rounds of the promotion gate (no models): false-promotion rate, power and prompts used.

Each round has k challengers with given true win rates among decisive prompts and a common tie rate; every
challenger is judged against the champion on its own stream of prompts, batch by batch, and decided by the
gate's own rule (`promotion_gate.gate_decide`, not a copy) at alpha / k. On the same battles the old rule is
scored too: the best of the k by the Wilson 95% lower bound of (wins + ties/2) / prompts, promoted when that
bound exceeds 1/2 (`workers/training.py` `wilson_interval` and `models_hub/training.py` `promotion_decide`),
on the first 16 prompts (its sample today), on the whole budget, and looked at after every batch (peeking).
"Best of k promoted" is the same event as "some challenger's bound exceeds 1/2", so its family rate is that.

Vectorised over rounds × challengers × prompts; rounds are processed in chunks to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.ml.promotion_gate import CONTINUE, INCONCLUSIVE, PROMOTE, REJECT, GateConfig, gate_decide

OLD_RULE_PROMPTS = 16  # workers/training.py EVAL_PROMPTS: the prompts the old rule judged
_CELLS_PER_CHUNK = 4_000_000  # simulated prompts held in memory at once (float32 draws: ~16 MB)


@dataclass(frozen=True)
class GateSimulation:
    """Rates over simulated rounds; "per challenger" averages over the k challengers and the rounds."""

    runs: int  # simulated rounds
    win_rates: tuple[float, ...]  # true P(challenger wins | decisive), one per challenger
    tie_rate: float  # P(tie) per prompt
    config: GateConfig
    promoted_any: float  # rounds where at least one challenger was promoted
    false_promoted_any: float  # rounds where a challenger not better (win rate ≤ 1/2) was promoted: the family rate
    promoted: float  # per challenger: promoted within the budget
    promoted_by_challenger: tuple[float, ...]  # the same, for each challenger in the order of win_rates
    rejected: float  # per challenger: stopped for futility
    inconclusive: float  # per challenger: budget spent without a decision
    prompts_mean: float  # per challenger: prompts judged until its test stopped
    prompts_median: float
    old_rule_any: float  # best of k by Wilson lower bound > 1/2, ties half, first 16 prompts: something promoted
    old_rule_false_any: float  # ... and the one promoted is not better (win rate ≤ 1/2)
    old_rule: float  # per challenger: its own lower bound > 1/2
    old_rule_budget_any: float  # the old rule on the whole budget (no peeking)
    old_rule_budget_false_any: float
    old_rule_budget: float
    old_rule_peeking_any: float  # the old rule looked at after every batch: some challenger's bound ever > 1/2
    old_rule_peeking: float


def wilson_lower_bound(successes: npt.ArrayLike, n: npt.ArrayLike, z: float = 1.96) -> npt.NDArray[np.float64]:
    """Lower end of the Wilson score interval (z = 1.96: 95% two-sided), elementwise; n must be positive."""
    n_ = np.asarray(n, dtype=np.float64)
    p = np.asarray(successes, dtype=np.float64) / n_
    centre = (p + z * z / (2 * n_)) / (1 + z * z / n_)
    half = z * np.sqrt(p * (1 - p) / n_ + z * z / (4 * n_ * n_)) / (1 + z * z / n_)
    return np.asarray(np.maximum(0.0, centre - half), dtype=np.float64)


def look_ends(config: GateConfig) -> npt.NDArray[np.int64]:
    """Prompts judged at each look: every batch_size, and the budget (the last, possibly short, batch)."""
    ends = np.arange(config.batch_size, config.prompt_budget + 1, config.batch_size, dtype=np.int64)
    if ends.size == 0 or ends[-1] != config.prompt_budget:
        ends = np.append(ends, config.prompt_budget)
    return ends


def gate_simulate(
    config: GateConfig, *, win_rates: Sequence[float], tie_rate: float, runs: int, seed: int = 0
) -> GateSimulation:
    """Simulate `runs` rounds of len(win_rates) challengers against one champion (see the module docstring)."""
    rates = np.asarray(win_rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0 or np.any((rates < 0) | (rates > 1)):
        raise ValueError(f"win_rates: one rate in [0, 1] per challenger, got {list(win_rates)!r}")
    if not 0.0 <= tie_rate < 1.0:
        raise ValueError(f"tie_rate must lie in [0, 1), got {tie_rate!r}")
    if runs < 1:
        raise ValueError(f"runs must be positive, got {runs!r}")
    k, budget = rates.size, config.prompt_budget
    ends = look_ends(config)
    old_n = min(OLD_RULE_PROMPTS, budget)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // (k * budget))
    not_better = rates <= 0.5
    promoted, rejected, inconclusive, prompts = [], [], [], []
    old, old_budget, old_peeking, old_false, old_budget_false = [], [], [], [], []
    for start in range(0, runs, chunk):
        rounds = min(chunk, runs - start)
        draws = rng.random((rounds, k, budget), dtype=np.float32)
        # a prompt is a win with P (1 − tie)·p, a loss with P (1 − tie)·(1 − p), else a tie
        win = draws < ((1.0 - tie_rate) * rates)[:, None]
        loss = ~win & (draws < 1.0 - tie_rate)
        wins = np.cumsum(win, axis=-1, dtype=np.int32)
        losses = np.cumsum(loss, axis=-1, dtype=np.int32)
        w, lo = wins[..., ends - 1], losses[..., ends - 1]
        codes = gate_decide(w, lo, ends - w - lo, config, challengers=k)  # (rounds, k, looks)
        # the budget's look always decides (inconclusive at worst), so every test has a first final look
        first = np.argmax(codes != CONTINUE, axis=-1)
        final = np.take_along_axis(codes, first[..., None], axis=-1)[..., 0]
        promoted.append(final == PROMOTE)
        rejected.append(final == REJECT)
        inconclusive.append(final == INCONCLUSIVE)
        prompts.append(ends[first])
        bound = _old_rule_bound(wins[..., old_n - 1], losses[..., old_n - 1], old_n)
        old.append(bound > 0.5)
        old_false.append(_old_rule_false(bound, not_better))
        bound = _old_rule_bound(wins[..., -1], losses[..., -1], budget)
        old_budget.append(bound > 0.5)
        old_budget_false.append(_old_rule_false(bound, not_better))
        old_peeking.append((_old_rule_bound(w, lo, ends) > 0.5).any(axis=-1))
    promoted_, old_, old_budget_, old_peeking_ = (np.concatenate(x) for x in (promoted, old, old_budget, old_peeking))
    used = np.concatenate(prompts)
    return GateSimulation(
        runs=runs,
        win_rates=tuple(float(r) for r in rates),
        tie_rate=float(tie_rate),
        config=config,
        promoted_any=float(promoted_.any(axis=1).mean()),
        false_promoted_any=float(promoted_[:, not_better].any(axis=1).mean()),
        promoted=float(promoted_.mean()),
        promoted_by_challenger=tuple(float(x) for x in promoted_.mean(axis=0)),
        rejected=float(np.concatenate(rejected).mean()),
        inconclusive=float(np.concatenate(inconclusive).mean()),
        prompts_mean=float(used.mean()),
        prompts_median=float(np.median(used)),
        old_rule_any=float(old_.any(axis=1).mean()),
        old_rule_false_any=float(np.concatenate(old_false).mean()),
        old_rule=float(old_.mean()),
        old_rule_budget_any=float(old_budget_.any(axis=1).mean()),
        old_rule_budget_false_any=float(np.concatenate(old_budget_false).mean()),
        old_rule_budget=float(old_budget_.mean()),
        old_rule_peeking_any=float(old_peeking_.any(axis=1).mean()),
        old_rule_peeking=float(old_peeking_.mean()),
    )


def _old_rule_bound(wins: npt.ArrayLike, losses: npt.ArrayLike, n: npt.ArrayLike) -> npt.NDArray[np.float64]:
    # ties count half a win: (wins + (n − wins − losses)/2) / n
    w, lo, n_ = (np.asarray(x, dtype=np.float64) for x in (wins, losses, n))
    return wilson_lower_bound(w + 0.5 * (n_ - w - lo), n_)


def _old_rule_false(bound: npt.NDArray[np.float64], not_better: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    # per round (bound: rounds × k): the best bound's challenger is promoted; false when it is not better
    best = np.argmax(bound, axis=1)
    promoted = np.take_along_axis(bound, best[:, None], axis=1)[:, 0] > 0.5
    return np.asarray(promoted & not_better[best])
