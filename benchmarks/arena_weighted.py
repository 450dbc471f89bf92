"""The live leaderboard's weighted fit (per-battle inverse-propensity × prompt-dedup weights) at scale.

    .venv/bin/python benchmarks/arena_weighted.py [--battles 2000000] [--models 150] [--seed 0]
    DATABASE_URL=postgres://… .venv/bin/python benchmarks/arena_weighted.py --database 1000000 [--db-name bench_arena_w]

1. Draw --battles battles among --models models (as benchmarks/arena_ratings.py: ratings ~ N(1000, 150²), 10%
   ties, otherwise Bradley–Terry), each with an inverse-propensity weight 1 / (P·π) (π drawn around 1/P as an
   active pairing gives it: lognormal, sd 0.7, floor 0.1/P) and a prompt cluster (90% of prompts unique, 10% drawn
   from popular ones with Zipf(1.6) popularity; a cluster with n > cap = 20 battles weighs cap/n each).
2. Time (best of --repeat, one BLAS thread):
   (a) the leaderboard's fit: Σw and Σw² per (pair, outcome) cell by np.bincount, then
       `intervals.leaderboard_fit(counts, weighted=…)` (Newton on the n×n sums, sandwich from Σw²);
   (b) the same without weights (the PairStats fit before), for the cost of weighting;
   (c) with --direct, the fit it must equal: every battle its own row with its own weight, fitted by
       `contextual.fit(row_weights=…)` (sandwich from the per-battle scores); the largest difference of any
       rating or interval bound from (a);
   (d) the controlled fit with weights: position + an integer "length" covariate, rows merged with Σw, Σw².
3. With --database N: fill a dedicated PostgreSQL database (migrated here; `benchmarks/bench_db.py`) with N
   battles and votes in one INSERT … SELECT from generate_series, each battle with style features (words 50–450
   a side, headers, list items and bold spans mostly 0 as in real answers), then time what the recompute reads:
   `selectors.fit_weight_cells` (one aggregate query), `leaderboard.pair_counts_weighted`, and the controlled
   fits' rows for `style`, `style+position` and `position`: `controlled.controlled_rows_python` (every vote and
   its features read into Python, the SQLite path) against `controlled.controlled_rows_sql` (one aggregate
   query), with the largest difference between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena import contextual, intervals, ratings  # noqa: E402

CAP = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--battles", type=int, default=2_000_000)
    parser.add_argument("--models", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--direct", action="store_true", help="also the battle-by-battle fit (slow: minutes)")
    parser.add_argument("--database", type=int, default=0, help="votes to store and read back in PostgreSQL")
    parser.add_argument("--db-name", default="bench_arena_weighted")
    args = parser.parse_args()
    if args.battles < 1000 or args.models < 2:
        parser.error("need at least 1000 battles and 2 models")
    return args


def draw(args: argparse.Namespace) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    n, size = args.models, args.battles
    strength = rng.normal(0.0, 150.0 / 400.0, n)
    first = rng.integers(0, n, size)
    second = (first + rng.integers(1, n, size)) % n
    p = 1.0 / (1.0 + 10.0 ** (strength[second] - strength[first]))
    tie = rng.random(size) < 0.1
    outcome = np.where(tie, 0.5, (rng.random(size) < p).astype(float))
    pairs = n * (n - 1) // 2
    propensity = np.maximum(np.exp(rng.normal(0.0, 0.7, size)) / pairs, 0.1 / pairs)
    ipw = 1.0 / (pairs * propensity)
    # Prompts: 90% unique, 10% drawn from popular ones (Zipf: a few "hi"-like prompts take most of them).
    popular = rng.random(size) < 0.1
    cluster = np.where(popular, rng.zipf(1.6, size) % 100_000, 100_000 + np.arange(size))
    sizes = np.bincount(cluster)
    dedup = np.minimum(1.0, CAP / sizes[cluster])
    return {"first": first, "second": second, "outcome": outcome, "weight": ipw * dedup, "strength": strength}


def cells(data: dict[str, np.ndarray], n: int) -> tuple[ratings.PairCounts, intervals.WeightedCounts]:
    first, second, outcome, w = data["first"], data["second"], data["outcome"], data["weight"]
    winner = np.where(outcome == 0.0, second, first)
    loser = np.where(outcome == 0.0, first, second)
    decisive = outcome != 0.5

    def matrix(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(rows[mask] * n + cols[mask], values[mask], n * n).reshape(n, n)

    ones = np.ones(len(w))
    names = [f"m{k:03d}" for k in range(n)]

    def both(values: np.ndarray) -> ratings.PairCounts:
        ties = matrix(values, first, second, ~decisive)
        return ratings.PairCounts(names, matrix(values, winner, loser, decisive), ties + ties.T)

    return both(ones), intervals.WeightedCounts(both(w), both(w * w))


def best(repeat: int, function):  # noqa: ANN001, ANN201
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    args = parse_args()
    n = args.models
    started = time.perf_counter()
    data = draw(args)
    print(f"{args.battles:,} battles × {n} models drawn in {time.perf_counter() - started:.1f} s; weights: mean "
          f"{data['weight'].mean():.2f}, max {data['weight'].max():.1f}, Kish ESS "
          f"{data['weight'].sum() ** 2 / (data['weight'] ** 2).sum() / args.battles:.0%} of the battles")  # fmt: skip

    def weighted_fit() -> ratings.Leaderboard:
        counts, weighted = cells(data, n)
        return intervals.leaderboard_fit(counts, weighted=weighted)

    def plain_fit() -> ratings.Leaderboard:
        counts, _ = cells(data, n)
        return intervals.leaderboard_fit(counts)

    t_weighted, board = best(args.repeat, weighted_fit)
    t_plain, plain = best(args.repeat, plain_fit)
    print(f"  (a) weighted fit from the battles (cell sums + Newton + sandwich): {t_weighted:.3f} s")
    print(f"  (b) unweighted, same path:                                        {t_plain:.3f} s  "
          f"(weights cost ×{t_weighted / t_plain:.2f})")  # fmt: skip
    counts, weighted = cells(data, n)
    t_fit, _ = best(args.repeat, lambda: intervals.leaderboard_fit(counts, weighted=weighted))
    print(f"      of which the fit on the n×n sums alone:                     {t_fit:.3f} s")
    t_corrected, corrected = best(
        args.repeat, lambda: intervals.leaderboard_fit(counts, weighted=weighted, bias_correct=True)
    )
    shift = max(abs(c.rating - r.rating) for c, r in zip(corrected.rows, board.rows, strict=True))
    print(f"      the same, bias-corrected (the live default):                {t_corrected:.3f} s; "
          f"largest shift {shift:.3f} Elo")  # fmt: skip
    widths = np.array([r.ci_high - r.ci_low for r in board.rows])
    plain_widths = np.array([r.ci_high - r.ci_low for r in plain.rows])
    print(f"      median 95% width: weighted {np.median(widths):.2f} Elo, unweighted {np.median(plain_widths):.2f} Elo")

    if args.direct:
        names = counts.models

        def direct() -> contextual.ContextualFit:
            rows = contextual.BattleRows(
                models=names, features_names=[], first=data["first"], second=data["second"],
                outcome=data["outcome"], features=np.zeros((args.battles, 0)), count=np.ones(args.battles),
            )  # fmt: skip
            return contextual.fit(rows, row_weights=data["weight"])

        t_direct, fit = best(1, direct)
        by_model = {r.model: r for r in board.rows}
        diff = max(
            max(
                abs(by_model[m].rating - fit.ratings[k]),
                abs(by_model[m].ci_low - fit.ci_low[k]),
                abs(by_model[m].ci_high - fit.ci_high[k]),
            )  # fmt: skip
            for k, m in enumerate(names)
        )
        print(f"  (c) battle-by-battle weighted fit: {t_direct:.2f} s; largest difference from (a): {diff:.1e} Elo")

    rng = np.random.default_rng(args.seed + 1)
    length = rng.integers(-3, 4, args.battles).astype(float)
    features = np.column_stack([np.ones(args.battles), length])

    def controlled(weights: np.ndarray | None, bias_correct: bool = False) -> contextual.ContextualFit:
        rows = contextual.aggregate(counts.models, ["position", "length"], data["first"], data["second"],
                                    data["outcome"], features, weights=weights)  # fmt: skip
        return contextual.fit(rows, bias_correct=bias_correct)

    t_cw, _ = best(args.repeat, lambda: controlled(data["weight"]))
    t_cp, _ = best(args.repeat, lambda: controlled(None))
    print(f"  (d) controlled (position + length), aggregate + fit: weighted {t_cw:.2f} s, unweighted {t_cp:.2f} s")
    t_cc, _ = best(args.repeat, lambda: controlled(data["weight"], bias_correct=True))
    print(f"      weighted and bias-corrected (the live default): {t_cc:.2f} s")

    if args.database:
        database(args)


def database(args: argparse.Namespace) -> None:
    from bench_db import bench_database_url, ensure_database

    url = bench_database_url(os.environ.get("DATABASE_URL"), args.db_name)
    ensure_database(url, args.db_name)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from arena import leaderboard, selectors
    from arena.models import Battle, PairStats, Vote
    from models_hub.models import Model

    call_command("migrate", verbosity=0)
    n, size = args.models, args.database
    if Vote.objects.count() != size or not Battle.objects.filter(features__has_key="length_a").exists():
        print(f"  filling {args.db_name} with {size:,} battles and votes …")
        started = time.perf_counter()
        with connection.cursor() as cursor:  # the benchmark's own database: a partial fill is dropped at once
            tables = [Vote._meta.db_table, Battle._meta.db_table, PairStats._meta.db_table]
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        models = [
            Model.objects.get_or_create(name=f"bench-w-{k:03d}", version=1,
                                        defaults={"role": "policy", "backend": "transformers", "path": f"/x/{k}"})[0]
            for k in range(n)
        ]  # fmt: skip
        low, high = models[0].pk, models[-1].pk
        assert high - low == n - 1, "model ids must be consecutive"
        from annotations.models import Prompt

        prompt = Prompt.objects.create(content="bench")
        battles, votes = Battle._meta.db_table, Vote._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"""
                INSERT INTO {battles} (prompt_id, model_a_id, model_b_id, mode, status, error, session_hash, ip_hash,
                    categories, prompt_hash, prompt_cluster, created_at, features, pair_propensity, pair_candidates)
                SELECT %s, %s + a, %s + (a + 1 + (g * 7919) %% (%s - 1)) %% %s, 'live', 'voted', '', 's' || g, '',
                    '[]'::jsonb, '', CASE WHEN g %% 5 = 0 THEN 'c' || (g %% 997) ELSE '' END, now(),
                    jsonb_build_object(
                        'length_a', 50 + floor(random() * 400), 'length_b', 50 + floor(random() * 400),
                        'headers_a', CASE WHEN random() < 0.3 THEN floor(random() * 6) ELSE 0 END,
                        'headers_b', CASE WHEN random() < 0.3 THEN floor(random() * 6) ELSE 0 END,
                        'lists_a', CASE WHEN random() < 0.5 THEN floor(random() * 11) ELSE 0 END,
                        'lists_b', CASE WHEN random() < 0.5 THEN floor(random() * 11) ELSE 0 END,
                        'bold_a', CASE WHEN random() < 0.4 THEN floor(random() * 7) ELSE 0 END,
                        'bold_b', CASE WHEN random() < 0.4 THEN floor(random() * 7) ELSE 0 END),
                    LEAST(1.0, (0.3 + random() * 1.7) / %s), %s
                FROM (SELECT g, (g * 104729) %% %s AS a FROM generate_series(1, CAST(%s AS BIGINT)) g) s
            """, [prompt.pk, low, low, n, n, n * (n - 1) // 2, n * (n - 1) // 2, n, size])  # noqa: S608  # fmt: skip
            cursor.execute(f"""
                INSERT INTO {votes} (battle_id, winner, counted, exclusion_reason, exclusion_detail, session_hash,
                    ip_hash, created_at, applied_at)
                SELECT id, (ARRAY['a', 'b', 'tie', 'a', 'b'])[1 + id % 5], true, '', '', session_hash, '', now(), now()
                FROM {battles}
            """)  # noqa: S608  # fmt: skip
            cursor.execute(f"""
                INSERT INTO {PairStats._meta.db_table} (category, model_lo_id, model_hi_id, wins_lo, wins_hi, ties,
                    both_bad)
                SELECT '', LEAST(b.model_a_id, b.model_b_id), GREATEST(b.model_a_id, b.model_b_id),
                    SUM(CASE WHEN (v.winner = 'a') = (b.model_a_id < b.model_b_id) AND v.winner <> 'tie'
                        THEN 1 ELSE 0 END),
                    SUM(CASE WHEN (v.winner = 'b') = (b.model_a_id < b.model_b_id) AND v.winner <> 'tie'
                        THEN 1 ELSE 0 END),
                    SUM(CASE WHEN v.winner = 'tie' THEN 1 ELSE 0 END), 0
                FROM {votes} v JOIN {battles} b ON b.id = v.battle_id GROUP BY 1, 2, 3
            """)  # noqa: S608  # fmt: skip
            cursor.execute(f"ANALYZE {battles}; ANALYZE {votes}")
        print(f"  filled in {time.perf_counter() - started:.0f} s")
    t_cells, found = best(args.repeat, lambda: selectors.fit_weight_cells(""))
    t_counts, _ = best(args.repeat, lambda: leaderboard.pair_counts("")[0])
    t_read, (counts, weighted, _) = best(args.repeat, lambda: leaderboard.pair_counts_weighted(""))
    t_fit, _ = best(args.repeat, lambda: intervals.leaderboard_fit(counts, weighted=weighted))
    print(f"  database, {size:,} votes: fit_weight_cells {t_cells:.2f} s ({len(found):,} cells); PairStats read "
          f"{t_counts:.3f} s; pair_counts_weighted {t_read:.2f} s; weighted fit {t_fit:.3f} s")  # fmt: skip
    from arena import controlled

    for control in ("style", "style+position", "position"):
        t_python, old = best(args.repeat, lambda c=control: controlled.controlled_rows_python("", c))
        t_sql, new = best(args.repeat, lambda c=control: controlled.controlled_rows_sql("", c))
        t_fit, _ = best(args.repeat, lambda rows=new: contextual.fit(rows))
        same = old.models == new.models and np.array_equal(old.count, new.count)
        diff = max(float(np.max(np.abs(old.features - new.features), initial=0.0)),
                   float(np.max(np.abs(old.weight_sum - new.weight_sum), initial=0.0)))  # fmt: skip
        print(f"  controlled_rows {control!r}: Python (every vote) {t_python:.2f} s, SQL aggregate {t_sql:.2f} s "
              f"(×{t_python / t_sql:.1f}); {new.battles:,} usable votes in {len(new.count):,} rows; same rows: {same}, "
              f"largest difference {diff:.1e}; the fit on those rows {t_fit:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
