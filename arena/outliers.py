"""Outlier voters: a sequential likelihood-ratio test (an e-value) of each voter against the crowd.

The question, per voter v (a session hash): do v's votes look like draws from the crowd's opinion of
each pair, or are they systematically against it (a troll, a bot voting the other way, a mix-up of
sides)? Votes are reduced to outcomes in model terms: for the pair {i, j} (i the lower model id) an
outcome is "i won", "j won" or "tie" (tie and both-bad together).

Null H0 (honest voter): vote t on pair {i, j} is drawn from p_t, the crowd's outcome distribution for
that pair, estimated from the counted votes of *everyone else* on the pair with add-one (Laplace)
smoothing: p_t(x) = (n_x + 1) / (n + 3), n_x the others' votes with outcome x. Votes on pairs with
fewer than `min_history` other votes carry no information and contribute a factor 1.

Alternative (contrarian voter): with probability λ the voter reports the crowd's opinion with the two
models swapped, q_λ(x) = (1 − λ)·p_t(x) + λ·p_t(swap x) (swap exchanges "i won" and "j won", keeps
ties). Each factor's expectation under H0 is Σ_x p_t(x)·q_λ(x)/p_t(x) = Σ_x q_λ(x) = 1, so for fixed λ
the running product E_t(λ) = Π_{s≤t} q_λ(x_s)/p_s(x_s) is a non-negative martingale under H0 (a test
martingale), and so is the average over a fixed grid of λ (a mixture needs no choice of λ in advance).
Ville's inequality gives P_H0(sup_t E_t ≥ 1/α) ≤ α: flagging a voter as soon as their e-value reaches
1/α (α = 0.05 → 20) wrongly flags an honest voter with probability at most α, however many votes
they cast and whenever we look ("anytime-valid"; no correction for peeking). The reported e-value is
the running maximum over the voter's votes in time order.

Caveats, documented rather than hidden: p_t is estimated, not known (the guarantee is approximate when
a pair has little history; `min_history` and the smoothing keep early votes uninformative); the test
is per voter, so across many voters about α of honest ones could be flagged if all had enough votes
(lower α for a large arena); and it only detects *contrarian* voting, not random clicking, which has
likelihood ratio ~1 on balanced pairs and only adds noise.

Effect of a flag: the voter's counted votes become counted=False with reason `outlier_voter` (never
deleted); their contribution is subtracted from PairStats in the same transaction, which keeps
PairStats equal to imported counts plus counted votes (a rebuild from Vote rows would drop imported
battles, see arena/leaderboard.py); the items those votes filed are excluded from datasets
(`annotations.services.items_exclude`: `Item.excluded_reason`, the one fact exports read). The online
Elo is a live ticker and is not rewound; the next leaderboard recompute refits the ratings without
the flagged votes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F

from annotations import services as annotation_services
from arena import outcomes, tally
from arena.models import ExclusionReason, PairStats, Vote, Winner

LAMBDAS = (0.25, 0.5, 0.75, 1.0)
OUTCOMES = 3  # lower-id model won, higher-id model won, tie (ties and both-bad)


@dataclass
class VoterEvidence:
    session_hash: str
    votes: int
    informative: int  # votes on pairs with enough history to count
    e_value: float  # running maximum of the mixture e-process
    flagged: bool = False


@dataclass
class OutlierReport:
    alpha: float
    threshold: float
    voters: list[VoterEvidence] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    votes_excluded: int = 0


@dataclass(frozen=True)
class _Vote:
    session_hash: str
    lo: int
    hi: int
    outcome: int  # 0: the lower-id model won, 1: the higher-id model won, 2: tie or both bad


def _outcome(winner: str, a_is_lo: bool) -> int:
    if winner == Winner.A:
        return 0 if a_is_lo else 1
    if winner == Winner.B:
        return 1 if a_is_lo else 0
    return 2


def counted_votes() -> list[_Vote]:
    """Every counted vote in time order, as outcomes in model terms."""
    rows = (
        Vote.objects.filter(counted=True)
        .order_by("created_at", "id")
        .values_list("session_hash", "winner", "battle__model_a_id", "battle__model_b_id")
    )
    out = []
    for session_hash, winner, a, b in rows:
        lo, hi = (a, b) if a < b else (b, a)
        out.append(_Vote(session_hash, lo, hi, _outcome(winner, a == lo)))
    return out


def voter_evidence(votes: list[_Vote], *, min_history: int = 5) -> list[VoterEvidence]:
    """E-values of every voter against everyone else's votes on the same pairs (see module docstring)."""
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * OUTCOMES)
    own: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0] * OUTCOMES)
    by_voter: dict[str, list[_Vote]] = defaultdict(list)
    for vote in votes:
        totals[(vote.lo, vote.hi)][vote.outcome] += 1
        own[(vote.session_hash, vote.lo, vote.hi)][vote.outcome] += 1
        by_voter[vote.session_hash].append(vote)
    result = []
    for session_hash, mine in by_voter.items():
        products = dict.fromkeys(LAMBDAS, 1.0)
        best, informative = 1.0, 0
        for vote in mine:  # in time order
            total, self_counts = totals[(vote.lo, vote.hi)], own[(session_hash, vote.lo, vote.hi)]
            others = [total[k] - self_counts[k] for k in range(OUTCOMES)]
            n = sum(others)
            if n < min_history:
                continue
            informative += 1
            p = [(others[k] + 1.0) / (n + OUTCOMES) for k in range(OUTCOMES)]
            swapped = {0: 1, 1: 0, 2: 2}[vote.outcome]
            ratio = p[swapped] / p[vote.outcome]  # q_1(x) / p(x)
            for lam in LAMBDAS:
                products[lam] *= (1.0 - lam) + lam * ratio
            best = max(best, sum(products.values()) / len(LAMBDAS))
        result.append(VoterEvidence(session_hash=session_hash, votes=len(mine), informative=informative, e_value=best))
    return sorted(result, key=lambda e: -e.e_value)


