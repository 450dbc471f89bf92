"""Export formats: rows built from one item bundle, and the Parquet schema of each format.

Each builder returns the item's rows as plain dicts (JSON-ready: strings, numbers, bools, lists, dicts);
the JSONL and Parquet writers share them, so both files of a format hold the same columns.

- pairwise  TRL preference data with an explicit prompt: prompt, chosen, rejected (+ metadata); ranked and rated
            items are binarised into pairs (export/pairs.py, `pair_mode`)
- kto       TRL unpaired data: prompt, completion, label (bool)
- ranking   prompt and its responses ordered by resolved rank (tied responses share a rank)
- ratings   UltraFeedback-like: prompt, completions with per-aspect mean/std/n, rationales
- arena     Chatbot Arena clean-battle rows, one per pairwise judgment whose responses have model names
- raw       every judgment, unaggregated (annotators as stable pseudonyms)

The label formats (pairwise, kto, ranking, ratings) carry `label_source`: "aggregated", or "adjudicated" when a
reviewer settled the item (with `adjudication_note`); arena and raw rows are judgments, which adjudication keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from annotations.export.columns import Columns, Row
from annotations.export.filters import ExportOptions
from annotations.export.pairs import Grades, grades_of_ranking, grades_of_scores, pairs_choose, raters_prefer
from annotations.export.source import (
    J_ANNOTATOR,
    J_CANNOT_RANK,
    J_CHOICE,
    J_CONFIDENCE,
    J_CREATED,
    J_EDITED,
    J_GUIDELINE,
    J_ID,
    J_JUDGE_NAME,
    J_PRESENTED,
    J_RANKING,
    J_RATINGS,
    J_RATIONALE,
    J_SOURCE,
    J_STRENGTH,
    J_TIME,
    ItemBundle,
    ItemSummary,
    judge_key,
    pseudonym,
)
from arena import outcomes

# --- the pairwise columns, listed once ----------------------------------------------------------------
PAIRWISE = Columns(
    ("prompt", "text"),
    ("chosen", "text"),
    ("rejected", "text"),
    ("margin", "float"),  # |2 p_chosen - 1|
    ("p_chosen", "float"),  # P(chosen is better): reliability-weighted votes, Bradley–Terry, or raters' share
    ("is_tie", "bool"),
    ("source", "string"),
    ("n_judgments", "int"),
    ("agreement", "float"),
    ("item_id", "int"),
    ("campaign", "string"),
    ("model_chosen", "string"),
    ("model_rejected", "string"),
    ("label_source", "string"),  # "aggregated", or "adjudicated": a reviewer's label (review queue)
    ("adjudication_note", "string"),  # the reviewer's note; null when aggregated
)


# --- text or messages ---------------------------------------------------------------------------------
def content_text(content: Any) -> str:
    """A message's content as text: a string as it is; OpenAI content parts joined, an image part written as its
    reference `<image sha256:<hex>>` (the image_pairs format exports the images themselves)."""
    if not isinstance(content, list):
        return str(content)
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            texts.append(f"<image {(part.get('image_url') or {}).get('url', '')}>")
        elif isinstance(part, dict):
            texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def prompt_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(f"{m.get('role', '')}: {content_text(m.get('content', ''))}" for m in content or [])


def prompt_messages(content: Any) -> list[dict[str, str]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    return [{"role": str(m.get("role", "")), "content": content_text(m.get("content", ""))} for m in content or []]


def _prompt(bundle: ItemBundle, options: ExportOptions) -> Any:
    return prompt_messages(bundle.prompt) if options.conversational else prompt_text(bundle.prompt)


def _completion(text: str, options: ExportOptions) -> Any:
    return [{"role": "assistant", "content": text}] if options.conversational else text


def _model(bundle: ItemBundle, position: int) -> str:
    # Arena items name the battle's model versions in meta; elsewhere the response's model name.
    key = ("model_a", "model_b")[position] if position < 2 else None
    if key and isinstance(bundle.meta.get(key), str) and bundle.meta[key]:
        return bundle.meta[key]
    return bundle.responses[position][1] if position < len(bundle.responses) else ""


# --- pairwise ---------------------------------------------------------------------------------------
def _pair_row(
    bundle: ItemBundle,
    summary: ItemSummary,
    options: ExportOptions,
    chosen: int,
    rejected: int,
    *,
    p_chosen: float,
    agreement: float,
    n_judgments: int,
    is_tie: bool = False,
) -> Row:
    return PAIRWISE.row(
        prompt=_prompt(bundle, options),
        chosen=_completion(bundle.responses[chosen][0], options),
        rejected=_completion(bundle.responses[rejected][0], options),
        margin=abs(2.0 * p_chosen - 1.0),
        p_chosen=p_chosen,
        is_tie=is_tie,
        source=summary.source,
        n_judgments=n_judgments,
        agreement=agreement,
        item_id=bundle.item_id,
        campaign=bundle.campaign.name,
        model_chosen=_model(bundle, chosen),
        model_rejected=_model(bundle, rejected),
        label_source=summary.label_source,
        adjudication_note=summary.adjudication_note,
    )


def _pairs(grades: Grades, bundle: ItemBundle, options: ExportOptions) -> list[tuple[int, int]]:
    return pairs_choose(
        grades, mode=options.pair_mode, margin=options.pair_margin, seed=options.pair_seed, item_id=bundle.item_id
    )


def overall_score(per_aspect: dict[str, Any]) -> float | None:
    """A rated response's overall score: the mean of its per-aspect means (None: never scored)."""
    means = [s.mean for s in per_aspect.values() if s.mean is not None]
    return sum(means) / len(means) if means else None


