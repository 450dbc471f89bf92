"""Style control: Bradley–Terry with style covariates (length and Markdown counts), as in Chatbot Arena.

A longer or more heavily formatted answer wins more votes whatever the model; style control separates
the two. Each battle gets the normalised differences of its two responses' style counts,

    x_f = (a_f − b_f) / (a_f + b_f)   (0 when both are 0),  standardised over the battles,

and the fit is P(A beats B) = σ(ln10 · (θ_A − θ_B) + βᵀx), ties ½, by Newton's method on all battles
(Chiang et al., "Does style matter? Disentangling style and substance in Chatbot Arena", LMSYS 2024).
The coefficients β are reported (log-odds per standard deviation of the feature): a positive `length`
means voters prefer the longer answer at equal model strength.

This module computes the style features (also stored per battle at generation, `battle_features`) and the
offline report `arena_ratings --style-control` (point estimates). The live leaderboard's controlled fits, with
sandwich intervals and identical rows merged, are `arena/contextual.py` and `arena/controlled.py`
(`?control=style`, `position`, `style+position`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from arena import outcomes
from arena.ratings import INIT_RATING, LN10, SCALE, Battle, PairCounts, components, ratable

STYLE_FEATURES = ("length", "headers", "lists", "bold")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(text: str) -> tuple[float, ...]:
    """(words, Markdown headers, list items, bold spans) of one response."""
    return (
        float(len(text.split())),
        float(len(_HEADER.findall(text))),
        float(len(_LIST.findall(text))),
        float(len(_BOLD.findall(text))),
    )


def style_from_conv_metadata(meta: Mapping, side: str) -> tuple[float, ...] | None:
    """The same counts from a Chatbot Arena clean-battle row's `conv_metadata` (side 'a' or 'b'):
    `sum_assistant_<side>_tokens`, and `header_count_<side>`, `list_count_<side>`, `bold_count_<side>`
    (objects of counts, summed)."""
    values = []
    for key in (f"sum_assistant_{side}_tokens", f"header_count_{side}", f"list_count_{side}", f"bold_count_{side}"):
        value = meta.get(key)
        if isinstance(value, Mapping):
            value = sum(v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool))
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        values.append(float(value))
    return tuple(values)


def style_from_conversation(conversation: object) -> tuple[float, ...] | None:
    """Counts over the assistant turns of an OpenAI-style message list (clean-battle `conversation_a`)."""
    if not isinstance(conversation, list):
        return None
    turns = [m.get("content") for m in conversation if isinstance(m, Mapping) and m.get("role") == "assistant"]
    texts = [t for t in turns if isinstance(t, str)]
    return style_counts("\n\n".join(texts)) if texts else None


def battle_features(text_a: str, text_b: str) -> dict[str, float]:
    """The style counts of both sides as a Battle's `features` ({'length_a': …, 'length_b': …, …})."""
    features: dict[str, float] = {}
    for side, text in (("a", text_a), ("b", text_b)):
        for name, value in zip(STYLE_FEATURES, style_counts(text), strict=True):
            features[f"{name}_{side}"] = value
    return features


@dataclass
class StyleFit:
    ratings: dict[str, float | None]  # None: outside the largest ratable part of the comparison graph
    coefficients: dict[str, float]
    battles: int  # battles with style data that entered the fit


def style_features(style_a: np.ndarray, style_b: np.ndarray) -> np.ndarray:
    """Normalised, standardised differences (battles × features)."""
    total = style_a + style_b
    diff = np.divide(style_a - style_b, total, out=np.zeros_like(total), where=total > 0)
    spread = diff.std(axis=0)
    return (diff - diff.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def bt_style_control(battles: Sequence[Battle], *, tol: float = 1e-10, max_iter: int = 100) -> StyleFit:
    """Ratings and style coefficients from battles that carry `style_a` / `style_b` counts."""
    rows = [b for b in battles if b.model_a != b.model_b and b.style_a is not None and b.style_b is not None]
    counts = PairCounts.from_battles(rows)
    ratings: dict[str, float | None] = dict.fromkeys(counts.models)
    groups = components(counts)
    if not groups:
        return StyleFit(ratings, dict.fromkeys(STYLE_FEATURES, 0.0), 0)
    keep = set(ratable(counts, groups[0])[0])  # the largest component's ratable part, as the leaderboard
    names = [counts.models[k] for k in sorted(keep)]
    index = {name: k for k, name in enumerate(names)}
    rows = [b for b in rows if b.model_a in index and b.model_b in index]
    if len(names) < 2 or not rows:
        return StyleFit(ratings, dict.fromkeys(STYLE_FEATURES, 0.0), 0)
    a = np.array([index[b.model_a] for b in rows])
    b_ = np.array([index[b.model_b] for b in rows])
    y = np.array([outcomes.score_a(outcomes.FROM_FILE_WINNER.get(b.winner, outcomes.TIE)) for b in rows])
    x = style_features(np.array([b.style_a for b in rows]), np.array([b.style_b for b in rows]))
    theta, beta = _fit(a, b_, y, x, len(names), tol=tol, max_iter=max_iter)
    values = SCALE * theta + INIT_RATING
    values += INIT_RATING - values.mean()
    ratings.update({name: float(values[k]) for name, k in index.items()})
    return StyleFit(ratings, {f: float(c) for f, c in zip(STYLE_FEATURES, beta, strict=True)}, len(rows))


def _fit(
    a: np.ndarray, b: np.ndarray, y: np.ndarray, x: np.ndarray, n: int, *, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Damped Newton on the negative log-likelihood over (θ, β); the θ shift is pinned as in bt_fit_weights."""
    features = x.shape[1]
    theta, beta = np.zeros(n), np.zeros(features)

    def nll(t: np.ndarray, c: np.ndarray) -> float:
        z = LN10 * (t[a] - t[b]) + x @ c
        return -float(np.sum(y * log_expit(z) + (1 - y) * log_expit(-z)))

    current = nll(theta, beta)
    limit = tol * max(1.0, len(y))
    for _ in range(max_iter):
        z = LN10 * (theta[a] - theta[b]) + x @ beta
        p = expit(z)
        residual = y - p  # ∂ log-likelihood / ∂z per battle
        grad = -np.concatenate([LN10 * (np.bincount(a, residual, n) - np.bincount(b, residual, n)), x.T @ residual])
        if np.max(np.abs(grad)) < limit:
            break
        w = p * (1 - p)
        pair = np.zeros((n, n))
        np.add.at(pair, (a, b), w)
        pair += pair.T
        hess = np.zeros((n + features, n + features))
        hess[:n, :n] = LN10**2 * (np.diag(pair.sum(axis=1)) - pair) + np.ones((n, n)) / n
        wx = w[:, None] * x
        cross = LN10 * np.stack(
            [np.bincount(a, wx[:, f], n) - np.bincount(b, wx[:, f], n) for f in range(features)], axis=1
        )
        hess[:n, n:], hess[n:, :n] = cross, cross.T
        hess[n:, n:] = x.T @ wx + 1e-9 * np.eye(features)  # a constant feature would be singular
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-8:
            candidate_theta, candidate_beta = theta - size * step[:n], beta - size * step[n:]
            value = nll(candidate_theta, candidate_beta)
            if value <= current + 1e-12 * abs(current):
                theta, beta, current = candidate_theta, candidate_beta, value
                break
            size *= 0.5
        else:
            break
    return theta, beta
