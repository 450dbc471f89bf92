"""Bradley–Terry leaderboard fit on a large battle log: FastChat-style and LMArena's arena-rank against ours.

    .venv/bin/python benchmarks/arena_ratings.py [--battles 2000000] [--models 150] [--rounds 100] [--seed 0]
        [--arena-rank-python /work/venv-arenarank/bin/python] [--arena-rank-rounds 100]

1. Draw --battles battles among --models models from known strengths (numpy, vectorised): ratings ~
   N(1000, 150²) on the Elo scale, pairs uniform over ordered pairs, a tie with probability --tie-rate,
   otherwise model_a wins with the Bradley–Terry probability σ(ln10 · (r_a − r_b) / 400).
2. (a) FastChat-style (lmsys FastChat `rating_systems.compute_bt` / `compute_bootstrap_bt`): deduplicate
   the battles into unique (model_a, model_b, outcome) rows with counts (outcome 1, ½, 0), minimise the
   weighted BT log-loss with SciPy's L-BFGS-B (analytic gradient, gtol 1e-6, maxiter 100, as FastChat),
   then 100 bootstrap refits on multinomial redraws of the row counts, the same way. Serial (FastChat
   spreads the refits over a process pool; so could we).
   (b) ours: per-pair counts (`arena.ratings.PairCounts`, built with np.bincount), the exact fit
   (`bt_ratings`: damped Newton on the pair counts) and `bootstrap(rounds=100)` (multinomial redraws of
   the pair-outcome cells, each refitted the same way).
   (c) ours, sandwich: pair counts + Newton + closed-form sandwich intervals (arena/intervals.py), the
   live leaderboard's default; (d) ours, controlled: the contextual fit (arena/contextual.py) with a
   position covariate and an integer "length" covariate in -3..3 drawn per battle (aggregated rows).
   (e) with --arena-rank-python, LMArena's arena-rank in its own venv (benchmarks/arena_rank_timing.py,
   a subprocess fed the same battles): BradleyTerry sandwich, bootstrap, ContextualBradleyTerry.
3. Print the wall times, their ratios, and each fit's largest distance (Elo points) from the exact
   optimum, which is ours at gradient tolerance 1e-12 (Newton converges quadratically: the polish moves
   the ratings by ~1e-9). Ratings are compared after centring each fit at mean 1000 (BT is defined up to
   a shift). Also the largest distance from the true strengths, for scale.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# After the path tweak; pure numpy, no Django. No BLAS environment variable is needed: the engine pins BLAS
# to one thread around its solves itself (threadpoolctl).
from arena import contextual, intervals, ratings  # noqa: E402

LN10 = math.log(10.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--battles", type=int, default=2_000_000, help="battles to draw (2000000)")
    parser.add_argument("--models", type=int, default=150, help="models (150)")
    parser.add_argument("--rounds", type=int, default=100, help="bootstrap rounds for both fits (100)")
    parser.add_argument("--tie-rate", type=float, default=0.1, help="probability of a tie (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--repeat", type=int, default=2, help="time each method this many times, keep the best (2)")
    parser.add_argument("--arena-rank-python", help="interpreter of a venv with arena-rank 0.1.1 (skipped if unset)")
    parser.add_argument("--arena-rank-rounds", type=int, default=100, help="arena-rank bootstrap rounds (100)")
    parser.add_argument("--skip-fastchat", action="store_true", help="leave out the FastChat-style fit")
    return parser.parse_args(argv)


# --- data ---------------------------------------------------------------------------------------------
def draw_battles(n_battles: int, n_models: int, tie_rate: float, seed: int) -> tuple[np.ndarray, ...]:
    """(model_a, model_b, outcome, true ratings); outcome 1 = a wins, 0.5 = tie, 0 = b wins."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(1000.0, 150.0, n_models)
    model_a = rng.integers(0, n_models, n_battles)
    model_b = (model_a + rng.integers(1, n_models, n_battles)) % n_models  # uniform over b != a
    p_a = expit(LN10 * (truth[model_a] - truth[model_b]) / 400.0)
    tie = rng.random(n_battles) < tie_rate
    a_wins = rng.random(n_battles) < p_a
    outcome = np.where(tie, 0.5, np.where(a_wins, 1.0, 0.0))
    return model_a, model_b, outcome, truth


