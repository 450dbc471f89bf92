"""arena-rank's side of benchmarks/arena_ratings.py, run by arena-rank's own interpreter (its venv pins numpy
2.3.3 and jax 0.8.1, so it cannot be imported beside the project):

    /work/venv-arenarank/bin/python benchmarks/arena_rank_timing.py BATTLES.npz OUT.json [--rounds N] [--repeat R]

BATTLES.npz holds model_a, model_b (int), outcome (1 / 0.5 / 0) and features (battles × F). Timed from the
battle arrays, as ours: the DataFrame → PairDataset (arena-rank aggregates the rows) → fit + sandwich
intervals; the same with `ci_method="bootstrap"` (its multiprocessing pool over every core); and the
ContextualBradleyTerry fit + sandwich on the features (reg 1e-6, not normalised: the features are as given).
Each is run --repeat times in this process and the best kept: the first run pays JAX's compilation. The
bootstrap pool is started with "spawn": forked workers deadlock on JAX's threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np
import pandas as pd
from arena_rank.models.bradley_terry import BradleyTerry
from arena_rank.models.contextual_bradley_terry import ContextualBradleyTerry
from arena_rank.utils.data_utils import ContextualPairDataset, PairDataset

WINNER = {1.0: "model_a", 0.0: "model_b", 0.5: "tie"}


def frame(data: np.lib.npyio.NpzFile) -> pd.DataFrame:
    width = len(str(int(max(data["model_a"].max(), data["model_b"].max()))))
    names = np.array([f"m{k:0{width}d}" for k in range(int(max(data["model_a"].max(), data["model_b"].max())) + 1)])
    table = pd.DataFrame({"model_a": names[data["model_a"]], "model_b": names[data["model_b"]]})
    table["winner"] = pd.Series(data["outcome"]).map(WINNER).to_numpy()
    for k in range(data["features"].shape[1]):
        table[f"f{k}"] = data["features"][:, k]
    return table


def timed(repeat: int, run) -> tuple[float, float, dict]:  # noqa: ANN001
    times, result = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return times[0], min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("battles")
    parser.add_argument("out")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    # arena-rank's bootstrap uses a multiprocessing pool; forked after JAX has started its threads, the
    # workers deadlock (seen here: they never ran). Spawned workers import JAX afresh.
    multiprocessing.set_start_method("spawn")
    table = frame(np.load(args.battles))
    features = [c for c in table.columns if c.startswith("f")]

    def bt(method: str) -> dict:
        dataset = PairDataset.from_pandas(table)
        model = BradleyTerry(n_competitors=len(dataset.competitors))
        result = model.compute_ratings_and_cis(dataset, ci_method=method, num_bootstrap=args.rounds)
        return {
            name: [float(result[key][k]) for key in ("ratings", "rating_lower", "rating_upper")]
            for k, name in enumerate(result["competitors"])
        }

    def contextual() -> dict:
        dataset = ContextualPairDataset.from_pandas(table, features, reweighted=False, normalize_features=False)
        model = ContextualBradleyTerry(len(dataset.competitors), len(features), reg=1e-6)
        result = model.compute_ratings_and_cis(dataset, ci_method="sandwich")
        return {"coefficients": [float(c) for c in result["coeffs"]]}

    out = {}
    for name, run, repeat in (
        ("sandwich", lambda: bt("sandwich"), args.repeat),
        ("contextual", contextual, args.repeat),
        ("bootstrap", lambda: bt("bootstrap"), 1),
    ):
        first, best, result = timed(repeat, run)
        out[name] = {"first_seconds": first, "seconds": best, "result": result}
        print(f"arena-rank {name}: first {first:.2f} s, best {best:.2f} s", flush=True)
    with open(args.out, "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
