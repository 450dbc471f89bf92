"""Routing between LLM judges and humans: pure numpy / scikit-learn, no Django.

The platform (`annotations/routing.py`) and the simulation (`benchmarks/routing_sim.py`) both call these
functions, so the figures the simulation prints are the behaviour of the platform's router.

Per item we know the judge's view (P(A better) over both orders, order consistency, confidence, the
spread between several judges, a reward-model margin) and cheap item features (response lengths,
their difference, how similar the two responses are, the prompt category). The router predicts
P(judge disagrees with humans) for each item:
  - learned: logistic regression fitted on items that have both human and judge labels (the audit slice
    gives an unbiased sample of them; human-routed items add more);
  - heuristic (cold start, too few or one-class labels): a fixed combination of the uncertainty signals.
Items then go to humans in order of predicted judge error until the human budget is used; rules (e.g.
safety tags) and a random audit slice always go to humans.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CATEGORY_BUCKETS = 8  # prompt categories are hashed into this many one-hot columns
MIN_TRAINING_ROWS = 30  # fewer labelled items (or only one class): use the heuristic score
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class ItemSignals:
    """Everything the router knows about one judged item (canonical A/B)."""

    text_a: str | None = None  # or give the lengths directly (the simulation has no text)
    text_b: str | None = None
    len_a: float | None = None  # characters
    len_b: float | None = None
    similarity: float | None = None  # 0..1; computed from the texts when None
    category: str = ""
    p_a: float | None = None  # judges' mean P(A better); None when every judge failed
    consistent: bool = True  # every judge gave the same verdict in both orders
    confidence: float = 0.0  # judges' mean confidence in their verdict
    judge_spread: float = 0.0  # std of P(A) across judges (0 with one judge)
    reward_margin: float | None = None  # |r(A) - r(B)| from a reward model, when scored


def jaccard_similarity(a: str, b: str) -> float:
    """Word-set Jaccard similarity: 1 for identical word sets, 0 for disjoint ones."""
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def _category_column(category: str) -> int:
    return int.from_bytes(hashlib.blake2b(category.encode(), digest_size=2).digest(), "little") % CATEGORY_BUCKETS


FEATURE_NAMES = [
    "log_len_a",
    "log_len_b",
    "abs_log_len_ratio",
    "similarity",
    "margin",  # |P(A) - 0.5| * 2
    "confidence",
    "inconsistent",
    "judge_spread",
    "reward_margin",
    "has_reward_margin",
    *[f"category_{k}" for k in range(CATEGORY_BUCKETS)],
]


def features(signals: Sequence[ItemSignals]) -> np.ndarray:
    """Feature matrix [n_items, len(FEATURE_NAMES)]."""
    rows = np.zeros((len(signals), len(FEATURE_NAMES)), dtype=np.float64)
    for i, s in enumerate(signals):
        len_a = s.len_a if s.len_a is not None else len(s.text_a or "")
        len_b = s.len_b if s.len_b is not None else len(s.text_b or "")
        similarity = s.similarity
        if similarity is None:
            similarity = jaccard_similarity(s.text_a or "", s.text_b or "")
        rows[i, 0] = math.log1p(len_a)
        rows[i, 1] = math.log1p(len_b)
        rows[i, 2] = abs(math.log1p(len_a) - math.log1p(len_b))
        rows[i, 3] = similarity
        rows[i, 4] = abs((s.p_a if s.p_a is not None else 0.5) - 0.5) * 2
        rows[i, 5] = s.confidence
        rows[i, 6] = 0.0 if s.consistent else 1.0
        rows[i, 7] = s.judge_spread
        rows[i, 8] = s.reward_margin or 0.0
        rows[i, 9] = 0.0 if s.reward_margin is None else 1.0
        rows[i, 10 + _category_column(s.category)] = 1.0
    return rows


def heuristic_error(signals: Sequence[ItemSignals]) -> np.ndarray:
    """Cold-start P(judge wrong) in [0, 1] from the uncertainty signals alone.

    Low confidence, a margin near 0.5, order inconsistency and disagreement between judges all raise
    it; a large reward-model margin that agrees with nothing in particular is not used here (its sign
    is not compared with the judge's; it only says the pair is easy).
    """
    out = np.zeros(len(signals))
    for i, s in enumerate(signals):
        if s.p_a is None:
            out[i] = 1.0
            continue
        margin = abs(s.p_a - 0.5) * 2
        score = 0.5 * (1 - s.confidence) + 0.3 * (1 - margin) + 0.25 * (0 if s.consistent else 1)
        score += 0.5 * min(s.judge_spread * 2, 1.0)
        if s.reward_margin is not None:
            score -= 0.1 * min(s.reward_margin, 1.0)
        out[i] = min(max(score / 1.2, 0.0), 1.0)
    return out


@dataclass
class Router:
    """P(judge disagrees with humans) per item. `kind` is "learned" or "heuristic"."""

    kind: str = "heuristic"
    model: Any = None  # the fitted sklearn pipeline when learned
    training_rows: int = 0
    positive_rate: float | None = None
    coefficients: dict[str, float] = field(default_factory=dict)

    def predict_error(self, signals: Sequence[ItemSignals]) -> np.ndarray:
        if not signals:
            return np.zeros(0)
        if self.kind != "learned":
            return heuristic_error(signals)
        predicted = self.model.predict_proba(features(signals))[:, 1]
        # Items no judge could decide are certain errors whatever the features say.
        failed = np.array([s.p_a is None for s in signals])
        return np.where(failed, 1.0, predicted)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "training_rows": self.training_rows,
            "positive_rate": self.positive_rate,
            "coefficients": self.coefficients,
        }


def router_fit(signals: Sequence[ItemSignals], judge_wrong: Sequence[bool], *, seed: int = 0) -> Router:
    """Fit the learned router on items with both labels; the heuristic when there are too few of them."""
    y = np.asarray(judge_wrong, dtype=int)
    if len(signals) < MIN_TRAINING_ROWS or len(set(y.tolist())) < 2:
        return Router(kind="heuristic", training_rows=len(signals), positive_rate=float(y.mean()) if len(y) else None)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Inconsistency interacts with everything (an inconsistent verdict is a coin flip whatever the
    # lengths), so the model gets the products too; C=1 keeps a few hundred rows from overfitting.
    x = _with_interactions(features(signals))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(x, y)
    names = [*FEATURE_NAMES, *[f"inconsistent*{n}" for n in FEATURE_NAMES[:6]]]
    coefficients = dict(zip(names, np.round(model[-1].coef_[0], 4).tolist(), strict=True))
    wrapped = _InteractionModel(model)
    return Router(
        kind="learned",
        model=wrapped,
        training_rows=len(signals),
        positive_rate=float(y.mean()),
        coefficients=coefficients,
    )


def _with_interactions(x: np.ndarray) -> np.ndarray:
    inconsistent = x[:, 6:7]
    return np.hstack([x, x[:, :6] * inconsistent])


class _InteractionModel:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(_with_interactions(x))


@dataclass
class RouteDecision:
    """Per item: "human" or "judge", why, and the human-queue priority (higher first)."""

    route: list[str]
    reason: list[str]
    predicted_error: list[float]
    priority: list[int]


PRIORITY_SCALE = 1_000_000  # predicted error 0..1 → integer priority 0..1e6 (the slot index is on integers)


def route_decide(
    predicted_error: np.ndarray,
    *,
    forced: Sequence[str],
    human_slots: int,
    selection: str = "active",
    rng: np.random.Generator | None = None,
) -> RouteDecision:
    """Send forced items (reason in `forced`, "" when none) to humans, then the items with the highest
    predicted judge error until `human_slots` humans are used; the rest are auto-labelled by the judge.

    `selection` orders the human queue: "active" (highest predicted error first, the most information
    per label) or "random" (a comparison arm: random priorities).
    """
    rng = rng or np.random.default_rng(0)
    n = len(predicted_error)
    route = ["judge"] * n
    reason = ["confident"] * n
    left = human_slots
    for i, why in enumerate(forced):
        if why:
            route[i], reason[i] = "human", why
            left -= 1
    # Ties in predicted error are broken at random, so equal scores do not favour import order.
    order = np.lexsort((rng.random(n), -np.asarray(predicted_error)))
    for i in order:
        if left <= 0:
            break
        if route[i] == "judge":
            route[i], reason[i] = "human", "uncertain"
            left -= 1
    if selection == "random":
        priority = [int(v) for v in rng.integers(0, PRIORITY_SCALE, size=n)]
    else:
        priority = [int(round(float(e) * PRIORITY_SCALE)) for e in predicted_error]
    return RouteDecision(
        route=route, reason=reason, predicted_error=[float(e) for e in predicted_error], priority=priority
    )


def human_slots_for_batch(*, budget: float, routed_before: int, humans_before: int, batch: int) -> int:
    """How many of a new batch may go to humans so the campaign's human share stays at `budget`."""
    return max(0, int(math.floor(budget * (routed_before + batch) + 1e-9)) - humans_before)


def calibration_bins(predicted: Sequence[float], actual: Sequence[bool], bins: int = 5) -> list[dict[str, Any]]:
    """Reliability table: per predicted-error bin, mean prediction, observed error rate, count."""
    out: list[dict[str, Any]] = []
    p = np.asarray(predicted, dtype=float)
    a = np.asarray(actual, dtype=float)
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        mask = (p >= lo) & ((p < hi) if k < bins - 1 else (p <= hi))
        if mask.any():
            out.append(
                {
                    "bin": f"{lo:.1f}-{hi:.1f}",
                    "predicted": round(float(p[mask].mean()), 4),
                    "observed": round(float(a[mask].mean()), 4),
                    "count": int(mask.sum()),
                }
            )
    return out


def brier(predicted: Sequence[float], actual: Sequence[bool]) -> float | None:
    if not len(predicted):
        return None
    return float(np.mean((np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)) ** 2))
