"""The outcome of one pairwise comparison, once: its four values, their spellings, what each counts for.

Pure Python (no Django, no project import), so every layer may use it: `annotations.models.PairwiseChoice`
(the choice of a human or LLM judgment, and of an arena vote: `arena.models.Winner` is the same enum) is
built from `OUTCOMES`; the arena's battle files (LMArena / FastChat `winner` strings), its per-pair counts
(`PairStats` columns) and its online Elo all map outcomes through the functions here.
"""

from __future__ import annotations

A, B, TIE, BOTH_BAD = "a", "b", "tie", "both_bad"
# value -> label: the choices of PairwiseChoice / Winner.
OUTCOMES: dict[str, str] = {A: "A is better", B: "B is better", TIE: "Tie", BOTH_BAD: "Both are bad"}

# The `winner` of LMArena's published battle files (FastChat): both-bad is a kind of tie there.
FILE_WINNER = {A: "model_a", B: "model_b", TIE: "tie", BOTH_BAD: "tie (bothbad)"}
FROM_FILE_WINNER = {spelling: outcome for outcome, spelling in FILE_WINNER.items()}

# PairStats counts each unordered pair (lo = the smaller model id) in these columns.
PAIR_COLUMNS = ("wins_lo", "wins_hi", "ties", "both_bad")

ELO_K, ELO_BASE, ELO_SCALE, ELO_INIT = 4.0, 10.0, 400.0, 1000.0


def score_a(outcome: str) -> float:
    """What the outcome is worth to side A: 1 for a win, 0 for a loss, ½ for a tie or both bad."""
    return {A: 1.0, B: 0.0}.get(outcome, 0.5)


def pair_column(outcome: str, a_is_lo: bool) -> str:
    """The PairStats column one battle adds to, given whether side A is the pair's lower model id."""
    if outcome == A:
        return "wins_lo" if a_is_lo else "wins_hi"
    if outcome == B:
        return "wins_hi" if a_is_lo else "wins_lo"
    if outcome == TIE:
        return "ties"
    if outcome == BOTH_BAD:
        return "both_bad"
    raise ValueError(f"not an outcome: {outcome!r}")


def elo_step(
    ra: float, rb: float, outcome: str, *, k: float = ELO_K, base: float = ELO_BASE, scale: float = ELO_SCALE
) -> tuple[float, float]:
    """Both sides' ratings after one battle (FastChat's compute_online_elo step; ties and both bad ½)."""
    expected_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
    expected_b = 1.0 / (1.0 + base ** ((ra - rb) / scale))
    won = score_a(outcome)
    return ra + k * (won - expected_a), rb + k * (1.0 - won - expected_b)