def _rating_aspects(bundle: ItemBundle, ratings: list[dict[str, Any]]) -> tuple[str, ...]:
    return bundle.campaign.aspects or tuple(sorted(ratings[0]))  # as source.py `summarise` resolves them


def pairwise_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    resolution = summary.pairwise
    if resolution is not None:
        label = resolution.label
        if label in ("a", "b"):
            chosen = 0 if label == "a" else 1
            p_chosen = resolution.p_a if chosen == 0 else 1.0 - resolution.p_a
            return [
                _pair_row(
                    bundle,
                    summary,
                    options,
                    chosen,
                    1 - chosen,
                    p_chosen=p_chosen,
                    agreement=resolution.agreement,
                    n_judgments=resolution.n_judgments,
                )
            ]
        if label == "tie" and options.include_ties:
            return [
                _pair_row(
                    bundle,
                    summary,
                    options,
                    0,
                    1,
                    p_chosen=0.5,
                    agreement=resolution.agreement,
                    n_judgments=resolution.n_judgments,
                    is_tie=True,
                )
            ]
        return []
    ranking = summary.ranking
    if ranking is None:
        return _rated_pair_rows(bundle, summary, options)
    rows = []
    rankings = [j[J_RANKING] for j in bundle.judgments if j[J_RANKING] and not j[J_CANNOT_RANK]]
    for chosen, rejected in _pairs(grades_of_ranking(ranking.groups), bundle, options):
        # Agreement of a pair: share of the item's rankings that put `chosen` above `rejected`.
        above = sum(1 for r in rankings if _rank_in(r, chosen) < _rank_in(r, rejected))
        rows.append(
            _pair_row(
                bundle,
                summary,
                options,
                chosen,
                rejected,
                p_chosen=1.0 if summary.label_source == "adjudicated" else ranking.p_better(chosen, rejected),
                agreement=above / len(rankings) if rankings else 0.0,
                n_judgments=ranking.n_judgments,
            )
        )
    return rows


def _rated_pair_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    """Pairs of a rated item by overall score; P(chosen) and agreement from the raters who scored both."""
    if not summary.ratings:
        return []
    ratings = [j[J_RATINGS] for j in bundle.judgments if j[J_RATINGS]]
    aspects = _rating_aspects(bundle, ratings)
    grades = grades_of_scores([overall_score(per_aspect) for per_aspect in summary.ratings])
    rows = []
    for chosen, rejected in _pairs(grades, bundle, options):
        p_chosen, agreement = raters_prefer(ratings, aspects, chosen, rejected)
        if summary.label_source == "adjudicated":
            p_chosen = 1.0  # the reviewer's scores decide; agreement stays the raters' share
        rows.append(
            _pair_row(
                bundle,
                summary,
                options,
                chosen,
                rejected,
                p_chosen=p_chosen,
                agreement=agreement,
                n_judgments=len(ratings),
            )
        )
    return rows


