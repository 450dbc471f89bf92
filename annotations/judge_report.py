"""Judge reports per campaign and per judge: agreement with humans, biases, cost, router calibration.

Definitions (pairwise items; a "label" is a choice a / b / tie, both_bad counts as tie):
  human label               majority of the item's human choices ("tie" when split)
  agreement (with ties)     share of items with both labels where the judge's choice equals the human label
  agreement (without ties)  the same over items where neither label is a tie
  position consistency      share of the judge's verdicts whose two orders agreed (meta "consistent")
  first-position win rate   over every single-order call with a non-tie verdict: share that picked the
                            response shown first (0.5 = no position bias)
  length bias               over non-tie labels on items whose responses differ in length: P(longer wins);
                            given for the judge and, on the same items, for humans
  self-preference           items where exactly one response comes from the judge's family (model name
                            before "@"): P(judge picks it) among non-tie verdicts, and humans' rate there
  cost                      calls, prompt / completion tokens and latency of the judge; human judgments
                            and their time spent
  router calibration        audit items (random, always sent to humans) with both labels: predicted
                            judge error vs observed disagreement, by bin, and the Brier score
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from annotations.models import Campaign, Item, ItemRoute, ItemState, Judgment, JudgmentSource
from annotations.routing_core import brier, calibration_bins


def _label(choice: str) -> str:
    return "tie" if choice in ("tie", "both_bad") else choice


def _majority(choices: list[str]) -> str:
    if not choices:
        return ""
    counts = Counter(_label(c) for c in choices).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def model_family(label: str) -> str:
    """`llama-3@v2` → `llama-3`: versions of one model are one family."""
    return label.split("@")[0].strip().lower()


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _judge_figures(
    judge: str, judgments: list[Judgment], humans: dict[int, str], items: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    with_ties = [humans[j.item_id] == _label(j.choice) for j in judgments if humans.get(j.item_id) and j.choice]
    no_ties = [
        humans[j.item_id] == _label(j.choice)
        for j in judgments
        if humans.get(j.item_id) not in (None, "", "tie") and j.choice and _label(j.choice) != "tie"
    ]
    consistent = [bool(j.meta.get("consistent")) for j in judgments if "consistent" in (j.meta or {})]
    first = [
        v == "first" for j in judgments for v in (j.meta or {}).get("order_verdicts", []) if v in ("first", "second")
    ]
    judge_longer, human_longer = [], []
    own_picked, human_own_picked = [], []
    family = model_family(judge)
    for j in judgments:
        info = items[j.item_id]
        len_a, len_b = info["lengths"]
        choice = _label(j.choice)
        human = humans.get(j.item_id, "")
        if len_a != len_b:
            longer = "a" if len_a > len_b else "b"
            if choice in ("a", "b"):
                judge_longer.append(choice == longer)
            if human in ("a", "b"):
                human_longer.append(human == longer)
        own = [p for p, m in zip(("a", "b"), info["families"], strict=True) if m == family]
        if len(own) == 1:
            if choice in ("a", "b"):
                own_picked.append(choice == own[0])
            if human in ("a", "b"):
                human_own_picked.append(human == own[0])
    meta = [j.meta or {} for j in judgments]
    return {
        "judge": judge,
        "items_judged": len(judgments),
        "items_with_human_label": len(with_ties),
        "agreement_with_ties": _rate(sum(with_ties), len(with_ties)),
        "agreement_without_ties": _rate(sum(no_ties), len(no_ties)),
        "items_without_ties": len(no_ties),
        "position_consistency": _rate(sum(consistent), len(consistent)),
        "first_position_win_rate": _rate(sum(first), len(first)),
        "first_position_verdicts": len(first),
        "length_bias_judge": _rate(sum(judge_longer), len(judge_longer)),
        "length_bias_human": _rate(sum(human_longer), len(human_longer)),
        "self_preference_judge": _rate(sum(own_picked), len(own_picked)),
        "self_preference_human": _rate(sum(human_own_picked), len(human_own_picked)),
        "self_preference_items": len(own_picked),
        "calls": sum(int(m.get("calls", 0)) for m in meta),
        "prompt_tokens": sum(int(m.get("prompt_tokens", 0)) for m in meta),
        "completion_tokens": sum(int(m.get("completion_tokens", 0)) for m in meta),
        "latency_ms_mean": _rate(sum(int(m.get("latency_ms", 0)) for m in meta), len(meta)),
    }


def campaign_judge_report(campaign: Campaign) -> dict[str, Any]:
    """Every figure of the module docstring for one campaign, per judge and overall."""
    items: dict[int, dict[str, Any]] = {}
    for item in Item.objects.filter(campaign=campaign).prefetch_related("item_responses__response"):
        responses = [link.response for link in sorted(item.item_responses.all(), key=lambda link: link.position)]
        items[item.pk] = {
            "lengths": tuple(len(r.text) for r in responses[:2]) if len(responses) >= 2 else (0, 0),
            "families": tuple(model_family(r.model_name) for r in responses[:2]) if len(responses) >= 2 else ("", ""),
            "route": item.route,
            "route_reason": item.route_reason,
            "state": item.state,
            "predicted_error": item.predicted_error,
            "judge_errors": item.judge_errors,
        }
    human_choices: dict[int, list[str]] = defaultdict(list)
    human_count, human_ms = 0, 0
    by_judge: dict[str, list[Judgment]] = defaultdict(list)
    for j in Judgment.objects.filter(item__campaign=campaign).order_by("pk"):
        if j.source == JudgmentSource.HUMAN:
            human_count += 1
            human_ms += j.time_spent_ms or 0
            if j.choice:
                human_choices[j.item_id].append(j.choice)
        elif j.source == JudgmentSource.LLM:
            by_judge[j.judge_name].append(j)
    humans = {item_id: _majority(choices) for item_id, choices in human_choices.items()}
    judges = [_judge_figures(name, rows, humans, items) for name, rows in sorted(by_judge.items())]

    # Labels by source: a done item is labelled by humans unless routing auto-labelled it.
    done = [info for info in items.values() if info["state"] == ItemState.DONE]
    by_source = Counter("llm" if info["route"] == ItemRoute.JUDGE else "human" for info in done)
    # Router calibration on the audit slice: the judges' label (majority) vs the human label.
    judge_labels = {
        item_id: _majority([j.choice for rows in by_judge.values() for j in rows if j.item_id == item_id and j.choice])
        for item_id, info in items.items()
        if info["route_reason"] == "audit"
    }
    predicted, actual = [], []
    for item_id, label in judge_labels.items():
        info = items[item_id]
        if label and humans.get(item_id) and info["predicted_error"] is not None:
            predicted.append(info["predicted_error"])
            actual.append(label != humans[item_id])
    routes = Counter(f"{info['route'] or 'unrouted'}:{info['route_reason'] or '-'}" for info in items.values())
    return {
        "campaign": campaign.pk,
        "routing_mode": campaign.routing_mode,
        "items": len(items),
        "items_by_state": dict(Counter(info["state"] for info in items.values())),
        "items_by_route": dict(routes),
        "judge_errors": sum(info["judge_errors"] for info in items.values()),
        "judges": judges,
        "labels_by_source": dict(by_source),
        "label_share_llm": _rate(by_source.get("llm", 0), len(done)),
        "cost": {
            "judge_calls": sum(j["calls"] for j in judges),
            "judge_prompt_tokens": sum(j["prompt_tokens"] for j in judges),
            "judge_completion_tokens": sum(j["completion_tokens"] for j in judges),
            "human_judgments": human_count,
            "human_seconds": round(human_ms / 1000, 1),
        },
        "router": campaign.router_state or {},
        "router_calibration": {
            "audit_items": len(predicted),
            "observed_error_rate": _rate(sum(actual), len(actual)),
            "mean_predicted_error": round(sum(predicted) / len(predicted), 4) if predicted else None,
            "brier": round(b, 4) if (b := brier(predicted, actual)) is not None else None,
            "bins": calibration_bins(predicted, actual),
        },
    }
