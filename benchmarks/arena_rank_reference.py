"""Reference values from LMArena's `arena-rank` for tests/arena/test_arena_rank.py.

arena-rank 0.1.1 pins numpy 2.3.3 and jax 0.8.1, so it lives in a venv of its own:

    python3 -m venv /work/venv-arenarank && /work/venv-arenarank/bin/pip install arena-rank==0.1.1
    /work/venv-arenarank/bin/python benchmarks/arena_rank_reference.py [--genai PATH] [--out PATH]

Writes tests/arena/fixtures/arena_rank_reference.json:
- "synthetic": a battle set drawn here (12 models, skewed pair frequencies so that reweighting matters,
  ties, a position bias and two discrete style features), stored as aggregated rows
  [model_a, model_b, outcome (1 / 0.5 / 0), position, length, markdown, count], with arena-rank's
  results: BradleyTerry sandwich (plain and reweighted) and ContextualBradleyTerry sandwich on the
  features as stored (normalize_features=False; plain and reweighted; reg 1.0, its default, and 1e-6).
- "genai": BradleyTerry sandwich (plain and reweighted) per connected component of the anonymous
  GenAI-Arena battles (/work/shared/fixtures/genai-arena; the battles themselves are not copied).
Ratings are on arena-rank's scale (400/ln10 per logit, mean 1000); coefficients in logits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from arena_rank.models.bradley_terry import BradleyTerry
from arena_rank.models.contextual_bradley_terry import ContextualBradleyTerry
from arena_rank.utils.data_utils import ContextualPairDataset, PairDataset

ROOT = Path(__file__).resolve().parent.parent
GENAI = ROOT.parent / "shared" / "fixtures" / "genai-arena" / "genai_clean_battle_20240220.json"
OUT = ROOT / "tests" / "arena" / "fixtures" / "arena_rank_reference.json"
FEATURES = ["position", "length", "markdown"]
TRUE_COEFFICIENTS = [0.25, 0.5, -0.3]  # logits per unit of feature


def synthetic_rows(seed: int = 7, n_models: int = 12, n_battles: int = 6000) -> list[list[float]]:
    """Aggregated rows [a, b, outcome, position, length, markdown, count] (position is 1: side a is shown first)."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0.0, 0.8, n_models)
    first, second = np.triu_indices(n_models, k=1)
    popularity = rng.exponential(1.0, len(first)) ** 2  # a few pairs get most battles
    pair = rng.choice(len(first), size=n_battles, p=popularity / popularity.sum())
    swap = rng.random(n_battles) < 0.5
    a = np.where(swap, second[pair], first[pair])
    b = np.where(swap, first[pair], second[pair])
    length = rng.integers(-2, 3, n_battles) / 2.0
    markdown = rng.integers(-1, 2, n_battles).astype(float)
    logit = strength[a] - strength[b] + TRUE_COEFFICIENTS[0] + TRUE_COEFFICIENTS[1] * length
    logit += TRUE_COEFFICIENTS[2] * markdown
    draw = rng.random(n_battles)
    tie = rng.random(n_battles) < 0.1
    outcome = np.where(tie, 0.5, (draw < 1 / (1 + np.exp(-logit))).astype(float))
    table = pd.DataFrame({"a": a, "b": b, "outcome": outcome, "position": 1.0, "length": length, "markdown": markdown})
    grouped = table.groupby(list(table.columns)).size().reset_index(name="count")
    return [
        [int(r.a), int(r.b), float(r.outcome), 1.0, float(r.length), float(r.markdown), int(r.count)]
        for r in grouped.itertuples()
    ]


def expand(rows: list[list[float]]) -> pd.DataFrame:
    """One row per battle, in arena-rank's format."""
    winner = {1.0: "model_a", 0.0: "model_b", 0.5: "tie"}
    records = []
    for a, b, outcome, position, length, markdown, count in rows:
        records += [(f"m{int(a):02d}", f"m{int(b):02d}", winner[outcome], position, length, markdown)] * int(count)
    return pd.DataFrame(records, columns=["model_a", "model_b", "winner", *FEATURES])


def bt_sandwich(frame: pd.DataFrame, *, reweighted: bool) -> dict:
    dataset = PairDataset.from_pandas(frame, reweighted=reweighted)
    model = BradleyTerry(n_competitors=len(dataset.competitors))
    result = model.compute_ratings_and_cis(dataset, ci_method="sandwich")
    return {
        name: [float(result[key][k]) for key in ("ratings", "rating_lower", "rating_upper")]
        for k, name in enumerate(result["competitors"])
    }


def contextual_sandwich(frame: pd.DataFrame, *, reweighted: bool, reg: float) -> dict:
    dataset = ContextualPairDataset.from_pandas(frame, FEATURES, reweighted=reweighted, normalize_features=False)
    model = ContextualBradleyTerry(n_competitors=len(dataset.competitors), n_features=len(FEATURES), reg=reg)
    result = model.compute_ratings_and_cis(dataset, ci_method="sandwich")
    return {
        "ratings": {
            name: [float(result[key][k]) for key in ("ratings", "rating_lower", "rating_upper")]
            for k, name in enumerate(result["competitors"])
        },
        "coefficients": [float(c) for c in result["coeffs"]],
    }


def genai_components(path: Path) -> list[pd.DataFrame]:
    """Anonymous battles without self-battles, split by connected component (arena-rank fits one graph)."""
    frame = pd.DataFrame(json.loads(path.read_text()))
    frame = frame[frame["anony"] & (frame["model_a"] != frame["model_b"])]
    parent: dict[str, str] = {}

    def root(m: str) -> str:
        while parent.setdefault(m, m) != m:
            m = parent[m]
        return m

    for a, b in zip(frame["model_a"], frame["model_b"], strict=True):
        parent[root(a)] = root(b)
    labels = frame["model_a"].map(root)
    return [frame[labels == label] for label in sorted(set(labels))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genai", type=Path, default=GENAI)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = synthetic_rows()
    frame = expand(rows)
    synthetic = {
        "features": FEATURES,
        "true_coefficients": TRUE_COEFFICIENTS,
        "rows": rows,
        "bt": {"plain": bt_sandwich(frame, reweighted=False), "reweighted": bt_sandwich(frame, reweighted=True)},
        "contextual": {
            f"{kind}_reg{reg:g}": contextual_sandwich(frame, reweighted=kind == "reweighted", reg=reg)
            for kind in ("plain", "reweighted")
            for reg in (1.0, 1e-6)
        },
    }
    genai = {"plain": {}, "reweighted": {}}
    for part in genai_components(args.genai):
        genai["plain"].update(bt_sandwich(part, reweighted=False))
        genai["reweighted"].update(bt_sandwich(part, reweighted=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {"arena_rank": "0.1.1", "synthetic": synthetic, "genai": genai}
    args.out.write_text(json.dumps(body, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
