"""The server's pairing of battles: the pair distribution of the arena's models (arena/pairing.py), cached per
process, and the draw that records its probability on the battle.

Inputs are the all-battles PairStats among the arena's models (ties and both-bad as half a win each), fitted
here under the pairing's weak prior (a few milliseconds for a hundred models): the pairing does not wait for
the leaderboard's recompute and needs no bootstrap. The distribution is recomputed at most every
ARENA_PAIRING_REFRESH_SECONDS per process, and at once when the set of arena models or their weights change
(they are part of the cache key), so a battle's creation normally costs one dictionary lookup. Two processes
may hold distributions up to that many seconds apart: each battle stores the probability it was drawn with.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from threadpoolctl import threadpool_limits

from arena import pairing
from arena.models import PairStats
from arena.ratings import bt_fit_weights
from models_hub.models import Model
from prefarena.errors import Conflict

Pair = tuple[int, int]  # model ids, lower first

_lock = threading.Lock()
_cache: dict[tuple, tuple[float, dict[Pair, float]]] = {}
CACHE_KEYS = 4


@dataclass(frozen=True)
class PairChoice:
    model_a: Model
    model_b: Model
    propensity: float  # chance of the unordered pair among `pairs` eligible pairs
    pairs: int


def _key(models: list[Model]) -> tuple:
    return (
        settings.ARENA_PAIRING,
        settings.ARENA_PAIRING_FLOOR,
        settings.ARENA_PAIRING_TOP_K,
        tuple((m.pk, float(m.arena_weight)) for m in models),
    )


def _compute(models: list[Model]) -> dict[Pair, float]:
    ids = [m.pk for m in models]
    weights = np.array([m.arena_weight for m in models], dtype=float)
    if settings.ARENA_PAIRING == "weighted":
        dist = pairing.weighted_pair_probabilities(weights)
    else:
        index = {pk: k for k, pk in enumerate(ids)}
        wins = np.zeros((len(ids), len(ids)))
        rows = PairStats.objects.filter(category="", model_lo_id__in=ids, model_hi_id__in=ids).values_list(
            "model_lo_id", "model_hi_id", "wins_lo", "wins_hi", "ties", "both_bad"
        )
        for lo, hi, wins_lo, wins_hi, ties, both_bad in rows:
            i, j = index[lo], index[hi]
            half = 0.5 * (ties + both_bad)
            wins[i, j] += wins_lo + half
            wins[j, i] += wins_hi + half
        # Small solves: BLAS threads only cost here (NOTES-stack.md, "BLAS threads").
        with threadpool_limits(1):
            theta = bt_fit_weights(wins, l2_c=1.0 / pairing.PRIOR_PRECISION)
            config = pairing.PairingConfig(top_k=settings.ARENA_PAIRING_TOP_K, floor=settings.ARENA_PAIRING_FLOOR)
            dist = pairing.active_pair_probabilities(theta, wins + wins.T, weights, config)
    return {(ids[i], ids[j]): float(p) for i, j, p in zip(dist.first, dist.second, dist.probabilities, strict=True)}


def pair_distribution(models: list[Model], *, now: float | None = None) -> dict[Pair, float]:
    """P(pair) over every pair of `models` (sorted by id, weights > 0), from the cache when fresh."""
    key = _key(models)
    now = time.monotonic() if now is None else now
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
    # Computed outside the lock: two requests may both compute after an expiry; either result is valid.
    computed = _compute(models)
    with _lock:
        # Two arenas (text and image models) keep a key each; a key of other models or weights is dropped once
        # stale (a model's weight changed), and a few at most are kept.
        for stale in [k for k, (expires, _) in _cache.items() if expires <= now or len(_cache) >= CACHE_KEYS]:
            del _cache[stale]
        _cache[key] = (now + settings.ARENA_PAIRING_REFRESH_SECONDS, computed)
    return computed


def pairing_cache_clear() -> None:
    with _lock:
        _cache.clear()


def pair_choose(arena: list[Model], candidates: list[Model], rng: random.Random | None = None) -> PairChoice:
    """Two of `candidates` (a subset of the arena's models, e.g. those that answered a stored prompt) drawn by
    the arena's pair distribution restricted to them, sides in random order."""
    rng = rng or random.SystemRandom()
    if len(candidates) < 2:
        raise Conflict("The arena needs at least two models; register some and put them in the arena")
    distribution = pair_distribution(sorted(arena, key=lambda m: m.pk))
    by_id = {m.pk: m for m in candidates}
    pairs = [(pair, p) for pair, p in distribution.items() if pair[0] in by_id and pair[1] in by_id]
    total = sum(p for _, p in pairs)
    if not pairs or total <= 0:
        raise Conflict("The arena needs at least two models; register some and put them in the arena")
    (lo, hi), p = rng.choices(pairs, weights=[p for _, p in pairs])[0]
    first, second = (by_id[lo], by_id[hi]) if rng.random() < 0.5 else (by_id[hi], by_id[lo])
    return PairChoice(first, second, p / total, len(pairs))
