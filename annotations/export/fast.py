"""The fast path of the live `pairwise` JSONL stream (PostgreSQL): lean queries, lines built from strings.

The general path (source.py `bundles` -> `summarise` -> formats.py `pairwise_rows` -> JSON encoder) reads
every judgment column, decodes jsonb and builds dicts per item. For the pairwise format of pairwise
campaigns, this path reads the same two streams in item order with only the columns a pairwise row needs
(jsonb as text, decoded only where used), resolves with the same `pairwise_resolve` and filters as
`summarise` (an item's single vote inlined: its label, and P(A) = the judge's reliability), and writes each
line from pre-encoded strings with the pairwise format's own line encoder (formats.py `PAIRWISE.line`, made
from the one list of its columns): byte-identical to the general path's output. A pair whose two responses
have the same text is left out, as `rows_build` leaves it out. String prompts are copied as PostgreSQL writes
jsonb text, whose escapes are those of Python's JSON encoder (no decode and re-encode).

An item it does not handle (a judgment with a ranking or ratings, not exactly two responses, or an adjudicated
label from the review queue) goes through the general path (`bundles` restricted to that item).
tests/datasets/test_export_fast.py checks that both paths give the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import groupby
from json.encoder import encode_basestring  # the C encoder of JSONEncoder(ensure_ascii=False)
from operator import itemgetter
from typing import Any

from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast

from annotations.aggregation import PRIOR_RELIABILITY, PairwiseResolution, clamp_reliability, pairwise_resolve
from annotations.export.filters import ExportFilters, ExportOptions
from annotations.export.formats import PAIRWISE, prompt_messages, prompt_text, rows_build
from annotations.export.source import (
    FORMAT_NEEDS,
    Adjudicated,
    CampaignInfo,
    ItemSummary,
    bundles,
    judge_key,
    judgments_queryset,
    raw_rows,
    response_text,
    summarise,
    summary_passes,
)
from annotations.models import ItemResponse

_first = itemgetter(0)
_loads = json.loads


def fast_path_applies(fmt: str, campaigns: dict[int, CampaignInfo]) -> bool:
    """Pairwise format, PostgreSQL, and only pairwise campaigns (where rankings are the rare exception)."""
    return (
        fmt == "pairwise"
        and connection.vendor == "postgresql"
        and bool(campaigns)
        and all(info.kind == "pairwise" for info in campaigns.values())
    )


def _json_text(expression: Any) -> Cast:
    return Cast(expression, output_field=TextField())


def pairwise_querysets(filters: ExportFilters) -> tuple[QuerySet[Any], QuerySet[Any]]:
    """The two streams, in item id order: judgments with only what a pairwise row needs, and responses.

    jsonb values arrive as JSON text (decoded only where used); the last column marks judgments with a ranking
    or ratings, whose items the general path writes (their pairs come from export/pairs.py).
    """
    judgments = judgments_queryset(filters)
    rows = judgments.order_by("item_id", "id").values_list(
        "item_id",
        "item__campaign_id",
        _json_text("item__prompt__content"),
        _json_text(KeyTransform("model_a", "item__meta")),
        _json_text(KeyTransform("model_b", "item__meta")),
        "choice",
        "source",
        "annotator_id",
        "judge_name",
        ExpressionWrapper(Q(ranking__isnull=False) | Q(ratings__isnull=False), output_field=BooleanField()),
    )
    responses = (
        ItemResponse.objects.filter(item_id__in=judgments.values("item_id"))
        .order_by("item_id", "position")
        .values_list("item_id", response_text(), "response__model_name")
    )
    return rows, responses


def _majority_view(resolution: PairwiseResolution) -> PairwiseResolution:
    majority = resolution.majority
    return PairwiseResolution(
        label=majority,
        majority=majority,
        p_a=resolution.p_a,
        margin=resolution.margin,
        agreement=resolution.counts.get(majority, 0) / resolution.n_judgments,
        n_judgments=resolution.n_judgments,
        counts=resolution.counts,
    )


def _float(value: float) -> str:
    """A float as JSONEncoder writes it (repr); values here are finite (clamped logits, shares of counts)."""
    return float.__repr__(value) if value.__class__ is float else json.dumps(value, allow_nan=False)


def pairwise_lines(
    filters: ExportFilters,
    options: ExportOptions,
    campaigns: dict[int, CampaignInfo],
    reliability: Any,
    flagged: set[str],
    encode_row: Callable[[Any], str],  # a JSON encoder (rows, prompt values)
    dropped: Counter[str],  # pairs left out because chosen == rejected, counted under "pairwise"
    adjudications: dict[int, Adjudicated] | None = None,  # reviewers' labels by item (source.py adjudications_for)
) -> Iterator[str]:
    """JSONL lines (without newline) of the pairwise format, as the general path writes them."""
    adjudications = adjudications or {}
    line = PAIRWISE.line
    weights = reliability if options.weighting == "reliability" else None
    majority_only = options.weighting == "majority"
    need_keys = bool(flagged or reliability.reliability)
    conversational, include_ties = options.conversational, options.include_ties
    check_filters = filters.min_agreement is not None or filters.min_margin is not None
    campaign_names: dict[int, str] = {}
    summary = ItemSummary()

    # A single vote's P(A) is its judge's reliability (pairwise_resolve's shortcut), unmeasured: the prior.
    prior = clamp_reliability(PRIOR_RELIABILITY)
    completion_open, completion_close = ('[{"role":"assistant","content":', "}]") if conversational else ("", "")
    prompt_open, prompt_close = ('[{"role":"user","content":', "}]") if conversational else ("", "")

    rows, responses = pairwise_querysets(filters)
    response_groups = groupby(raw_rows(responses, fetch_ahead=True), key=_first)
    pending_item, texts, models = -1, [], []
    for item_id, group in groupby(raw_rows(rows, fetch_ahead=True), key=_first):
        judgments = list(group)
        while pending_item < item_id:  # both streams walk the same item ids in the same order
            try:
                pending_item, grouped = next(response_groups)
            except StopIteration:
                pending_item, grouped = 1 << 62, iter(())
            pairs = list(grouped)
            texts = [text for _, text, _ in pairs]
            models = [model for _, _, model in pairs]
        if pending_item != item_id or len(texts) != 2 or item_id in adjudications or any(j[9] for j in judgments):
            yield from _general_item(
                item_id, filters, options, campaigns, reliability, flagged, encode_row, dropped, adjudications
            )
            continue
        if len(judgments) == 1:
            first = judgments[0]
            source = first[6]
            if need_keys:
                key = judge_key(source, first[7], first[8])
                if key in flagged:
                    continue
            else:
                key = ""
            choice = first[5]
            if not choice:
                continue  # no pairwise resolution and no ranking: the item has no pairwise row
            # pairwise_resolve of one vote, inlined (the common case of large exports; the majority view of
            # one vote is the same resolution): label = the choice, agreement 1, P(A) = r or 1 - r.
            if choice == "a" or choice == "b":
                r = clamp_reliability(weights.of(key)) if weights is not None and need_keys else prior
                p_a = r if choice == "a" else 1.0 - r
            else:
                p_a = 0.5
            label, agreement, n_judgments = choice, 1.0, 1
        else:
            first = judgments[0]
            if need_keys:
                keyed = [(judge_key(j[6], j[7], j[8]), j) for j in judgments]
                if flagged:
                    keyed = [(key, j) for key, j in keyed if key not in flagged]
                    if not keyed:
                        continue
            else:
                keyed = [("", j) for j in judgments]
            distinct = {j[6] for _, j in keyed}
            source = next(iter(distinct)) if len(distinct) == 1 else "+".join(sorted(distinct))
            votes = [(key, j[5]) for key, j in keyed if j[5]]
            if not votes:
                continue
            resolution = pairwise_resolve(votes, weights)
            if majority_only:
                resolution = _majority_view(resolution)
            label, agreement, n_judgments, p_a = (
                resolution.label,
                resolution.agreement,
                resolution.n_judgments,
                resolution.p_a,
            )
        if check_filters:
            summary.agreement, summary.margin = agreement, abs(2.0 * p_a - 1.0)
            if not summary_passes(summary, filters):
                continue
        if label == "a":
            chosen, p_chosen, is_tie = 0, p_a, "false"
        elif label == "b":
            chosen, p_chosen, is_tie = 1, 1.0 - p_a, "false"
        elif label == "tie" and include_ties:
            chosen, p_chosen, is_tie = 0, 0.5, "true"
        else:
            continue
        rejected = 1 - chosen
        if texts[chosen] == texts[rejected]:  # the same completion on both sides (rows_build)
            dropped["pairwise"] += 1
            continue
        campaign_id = first[1]
        name = campaign_names.get(campaign_id)
        if name is None:
            info = campaigns.get(campaign_id)
            name = campaign_names[campaign_id] = encode_basestring(info.name if info is not None else str(campaign_id))
        raw_prompt = first[2]
        if raw_prompt[0] == '"':
            # A string prompt: PostgreSQL writes jsonb strings with the escapes of Python's encoder
            # (escape_json: \" \\ \b \f \n \r \t, other controls as \u00xx, the rest as is), so the text
            # is already the JSON the general path writes; no decoding and re-encoding.
            prompt = prompt_open + raw_prompt + prompt_close
        else:
            content = _loads(raw_prompt)
            prompt = encode_row(prompt_messages(content) if conversational else prompt_text(content))
        model_chosen = _meta_model(first[3 + chosen]) or models[chosen]
        model_rejected = _meta_model(first[3 + rejected]) or models[rejected]
        yield line(
            prompt=prompt,
            chosen=f"{completion_open}{encode_basestring(texts[chosen])}{completion_close}",
            rejected=f"{completion_open}{encode_basestring(texts[rejected])}{completion_close}",
            margin=_float(abs(2.0 * p_chosen - 1.0)),
            p_chosen=_float(p_chosen),
            is_tie=is_tie,
            source=encode_basestring(source),
            n_judgments=int.__repr__(n_judgments),
            agreement=_float(agreement),
            item_id=int.__repr__(item_id),
            campaign=name,
            model_chosen=encode_basestring(model_chosen),
            model_rejected=encode_basestring(model_rejected),
            label_source='"aggregated"',
            adjudication_note="null",
        )


def _meta_model(raw: str | None) -> str:
    """meta.model_a / model_b (JSON text) when it is a non-empty string, else "" (formats.py `_model`)."""
    if raw is None:
        return ""
    value = _loads(raw)
    return value if isinstance(value, str) else ""


def _general_item(
    item_id: int,
    filters: ExportFilters,
    options: ExportOptions,
    campaigns: dict[int, CampaignInfo],
    reliability: Any,
    flagged: set[str],
    encode_row: Callable[[Any], str],  # a JSON encoder (rows, prompt values)
    dropped: Counter[str],
    adjudications: dict[int, Adjudicated],
) -> Iterator[str]:
    """One item through the general path (bundles -> summarise -> rows_build)."""
    for bundle in bundles(filters, campaigns, FORMAT_NEEDS["pairwise"], item_id=item_id):
        summary = summarise(bundle, options, reliability, flagged, adjudications)
        if summary is None or not summary_passes(summary, filters):
            continue
        rows, left_out = rows_build("pairwise", bundle, summary, options)
        dropped["pairwise"] += left_out
        for row in rows:
            yield encode_row(row)