# --- (a) FastChat-style ----------------------------------------------------------------------------------
def fastchat_preprocess(model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, ...]:
    """Unique (a, b, outcome) rows and how often each occurred (FastChat's preprocess_for_bt)."""
    rows, weights = np.unique(np.column_stack([model_a, model_b, outcome]), return_counts=True, axis=0)
    return rows[:, :2].astype(np.int64), rows[:, 2], weights.astype(np.float64)


def bt_loss_and_grad(
    theta: np.ndarray, matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[float, np.ndarray]:
    """Weighted BT log-loss and its gradient (FastChat's bt_loss_and_grad)."""
    logits = alpha * (theta[matchups[:, 0]] - theta[matchups[:, 1]])
    probs = expit(logits)
    eps = 1e-300
    loss = -float(((np.log(probs + eps) * outcomes + np.log(1.0 - probs + eps) * (1.0 - outcomes)) * weights).sum())
    row_grad = -alpha * (outcomes - probs) * weights
    grad = np.zeros_like(theta)
    np.add.at(grad, matchups[:, 0], row_grad)
    np.add.at(grad, matchups[:, 1], -row_grad)
    return loss, grad


def fastchat_fit(matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, n_models: int) -> np.ndarray:
    result = minimize(
        fun=bt_loss_and_grad,
        x0=np.zeros(n_models),
        args=(matchups, outcomes, weights, LN10),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 100, "gtol": 1e-6},
    )
    return 400.0 * result["x"] + 1000.0


def fastchat_run(model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray, n_models: int, rounds: int) -> dict:
    started = time.perf_counter()
    matchups, outcomes, weights = fastchat_preprocess(model_a, model_b, outcome)
    rated = fastchat_fit(matchups, outcomes, weights, n_models)
    rng = np.random.default_rng(0)
    draws = rng.multinomial(len(model_a), weights / weights.sum(), size=rounds)
    boot = np.array([fastchat_fit(matchups, outcomes, d / len(model_a), n_models) for d in draws])
    seconds = time.perf_counter() - started
    return {"ratings": rated, "boot": boot, "seconds": seconds, "rows": len(weights)}


# --- (b) ours --------------------------------------------------------------------------------------------
def counts_from_arrays(model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray, n: int) -> ratings.PairCounts:
    a_won, b_won, tied = outcome == 1.0, outcome == 0.0, outcome == 0.5
    cell = model_a * n + model_b  # flat (a, b) position; bincount is the fast scatter-add
    wins = np.bincount(cell[a_won], minlength=n * n).reshape(n, n).astype(float)
    wins += np.bincount(cell[b_won], minlength=n * n).reshape(n, n).T
    ties = np.bincount(cell[tied], minlength=n * n).reshape(n, n).astype(float)
    ties = ties + ties.T
    width = len(str(n))
    return ratings.PairCounts(models=[f"m{k:0{width}d}" for k in range(n)], wins=wins, ties=ties)


def ours_run(
    model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray, n_models: int, rounds: int, resampling: str
) -> dict:
    started = time.perf_counter()
    counts = counts_from_arrays(model_a, model_b, outcome, n_models)
    fitted = ratings.bt_ratings(counts)
    intervals = ratings.bootstrap(counts, rounds=rounds, seed=0, resampling=resampling)
    seconds = time.perf_counter() - started
    return {
        "ratings": np.array([fitted[name] for name in counts.models]),
        "intervals": intervals,
        "seconds": seconds,
        "counts": counts,
    }


def ours_sandwich_run(model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray, n_models: int) -> dict:
    started = time.perf_counter()
    counts = counts_from_arrays(model_a, model_b, outcome, n_models)
    fitted = ratings.bt_ratings(counts)
    found = intervals.sandwich(counts, fitted, ridge=None)  # arena-rank's ridge, for a like-for-like comparison
    seconds = time.perf_counter() - started
    return {"ratings": fitted, "intervals": found, "seconds": seconds}