def _rank_in(ranking: list[list[int]], position: int) -> int:
    for rank, group in enumerate(ranking):
        if position in group:
            return rank
    return len(ranking)


# --- kto --------------------------------------------------------------------------------------------
def kto_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    labelled: list[tuple[int, bool]] = []
    agreement = summary.agreement if summary.agreement is not None else 0.0
    if summary.pairwise is not None:
        label = summary.pairwise.label
        if label in ("a", "b"):
            chosen = 0 if label == "a" else 1
            labelled = [(chosen, True), (1 - chosen, False)]
        elif label == "both_bad":
            labelled = [(0, False), (1, False)]
        n_judgments = summary.pairwise.n_judgments
    elif summary.ranking is not None and len(summary.ranking.groups) > 1:
        groups = summary.ranking.groups
        labelled = [(p, True) for p in groups[0]] + [(p, False) for p in groups[-1]]
        n_judgments = summary.ranking.n_judgments
    elif summary.ratings:
        # the best overall score desirable, the worst undesirable (nothing when every score is equal)
        groups = grades_of_scores([overall_score(per_aspect) for per_aspect in summary.ratings]).groups
        if len(groups) < 2:
            return []
        labelled = [(p, True) for p in groups[0]] + [(p, False) for p in groups[-1]]
        n_judgments = sum(1 for j in bundle.judgments if j[J_RATINGS])
    else:
        return []
    return [
        {
            "prompt": _prompt(bundle, options),
            "completion": _completion(bundle.responses[position][0], options),
            "label": desirable,
            "margin": summary.margin if summary.margin is not None else 0.0,
            "source": summary.source,
            "n_judgments": n_judgments,
            "agreement": agreement,
            "item_id": bundle.item_id,
            "campaign": bundle.campaign.name,
            "model": _model(bundle, position),
            "label_source": summary.label_source,
            "adjudication_note": summary.adjudication_note,
        }
        for position, desirable in labelled
    ]


# --- ranking ----------------------------------------------------------------------------------------
def ranking_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    if summary.ranking is not None:
        groups, scores = summary.ranking.groups, summary.ranking.scores
        n_judgments = summary.ranking.n_judgments
    elif summary.pairwise is not None and summary.pairwise.label in ("a", "b", "tie"):
        label, p_a = summary.pairwise.label, summary.pairwise.p_a
        groups = {"a": [[0], [1]], "b": [[1], [0]], "tie": [[0, 1]]}[label]
        scores = [p_a, 1.0 - p_a]
        n_judgments = summary.pairwise.n_judgments
    else:
        return []
    responses = [
        {
            "text": bundle.responses[position][0],
            "model": _model(bundle, position),
            "rank": rank,
            "score": float(scores[position]),
        }
        for rank, group in enumerate(groups, start=1)
        for position in group
    ]
    return [
        {
            "prompt": _prompt(bundle, options),
            "responses": responses,
            "n_judgments": n_judgments,
            "agreement": summary.agreement if summary.agreement is not None else 0.0,
            "source": summary.source,
            "item_id": bundle.item_id,
            "campaign": bundle.campaign.name,
            "label_source": summary.label_source,
            "adjudication_note": summary.adjudication_note,
        }
    ]


# --- ratings ----------------------------------------------------------------------------------------
def ratings_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    if not summary.ratings:
        return []
    completions = []
    for position, per_aspect in enumerate(summary.ratings):
        completions.append(
            {
                "text": bundle.responses[position][0],
                "model": _model(bundle, position),
                "overall": overall_score(per_aspect),
                "ratings": [
                    {"aspect": aspect, "mean": s.mean, "std": s.std, "n": s.n} for aspect, s in per_aspect.items()
                ],
            }
        )
    rated = [j for j in bundle.judgments if j[J_RATINGS]]
    return [
        {
            "prompt": _prompt(bundle, options),
            "completions": completions,
            "rationales": [j[J_RATIONALE] for j in rated if j[J_RATIONALE]],
            "n_judgments": len(rated),
            "source": summary.source,
            "item_id": bundle.item_id,
            "campaign": bundle.campaign.name,
            "label_source": summary.label_source,
            "adjudication_note": summary.adjudication_note,
        }
    ]


