"""Active pairing against uniform pairing on simulated arenas: votes until the top-k intervals are narrow enough,
and the bias of the final ratings.

No database: each arena draws true ratings (normal, `--spread` Elo sd), votes from Bradley–Terry (no ties), and
pairs either uniformly or by `arena.pairing` (`arena/pairing_sim.py`), refitting every `--batch` votes as the
server's cached pair probabilities are. Both arms of an arena share its true ratings. The stop rule: every
current top-k model's 95% Fisher interval within ±`--half-width` Elo, checked after every batch. At the stop, the
active arm's ratings are fitted with the inverse-propensity weights and the uniform arm's without, each as the
maximum-likelihood fit and less its first-order bias (`arena.intervals.sandwich_fit(bias_correct=True)`: what the
live leaderboard shows, ARENA_BIAS_CORRECTION); the bias is the mean over arenas of (estimate − truth) per true
rank, both centred.

    .venv/bin/python benchmarks/arena_active.py [--arenas 200] [--models 20] [--top-k 5] [--half-width 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny solves: BLAS threads only cost on a shared machine
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402 - after the thread setting

from arena import pairing, pairing_sim  # noqa: E402
from arena.ratings import bt_fit_weights  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _centred_fit(wins: np.ndarray) -> np.ndarray:
    theta = bt_fit_weights(wins, l2_c=pairing_sim.MAP_L2_C)
    return theta - theta.mean()


def _max_t(errors: np.ndarray) -> float:
    """Largest |mean / se| over the columns (ranks) of arenas × ranks errors."""
    se = errors.std(axis=0, ddof=1) / np.sqrt(len(errors))
    return float(np.max(np.abs(errors.mean(axis=0) / se)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arenas", type=_positive_int, default=200)
    parser.add_argument("--models", type=_positive_int, default=20)
    parser.add_argument("--top-k", type=_positive_int, default=5)
    parser.add_argument("--half-width", type=_positive_float, default=30.0, help="target 95%% half-width, Elo")
    parser.add_argument("--spread", type=_positive_float, default=150.0, help="sd of the true ratings, Elo")
    parser.add_argument("--floor", type=float, default=0.1)
    parser.add_argument("--batch", type=_positive_int, default=200, help="votes between refits")
    parser.add_argument("--max-votes", type=_positive_int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fixed-votes", type=int, default=0, help="stop every arm at this many votes instead of the interval rule"
    )
    args = parser.parse_args()
    if not 0 < args.floor <= 1:
        parser.error("--floor must be in (0, 1]")
    if args.top_k >= args.models:
        parser.error("--top-k must be below --models")

    config = pairing.PairingConfig(top_k=args.top_k, floor=args.floor)
    stop = pairing_sim.top_k_half_width_stop(args.top_k, args.half_width)
    votes = {"uniform": [], "active": []}
    arms = ("uniform", "uniform, corrected", "active", "active, corrected", "active unweighted")
    errors: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    shown = min(args.models, args.top_k + 3)
    # The same errors with both θ̂ and θ centred on the shown (true top) ranks' mean instead of all models': a bias
    # of the poorly measured bottom models moves every centred rating by its share of the mean.
    errors_top: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}

    def record(name: str, fitted: np.ndarray, truth: np.ndarray) -> None:
        errors[name].append(400.0 * (fitted - truth))
        top_fit, top_truth = fitted[:shown] - fitted[:shown].mean(), truth[:shown] - truth[:shown].mean()
        errors_top[name].append(400.0 * (top_fit - top_truth))

    sandwich = []
    unfinished = 0
    started = time.perf_counter()
    for arena in range(args.arenas):
        rng = np.random.default_rng([args.seed, arena])
        truth = np.sort(rng.normal(0.0, args.spread / 400.0, args.models))[::-1]  # index = true rank
        truth -= truth.mean()
        win = pairing_sim.bt_win_matrix(truth)
        for arm, arm_config in (("uniform", None), ("active", config)):
            result = pairing_sim.simulate(
                win, np.random.default_rng([args.seed, arena, 1]), config=arm_config,
                max_votes=args.fixed_votes or args.max_votes, batch=args.batch,
                stop=None if args.fixed_votes else stop,
            )  # fmt: skip
            unfinished += not result.stopped and not args.fixed_votes
            votes[arm].append(result.votes)
            fitted = _centred_fit(result.ipw_wins if arm == "active" else result.wins)
            record(arm, fitted, truth)
            if arm == "active":
                record(
                    "active, corrected", pairing_sim.bias_corrected(fitted, result.ipw_wins, result.ipw_squares), truth
                )
                record("active unweighted", _centred_fit(result.wins), truth)
                top = np.argsort(-fitted)[: args.top_k]
                sd = pairing_sim.sandwich_sd(fitted, result.ipw_wins, result.ipw_squares)
                sandwich.append(float(np.max(1.96 * 400.0 * sd[top])))
            else:
                record("uniform, corrected", pairing_sim.bias_corrected(fitted, result.wins, result.wins), truth)
    elapsed = time.perf_counter() - started

    uniform, active = np.array(votes["uniform"]), np.array(votes["active"])
    ratios = active / uniform
    print(
        f"{args.arenas} arenas, {args.models} models (true sd {args.spread:g} Elo), top-{args.top_k} 95% Fisher "
        f"intervals within ±{args.half_width:g} Elo; floor {args.floor:g}, refit every {args.batch} votes"
    )
    for arm, values in (("uniform", uniform), ("active", active)):
        q10, q50, q90 = np.percentile(values, [10, 50, 90])
        print(f"  {arm:8s} votes: median {q50:,.0f}  (p10 {q10:,.0f}, p90 {q90:,.0f})")
    print(f"  ratio of medians active/uniform: {np.median(active) / np.median(uniform):.3f}")
    print(f"  per-arena ratio: median {np.median(ratios):.3f}, p90 {np.percentile(ratios, 90):.3f}; "
          f"arenas at <= 50% of uniform: {np.mean(ratios <= 0.5):.0%}")  # fmt: skip
    print(f"  arenas that hit the vote budget: {unfinished}")
    print(
        f"  IPW-weighted fit at the stop: max top-{args.top_k} 95% sandwich half-width, median "
        f"{np.median(sandwich):.1f} Elo (the stop rule's Fisher intervals: ±{args.half_width:g})"
    )
    for title, table in (
        ("centred on all models (the leaderboard's centring)", errors),
        (f"centred on the true top {shown} (differences among them only)", errors_top),
    ):
        print(f"  bias by true rank 1..{shown}, {title}: mean (estimate − truth) over arenas ± its se, Elo:")
        for name, rows in table.items():
            matrix = np.array(rows)[:, :shown]
            mean = matrix.mean(axis=0)
            se = matrix.std(axis=0, ddof=1) / np.sqrt(len(matrix))
            cells = "  ".join(f"{m:+5.1f}±{s:3.1f}" for m, s in zip(mean, se, strict=True))
            print(f"    {name:18s} {cells}   max |t| {np.max(np.abs(mean / se)):.1f}")
        if table is errors:
            every = "  ".join(f"{name} {_max_t(np.array(rows)):.1f}" for name, rows in table.items())
            print(f"  max |t| over all ranks 1..{args.models}: {every}")
    if shown < args.models:
        print(f"  mean bias of true ranks {shown + 1}..{args.models} (centred on all models), Elo ± se:")
        for name, rows in errors.items():
            bottom = np.array(rows)[:, shown:].mean(axis=1)
            print(f"    {name:18s} {bottom.mean():+5.1f}±{bottom.std(ddof=1) / np.sqrt(len(bottom)):3.1f}")
    print(f"  {elapsed:.1f} s")


if __name__ == "__main__":
    main()