def ours_controlled_run(
    model_a: np.ndarray, model_b: np.ndarray, outcome: np.ndarray, features: np.ndarray, n_models: int
) -> dict:
    started = time.perf_counter()
    names = [f"m{k:0{len(str(n_models))}d}" for k in range(n_models)]
    rows = contextual.aggregate(names, ["position", "length"], model_a, model_b, outcome, features)
    fit = contextual.fit(rows, reg=1e-6, ridge=None)
    seconds = time.perf_counter() - started
    return {"fit": fit, "rows": len(rows.count), "seconds": seconds}


def arena_rank_run(args: argparse.Namespace, arrays: dict[str, np.ndarray]) -> dict | None:
    """arena-rank's timings and results from its own interpreter, or None when not configured."""
    if not args.arena_rank_python:
        return None
    with tempfile.TemporaryDirectory() as folder:
        battles, out = Path(folder) / "battles.npz", Path(folder) / "out.json"
        np.savez(battles, **arrays)
        command = [args.arena_rank_python, str(ROOT / "benchmarks" / "arena_rank_timing.py"), str(battles), str(out)]
        subprocess.run([*command, "--rounds", str(args.arena_rank_rounds), "--repeat", str(args.repeat)], check=True)
        return json.loads(out.read_text())


def exact_optimum(counts: ratings.PairCounts) -> np.ndarray:
    theta = ratings.bt_fit_weights(counts.wins + 0.5 * counts.ties, tol=1e-12, max_iter=500)
    return 400.0 * theta + 1000.0


def centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean() + 1000.0


def best_of(repeat: int, run, *args) -> dict:  # noqa: ANN001 - a run function above
    """The fastest of `repeat` runs: the first pays one-off costs (lazy imports, first page faults)."""
    return min((run(*args) for _ in range(max(1, repeat))), key=lambda result: result["seconds"])


