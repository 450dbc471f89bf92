"""Guard checks of the promotion gate (pure): figures a challenger must not regress on, whatever the judge says.

A judge can be fooled: a policy that learned the judge's rule ("prefer the answer containing *and*") wins its
battles while its answers lose their content. Guards measure what the judge does not:

- `held_out_accuracy`: implicit reward accuracy on held-out human-preferred pairs (workers/ml/training.py);
- `kl`: KL(challenger ‖ champion) on held-out prompts, estimated from the challenger's own samples:
  KL = E_{y ~ π_c}[log π_c(y|x) − log π_champ(y|x)] (Monte Carlo; summed over the response's tokens, the
  per-sequence KL that RLHF bounds, Ouyang et al. 2022 eq. 2). A collapsed policy drifts far from the champion;
- `reward_model`: mean score of a named reward model on the challenger's answers minus the champion's;
- `reference_f1`: token-F1 (SQuAD's, Rajpurkar et al. 2016) of the answers against reference answers, the
  challenger's mean minus the champion's.

Each guard yields a `GuardResult` (figure, threshold, verdict) that is stored on the run and shown.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workers.ml.types import Prompt

GUARD_NAMES = ("held_out_accuracy", "kl", "reward_model", "reference_f1")


@dataclass(frozen=True)
class GuardResult:
    """One guard's verdict: `figure` compared with `threshold` by `comparison` ('>=' or '<=')."""

    name: str
    figure: float | None  # None: the guard could not be measured (no data): it fails, closed
    threshold: float
    comparison: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def guard_result(name: str, figure: float | None, threshold: float, comparison: str, detail: str) -> GuardResult:
    """Compare a figure with its threshold; an unmeasured figure fails (a guard that cannot look must not pass)."""
    if comparison not in (">=", "<="):
        raise ValueError(f"comparison must be '>=' or '<=', not {comparison!r}")
    if figure is None or figure != figure:  # None or NaN
        return GuardResult(name, None, threshold, comparison, False, f"not measured: {detail}")
    passed = figure >= threshold if comparison == ">=" else figure <= threshold
    return GuardResult(name, float(figure), threshold, comparison, passed, detail)


# --- token-F1 -----------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def answer_tokens(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation, no articles, whitespace tokens."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction: str, reference: str) -> float:
    """Token-level F1 of a prediction against one reference (1.0 when both are empty)."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def mean_token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean token-F1 over aligned predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return float("nan")
    return sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions)


# --- KL -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KlEstimate:
    """Monte Carlo KL(challenger ‖ champion) per response (nats) and per response token."""

    per_response: float
    per_token: float
    responses: int


def sequence_kl(
    *,
    challenger_path: str | Path,
    champion_path: str | Path,
    prompts: Sequence[Prompt],
    challenger_responses: Sequence[str],
    device: str | None = None,
) -> KlEstimate:
    """KL(π_c ‖ π_champ) from the challenger's own samples y ~ π_c: mean of log π_c(y|x) − log π_champ(y|x)."""
    import torch

    from workers.ml.device import device_pick
    from workers.ml.training import completion_logps, load_policy, load_tokenizer

    if not prompts:
        return KlEstimate(per_response=float("nan"), per_token=float("nan"), responses=0)
    target = device_pick(device)
    tokenizer = load_tokenizer(challenger_path)
    scores = []
    for path in (challenger_path, champion_path):
        model = load_policy(path, torch.float32).to(target).eval()
        scores.append(completion_logps(model, tokenizer, prompts, challenger_responses, target))
        del model
    (challenger_logps, counts), (champion_logps, _) = scores
    differences = [a - b for a, b in zip(challenger_logps, champion_logps, strict=True)]
    tokens = max(sum(counts), 1)
    return KlEstimate(
        per_response=sum(differences) / len(differences), per_token=sum(differences) / tokens, responses=len(prompts)
    )
