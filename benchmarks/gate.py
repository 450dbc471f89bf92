"""The promotion gate on simulated rounds: false-promotion rate, power and prompts used, beside the old rule.

No models and no database: each challenger's judged battles are drawn from a true win rate among decisive
prompts and a tie rate; the gate's own decision rule decides (`workers/ml/promotion_gate.py`, simulated by
`workers/ml/promotion_gate_sim.py`). The old rule is the best of the round's challengers by the Wilson 95%
lower bound of (wins + ties/2) / prompts, promoted when the bound exceeds 1/2, on the same battles: on 16
prompts (today's sample), on the whole budget, and looked at after every batch.

    .venv/bin/python benchmarks/gate.py [--runs 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.ml.promotion_gate import GateConfig  # noqa: E402 - after the path tweak
from workers.ml.promotion_gate_sim import OLD_RULE_PROMPTS, gate_simulate  # noqa: E402


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=_positive_int, default=10_000, help="simulated rounds per scenario")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = GateConfig()
    started = time.perf_counter()
    print(
        f"promotion gate: alpha {config.alpha} (family-wise), budget {config.prompt_budget} prompts, batches of"
        f" {config.batch_size}, min {config.min_decisive} decisive, futility alpha {config.futility_alpha} against"
        f" a margin of {config.futility_margin}, prior effects {config.prior_effects}; {args.runs} rounds per row"
    )

    print("\n1. ten challengers equal to the champion (false promotions; gate at alpha/10 each)")
    print(
        f"{'ties':>5}  {'gate any':>8}  {'gate each':>9}  {'rejected':>8}  {'inconcl.':>8}  {'prompts mean/median':>19}"
        f"  {'old@16 any':>10}  {'old@16 each':>11}  {'old@budget any':>14}  {'old peeking any':>15}"
    )
    for tie_rate in (0.2, 0.0):
        r = gate_simulate(config, win_rates=[0.5] * 10, tie_rate=tie_rate, runs=args.runs, seed=args.seed)
        print(
            f"{tie_rate:>5.0%}  {r.false_promoted_any:>8.2%}  {r.promoted:>9.3%}  {r.rejected:>8.1%}"
            f"  {r.inconclusive:>8.1%}  {r.prompts_mean:>10.0f} / {r.prompts_median:<6.0f}"
            f"  {r.old_rule_false_any:>10.1%}  {r.old_rule:>11.2%}  {r.old_rule_budget_false_any:>14.1%}"
            f"  {r.old_rule_peeking_any:>15.1%}"
        )

    print("\n2. one challenger at a 60% decisive win rate (power within the budget; gate at alpha)")
    print(
        f"{'ties':>5}  {'promoted':>8}  {'rejected':>8}  {'inconcl.':>8}  {'prompts mean/median':>19}"
        f"  {'old@16':>7}  {'old@budget':>10}"
    )
    for tie_rate in (0.0, 0.2):
        r = gate_simulate(config, win_rates=[0.6], tie_rate=tie_rate, runs=args.runs, seed=args.seed + 1)
        print(
            f"{tie_rate:>5.0%}  {r.promoted:>8.1%}  {r.rejected:>8.1%}  {r.inconclusive:>8.1%}"
            f"  {r.prompts_mean:>10.0f} / {r.prompts_median:<6.0f}  {r.old_rule:>7.1%}  {r.old_rule_budget:>10.1%}"
        )

    print("\n3. one challenger at 60% among nine equal to the champion (20% ties; gate at alpha/10 each)")
    r = gate_simulate(config, win_rates=[0.6] + [0.5] * 9, tie_rate=0.2, runs=args.runs, seed=args.seed + 2)
    print(
        f"gate: the 60% one promoted {r.promoted_by_challenger[0]:.1%}, an equal one promoted"
        f" {r.false_promoted_any:.2%} of rounds; old rule (best of 10) promotes an equal one"
        f" {r.old_rule_false_any:.1%} of rounds at {OLD_RULE_PROMPTS} prompts,"
        f" {r.old_rule_budget_false_any:.1%} at the budget"
    )

    print("\n4. one challenger, 20% ties: what the gate decides by true decisive win rate")
    print(f"{'win rate':>8}  {'promoted':>8}  {'rejected':>8}  {'inconcl.':>8}  {'prompts mean/median':>19}")
    for rate in (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        r = gate_simulate(config, win_rates=[rate], tie_rate=0.2, runs=args.runs, seed=args.seed + 3)
        print(
            f"{rate:>8.0%}  {r.promoted:>8.1%}  {r.rejected:>8.1%}  {r.inconclusive:>8.1%}"
            f"  {r.prompts_mean:>10.0f} / {r.prompts_median:.0f}"
        )
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