def report_arena_rank(arena_rank: dict, sandwich: dict, controlled: dict, args: argparse.Namespace) -> None:
    """Times side by side and the largest differences of ratings, intervals and coefficients (Elo points)."""
    theirs = arena_rank["sandwich"]["result"]
    gap_rating = max(abs(sandwich["ratings"][m] - v[0]) for m, v in theirs.items())
    gap_interval = max(
        max(abs(sandwich["intervals"][m][0] - v[1]), abs(sandwich["intervals"][m][1] - v[2])) for m, v in theirs.items()
    )
    booted = arena_rank["bootstrap"]["result"]
    boot_width = np.median([v[2] - v[1] for v in booted.values()])
    sandwich_width = np.median([high - low for low, high in sandwich["intervals"].values()])
    coefficient_gap = intervals.ELO_PER_LOGIT * np.max(
        np.abs(np.array(arena_rank["contextual"]["result"]["coefficients"]) - controlled["fit"].coefficients)
    )
    print()
    print("arena-rank 0.1.1 (its own venv; best of runs in one process, first run in brackets: JAX compiles)")
    for name, ours_seconds in (("sandwich", sandwich["seconds"]), ("contextual", controlled["seconds"])):
        entry = arena_rank[name]
        print(
            f"  {name:<10} arena-rank {entry['seconds']:7.2f} s ({entry['first_seconds']:.2f})   ours "
            f"{ours_seconds:6.3f} s   speed-up {entry['seconds'] / ours_seconds:6.1f}x"
        )
    entry = arena_rank["bootstrap"]
    print(
        f"  bootstrap  arena-rank {entry['seconds']:7.2f} s ({args.arena_rank_rounds} rounds, one run)   "
        f"ours sandwich {sandwich['seconds']:.3f} s: {entry['seconds'] / sandwich['seconds']:.0f}x"
    )
    print(f"  sandwich: max |Δ rating| {gap_rating:.4f} Elo, max |Δ interval bound| {gap_interval:.4f} Elo")
    print(f"  controlled: max |Δ coefficient| {coefficient_gap:.4f} Elo")
    print(f"  median 95% width: sandwich {sandwich_width:.2f} Elo, arena-rank bootstrap {boot_width:.2f} Elo")
    print()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"drawing {args.battles:,} battles among {args.models} models (seed {args.seed}) ...")
    started = time.perf_counter()
    model_a, model_b, outcome, truth = draw_battles(args.battles, args.models, args.tie_rate, args.seed)
    print(f"  drawn in {time.perf_counter() - started:.2f} s")

    features = np.column_stack(
        [np.ones(len(model_a)), np.random.default_rng(args.seed + 1).integers(-3, 4, len(model_a)).astype(float)]
    )
    arena_rank = arena_rank_run(
        args, {"model_a": model_a, "model_b": model_b, "outcome": outcome, "features": features}
    )
    print("(d) ours, sandwich: pair counts + Newton + closed-form intervals ...")
    sandwich = best_of(args.repeat, ours_sandwich_run, model_a, model_b, outcome, args.models)
    print(f"    {sandwich['seconds']:.2f} s")
    print("(e) ours, controlled: aggregated rows + Newton + sandwich (position and length covariates) ...")
    controlled = best_of(args.repeat, ours_controlled_run, model_a, model_b, outcome, features, args.models)
    print(f"    {controlled['rows']:,} rows; {controlled['seconds']:.2f} s")
    if arena_rank is not None:
        report_arena_rank(arena_rank, sandwich, controlled, args)
    if args.skip_fastchat:
        return
    print(f"(a) FastChat-style: dedupe + L-BFGS-B + {args.rounds} bootstrap refits ...")
    fastchat = best_of(args.repeat, fastchat_run, model_a, model_b, outcome, args.models, args.rounds)
    print(f"    {fastchat['rows']:,} unique rows; {fastchat['seconds']:.2f} s")
    print(f"(b) ours: pair counts + Newton + {args.rounds} bootstrap refits (Poisson bootstrap, the default) ...")
    ours = best_of(args.repeat, ours_run, model_a, model_b, outcome, args.models, args.rounds, "poisson")
    print(f"    {ours['seconds']:.2f} s")
    print("(c) ours with multinomial resampling (exactly FastChat's resampling distribution) ...")
    ours_multinomial = best_of(
        args.repeat, ours_run, model_a, model_b, outcome, args.models, args.rounds, "multinomial"
    )
    print(f"    {ours_multinomial['seconds']:.2f} s")

    optimum = centred(exact_optimum(ours["counts"]))
    fastchat_gap = np.max(np.abs(centred(fastchat["ratings"]) - optimum))
    ours_gap = np.max(np.abs(centred(ours["ratings"]) - optimum))
    truth_gap = np.max(np.abs(centred(truth) - optimum))
    # Bootstrap interval widths, for a like-for-like check that both bootstraps measure the same spread.
    fastchat_boot = fastchat["boot"] - fastchat["boot"].mean(axis=1, keepdims=True) + 1000.0
    fastchat_width = np.median(np.percentile(fastchat_boot, 97.5, axis=0) - np.percentile(fastchat_boot, 2.5, axis=0))
    ours_width = np.median([high - low for low, high in ours["intervals"].values()])
    multinomial_width = np.median([high - low for low, high in ours_multinomial["intervals"].values()])

    print()
    print(f"battles {args.battles:,}   models {args.models}   bootstrap rounds {args.rounds}   best of {args.repeat}")
    print(f"FastChat-style  {fastchat['seconds']:8.2f} s   max |Δ| from exact optimum {fastchat_gap:.3g} Elo")
    print(f"ours            {ours['seconds']:8.2f} s   max |Δ| from exact optimum {ours_gap:.3g} Elo")
    print(f"ours, multinomial  {ours_multinomial['seconds']:5.2f} s")
    print(f"speed-up (FastChat-style / ours): {fastchat['seconds'] / ours['seconds']:.1f}x")
    print(f"speed-up (FastChat-style / ours, multinomial): {fastchat['seconds'] / ours_multinomial['seconds']:.1f}x")
    print(
        f"median 95% interval width: FastChat-style {fastchat_width:.2f} Elo, ours {ours_width:.2f} Elo,"
        f" ours multinomial {multinomial_width:.2f} Elo"
    )
    # Not a sampling error alone: ties drawn at a fixed rate and scored ½ pull the fit towards the mean.
    print(f"(for scale: max |exact optimum − generating strengths| = {truth_gap:.2f} Elo)")


if __name__ == "__main__":
    main()