# --- arena ------------------------------------------------------------------------------------------
def _timestamp(bundle: ItemBundle, created: datetime) -> float:
    voted = bundle.meta.get("voted_at")
    if isinstance(voted, str):
        try:
            return datetime.fromisoformat(voted).timestamp()
        except ValueError:
            pass
    return created.timestamp()


def arena_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    if len(bundle.responses) != 2:
        return []
    model_a, model_b = _model(bundle, 0), _model(bundle, 1)
    if not model_a or not model_b:
        return []
    question = prompt_messages(bundle.prompt)
    conversation_a = [*question, {"role": "assistant", "content": bundle.responses[0][0]}]
    conversation_b = [*question, {"role": "assistant", "content": bundle.responses[1][0]}]
    return [
        {
            "question_id": str(bundle.item_id),
            "model_a": model_a,
            "model_b": model_b,
            "winner": outcomes.FILE_WINNER[j[J_CHOICE]],
            "judge": pseudonym(judge_key(j[J_SOURCE], j[J_ANNOTATOR], j[J_JUDGE_NAME])),
            "anony": bool(bundle.meta.get("anony", True)),
            "tstamp": _timestamp(bundle, j[J_CREATED]),
            "turn": 1,
            "conversation_a": conversation_a,
            "conversation_b": conversation_b,
            "source": j[J_SOURCE],
            "judgment_id": j[J_ID],
            "item_id": bundle.item_id,
            "campaign": bundle.campaign.name,
        }
        for j in bundle.judgments
        if j[J_CHOICE] in outcomes.FILE_WINNER
    ]