def outliers_flag(*, alpha: float = 0.05, min_history: int = 5, dry_run: bool = False) -> OutlierReport:
    """Test every voter; exclude the counted votes of those whose e-value reaches 1/alpha."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    report = OutlierReport(alpha=alpha, threshold=1.0 / alpha)
    if not dry_run:
        tally.votes_apply(wait=True)  # count stored votes first: PairStats then holds every counted vote
    # Already-flagged voters stay flagged (a staff decision can restore them); their old votes are not
    # part of anyone's history, so the crowd is judged without them.
    votes = counted_votes()
    report.voters = voter_evidence(votes, min_history=min_history)
    for evidence in report.voters:
        evidence.flagged = evidence.e_value >= report.threshold
    report.flagged = [e.session_hash for e in report.voters if e.flagged]
    if dry_run or not report.flagged:
        return report
    with transaction.atomic():
        detail = f"sequential e-value ≥ {report.threshold:g} (alpha {alpha:g})"
        # Lock the votes first: a vote excluded by two concurrent runs must be subtracted once.
        flagged_votes = list(
            Vote.objects.select_for_update()
            .filter(session_hash__in=report.flagged, counted=True)
            .select_related("battle")
            .order_by("id")
        )
        Vote.objects.filter(pk__in=[v.pk for v in flagged_votes]).update(
            counted=False, exclusion_reason=ExclusionReason.OUTLIER_VOTER, exclusion_detail=detail
        )
        # A vote not yet applied (it arrived during this run) was never added: nothing to subtract, and
        # the tally skips it from now on (counted=False; the row locks order the two).
        _pair_stats_subtract([v for v in flagged_votes if v.applied_at is not None])
        annotation_services.items_exclude(
            item_ids=[v.item_id for v in flagged_votes if v.item_id], reason=ExclusionReason.OUTLIER_VOTER
        )
        report.votes_excluded = len(flagged_votes)
    return report


def _pair_stats_subtract(votes: list[Vote]) -> None:
    """Take the excluded votes out of PairStats (the exact inverse of arena.tally._pair_stats_add)."""
    deltas: dict[tuple[str, int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(outcomes.PAIR_COLUMNS, 0))
    for vote in votes:
        battle = vote.battle
        lo, hi = sorted([battle.model_a_id, battle.model_b_id])
        column = outcomes.pair_column(vote.winner, battle.model_a_id == lo)
        for category in ["", *battle.categories]:
            deltas[(category, lo, hi)][column] += 1
    for (category, lo, hi), delta in sorted(deltas.items()):
        change = {key: F(key) - value for key, value in delta.items() if value}
        PairStats.objects.filter(category=category, model_lo_id=lo, model_hi_id=hi).update(**change)
