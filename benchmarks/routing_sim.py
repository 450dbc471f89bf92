"""Routing simulation: how accurate are the final labels for a given number of human labels?

A campaign of N pairwise items with hidden true preferences. A simulated LLM judge is asked in both
orders (as the platform does) and is biased: it is worse on some prompt categories and on similar
responses, prefers the longer response and the first position. Simulated humans are accurate but noisy.
Policies: judge_only, human_only, hybrid at several human budgets with the learned router, the
heuristic (cold-start) router, and a random router at equal budget.

The routing code is the platform's own (`annotations/routing_core.py`); the two orders are combined by
the platform's judge code (`workers/ml/judge.combine_orders`). Items arrive in batches (judge jobs
finishing); before each batch the router is refitted on the items humans labelled so far, exactly what
`annotations.routing.campaign_route` does.

    .venv/bin/python benchmarks/routing_sim.py [--items 5000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotations.routing_core import (  # noqa: E402 - after the path tweak
    ItemSignals,
    Router,
    human_slots_for_batch,
    route_decide,
    router_fit,
)
from workers.ml.judge import combine_orders  # noqa: E402

CATEGORIES = ["coding", "math", "writing", "reasoning", "chat", "safety"]
CATEGORY_SKILL = {"coding": 1.6, "math": 0.7, "writing": 1.4, "reasoning": 0.9, "chat": 2.0, "safety": 1.2}


@dataclass
class SimItem:
    truth: str  # "a" or "b"
    len_a: float
    len_b: float
    similarity: float
    category: str
    signals: ItemSignals
    judge_label: str  # "a" | "b" | "tie"
    human_label: str


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def simulate_items(n: int, rng: np.random.Generator) -> list[SimItem]:
    items = []
    for _ in range(n):
        truth = "a" if rng.random() < 0.5 else "b"
        sign = 1.0 if truth == "a" else -1.0
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        len_a, len_b = float(rng.lognormal(6.0, 0.6)), float(rng.lognormal(6.0, 0.6))
        similarity = float(rng.beta(2, 3))
        # Judge: skill by category, blunted on similar responses; +length bias; +first-position bias.
        quality = CATEGORY_SKILL[category] * (1.2 - similarity) * sign
        length_pull = 0.9 * math.tanh(math.log(len_a / len_b))
        latent = quality + length_pull + float(rng.normal(0, 0.6))
        position = 0.6  # log-odds added to whichever response is shown first
        dists = []
        for first_is_a in (True, False):
            s = (latent if first_is_a else -latent) + position
            p_first = _sigmoid(s)
            tie = 0.15 * math.exp(-abs(s))
            dists.append({"A": p_first * (1 - tie), "B": (1 - p_first) * (1 - tie), "C": tie})
        p_a, verdict, consistent, confidence, _ = combine_orders(dists[0], dists[1], 3)
        signals = ItemSignals(
            len_a=len_a,
            len_b=len_b,
            similarity=similarity,
            category=category,
            p_a=p_a,
            consistent=consistent,
            confidence=confidence,
        )
        # Humans: 92% right, 85% on near-identical responses; never biased by position or length.
        accuracy = 0.92 - 0.07 * max(0.0, similarity - 0.6) / 0.4
        human = truth if rng.random() < accuracy else ("b" if truth == "a" else "a")
        items.append(SimItem(truth, len_a, len_b, similarity, category, signals, verdict, human))
    return items


def _credit(label: str, truth: str) -> float:
    return 0.5 if label == "tie" else float(label == truth)  # a tie is right half the time when broken at random


def judge_wrong(item: SimItem) -> bool:
    """What the platform's router learns: the judge's label differs from the human label."""
    return item.judge_label != item.human_label


def run_policy(
    items: list[SimItem], *, budget: float, router: str, audit: float, batch: int, rng: np.random.Generator
) -> tuple[float, int]:
    """(final label accuracy, human labels used)."""
    labels: list[str] = [""] * len(items)
    humans = 0
    labelled: list[int] = []
    for start in range(0, len(items), batch):
        idx = list(range(start, min(start + batch, len(items))))
        signals = [items[i].signals for i in idx]
        if router == "learned":
            model = router_fit([items[i].signals for i in labelled], [judge_wrong(items[i]) for i in labelled])
        else:
            model = Router(kind="heuristic")
        predicted = model.predict_error(signals) if router != "random" else rng.random(len(idx))
        forced = ["audit" if rng.random() < audit else "" for _ in idx]
        slots = human_slots_for_batch(budget=budget, routed_before=start, humans_before=humans, batch=len(idx))
        decision = route_decide(np.asarray(predicted), forced=forced, human_slots=slots, rng=rng)
        for i, route in zip(idx, decision.route, strict=True):
            if route == "human":
                labels[i] = items[i].human_label
                humans += 1
                labelled.append(i)
            else:
                labels[i] = items[i].judge_label
    accuracy = float(np.mean([_credit(label, item.truth) for label, item in zip(labels, items, strict=True)]))
    return accuracy, humans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3, help="independent campaigns; figures are their mean")
    parser.add_argument("--batch", type=int, default=500, help="items per routing batch (a judge job)")
    parser.add_argument("--audit", type=float, default=0.05)
    args = parser.parse_args()
    started = time.perf_counter()
    budgets = [0.1, 0.3, 0.5]
    results: dict[str, list[tuple[float, int]]] = {}
    judge_stats = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        items = simulate_items(args.items, rng)
        judge_stats.append(
            (
                np.mean([i.signals.consistent for i in items]),
                np.mean([_credit(i.human_label, i.truth) for i in items]),
            )
        )

        def record(name: str, accuracy: float, used: int) -> None:
            results.setdefault(name, []).append((accuracy, used))

        record("judge_only", float(np.mean([_credit(i.judge_label, i.truth) for i in items])), 0)
        record("human_only", float(np.mean([_credit(i.human_label, i.truth) for i in items])), len(items))
        for budget in budgets:
            for router in ("learned", "heuristic", "random"):
                accuracy, used = run_policy(
                    items,
                    budget=budget,
                    router=router,
                    audit=args.audit,
                    batch=args.batch,
                    rng=np.random.default_rng(1000 + seed),
                )
                record(f"hybrid {int(budget * 100)}% {router}", accuracy, used)
    consistency, human_accuracy = np.mean(judge_stats, axis=0)
    print(
        f"routing simulation: {args.items} items x {args.seeds} seeds, batches of {args.batch}, "
        f"audit {args.audit:.0%}; judge order-consistent on {consistency:.1%} of items, "
        f"single human accuracy {human_accuracy:.1%}"
    )
    print(f"{'policy':<28} {'label accuracy':>15} {'human labels':>13}")
    for name, rows in results.items():
        accuracy = np.mean([r[0] for r in rows])
        used = np.mean([r[1] for r in rows])
        print(f"{name:<28} {accuracy:>14.1%} {used:>13.0f}")
    judge_only = np.mean([r[0] for r in results["judge_only"]])
    print()
    hybrid30 = np.mean([r[0] for r in results["hybrid 30% learned"]])
    print(f"hybrid 30% (learned) - judge_only: {100 * (hybrid30 - judge_only):+.1f} points (target >= +5)")
    for budget in budgets:
        learned = np.mean([r[0] for r in results[f"hybrid {int(budget * 100)}% learned"]])
        random = np.mean([r[0] for r in results[f"hybrid {int(budget * 100)}% random"]])
        wins = sum(
            a[0] > b[0]
            for a, b in zip(
                results[f"hybrid {int(budget * 100)}% learned"],
                results[f"hybrid {int(budget * 100)}% random"],
                strict=True,
            )
        )
        print(
            f"budget {budget:.0%}: learned router {learned:.1%} vs random {random:.1%} "
            f"({100 * (learned - random):+.1f} points; learned ahead in {wins}/{args.seeds} campaigns)"
        )
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