# --- raw --------------------------------------------------------------------------------------------
def raw_rows(bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> list[Row]:
    responses = [{"text": text, "model": _model(bundle, n)} for n, (text, _) in enumerate(bundle.responses)]
    prompt = _prompt(bundle, options)
    meta = json.dumps(bundle.meta, sort_keys=True, ensure_ascii=False)
    return [
        {
            "judgment_id": j[J_ID],
            "item_id": bundle.item_id,
            "campaign": bundle.campaign.name,
            "campaign_kind": bundle.campaign.kind,
            "source": j[J_SOURCE],
            "annotator": pseudonym(f"user:{j[J_ANNOTATOR]}") if j[J_ANNOTATOR] is not None else None,
            "judge_name": j[J_JUDGE_NAME],
            "choice": j[J_CHOICE] or None,
            "strength": j[J_STRENGTH] or None,
            "ranking": j[J_RANKING],
            "cannot_rank": bool(j[J_CANNOT_RANK]),
            "ratings": (
                [{"aspect": aspect, "scores": [float(s) for s in scores]} for aspect, scores in j[J_RATINGS].items()]
                if j[J_RATINGS]
                else None
            ),
            "rationale": j[J_RATIONALE],
            "edited_answer": j[J_EDITED],
            "confidence": j[J_CONFIDENCE],
            "presented_order": j[J_PRESENTED],
            "guideline_version": j[J_GUIDELINE],
            "time_spent_ms": j[J_TIME],
            "created_at": j[J_CREATED].isoformat(),
            "is_gold": bundle.is_gold,
            "prompt": prompt,
            "responses": responses,
            "item_meta": meta,
        }
        for j in bundle.judgments
    ]


BUILDERS: dict[str, Callable[[ItemBundle, ItemSummary, ExportOptions], list[Row]]] = {
    "pairwise": pairwise_rows,
    "kto": kto_rows,
    "ranking": ranking_rows,
    "ratings": ratings_rows,
    "arena": arena_rows,
    "raw": raw_rows,
}
PAIRED_FORMATS = frozenset({"pairwise"})  # formats whose rows hold a chosen and a rejected completion


def rows_build(fmt: str, bundle: ItemBundle, summary: ItemSummary, options: ExportOptions) -> tuple[list[Row], int]:
    """The item's rows of `fmt`, and how many pairs were left out because chosen equals rejected.

    Two identical completions (compared as exported: text, or messages) teach nothing: DPO's and the reward
    model's losses see the same log-probability or score on both sides, a gradient of exactly zero, and the
    row only dilutes a batch. Every writer (streams, files, snapshots) builds rows through here.
    """
    rows = BUILDERS[fmt](bundle, summary, options)
    if fmt not in PAIRED_FORMATS:
        return rows, 0
    kept = [row for row in rows if row["chosen"] != row["rejected"]]
    return kept, len(rows) - len(kept)


# --- Parquet schemas (pyarrow imported lazily: the web process never needs it for JSONL) --------------
def arrow_schema(fmt: str, options: ExportOptions) -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.list_(message)
    prompt = messages if options.conversational else pa.string()
    completion = messages if options.conversational else pa.string()
    common = [("source", pa.string()), ("item_id", pa.int64()), ("campaign", pa.string())]
    marking = [("label_source", pa.string()), ("adjudication_note", pa.string())]
    if fmt == "pairwise":
        return pa.schema(PAIRWISE.arrow_fields(prompt))
    if fmt == "kto":
        return pa.schema(
            [
                ("prompt", prompt),
                ("completion", completion),
                ("label", pa.bool_()),
                ("margin", pa.float64()),
                ("source", pa.string()),
                ("n_judgments", pa.int64()),
                ("agreement", pa.float64()),
                ("item_id", pa.int64()),
                ("campaign", pa.string()),
                ("model", pa.string()),
                *marking,
            ]
        )
    if fmt == "ranking":
        response = pa.struct(
            [("text", pa.string()), ("model", pa.string()), ("rank", pa.int64()), ("score", pa.float64())]
        )
        return pa.schema(
            [
                ("prompt", prompt),
                ("responses", pa.list_(response)),
                ("n_judgments", pa.int64()),
                ("agreement", pa.float64()),
                *common,
                *marking,
            ]
        )
    if fmt == "ratings":
        aspect = pa.struct([("aspect", pa.string()), ("mean", pa.float64()), ("std", pa.float64()), ("n", pa.int64())])
        completion_type = pa.struct(
            [("text", pa.string()), ("model", pa.string()), ("overall", pa.float64()), ("ratings", pa.list_(aspect))]
        )
        return pa.schema(
            [
                ("prompt", prompt),
                ("completions", pa.list_(completion_type)),
                ("rationales", pa.list_(pa.string())),
                ("n_judgments", pa.int64()),
                *common,
                *marking,
            ]
        )
    if fmt == "arena":
        return pa.schema(
            [
                ("question_id", pa.string()),
                ("model_a", pa.string()),
                ("model_b", pa.string()),
                ("winner", pa.string()),
                ("judge", pa.string()),
                ("anony", pa.bool_()),
                ("tstamp", pa.float64()),
                ("turn", pa.int64()),
                ("conversation_a", messages),
                ("conversation_b", messages),
                ("source", pa.string()),
                ("judgment_id", pa.int64()),
                ("item_id", pa.int64()),
                ("campaign", pa.string()),
            ]
        )
    if fmt == "raw":
        return pa.schema(
            [
                ("judgment_id", pa.int64()),
                ("item_id", pa.int64()),
                ("campaign", pa.string()),
                ("campaign_kind", pa.string()),
                ("source", pa.string()),
                ("annotator", pa.string()),
                ("judge_name", pa.string()),
                ("choice", pa.string()),
                ("strength", pa.string()),
                ("ranking", pa.list_(pa.list_(pa.int64()))),
                ("cannot_rank", pa.bool_()),
                ("ratings", pa.list_(pa.struct([("aspect", pa.string()), ("scores", pa.list_(pa.float64()))]))),
                ("rationale", pa.string()),
                ("edited_answer", pa.string()),
                ("confidence", pa.float64()),
                ("presented_order", pa.list_(pa.int64())),
                ("guideline_version", pa.int64()),
                ("time_spent_ms", pa.int64()),
                ("created_at", pa.string()),
                ("is_gold", pa.bool_()),
                ("prompt", prompt),
                ("responses", pa.list_(pa.struct([("text", pa.string()), ("model", pa.string())]))),
                ("item_meta", pa.string()),
            ]
        )
    raise ValueError(f"unknown format {fmt!r}")
