"""The fast path of the live `pairwise` JSONL stream (PostgreSQL): one row per item, lines built from strings.

The general path (source.py `bundles` -> `summarise` -> formats.py `pairwise_rows` -> JSON encoder) reads
every judgment column and builds dicts per item. For the pairwise format of pairwise campaigns, PostgreSQL
aggregates the item's judgments (choice, source, judge) into arrays and joins its prompt and two responses,
so Python does per item only what decides the row: the same `pairwise_resolve` and filters as `summarise`,
and one line from pre-encoded strings, byte-identical to the general path's JSON encoder output.

An item the fast query cannot express (a judgment with a ranking, or not exactly two responses) is read
through the general path (`bundles` restricted to that item). tests/datasets/test_export_fast.py checks
that both paths give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring  # the C encoder of JSONEncoder(ensure_ascii=False)
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg, BoolOr
from django.db import connection
from django.db.models import Q

from annotations.aggregation import PairwiseResolution, pairwise_resolve
from annotations.export.filters import ExportFilters, ExportOptions
from annotations.export.formats import Row, pairwise_rows, prompt_messages, prompt_text
from annotations.export.source import (
    CHUNK_SIZE,
    CampaignInfo,
    ItemSummary,
    bundles,
    judge_key,
    judgments_queryset,
    summarise,
    summary_passes,
)
from annotations.models import Item, ItemResponse, Prompt, Response


def fast_path_applies(fmt: str, campaigns: dict[int, CampaignInfo]) -> bool:
    """Pairwise format, PostgreSQL, and only pairwise campaigns (where rankings are the rare exception)."""
    return (
        fmt == "pairwise"
        and connection.vendor == "postgresql"
        and bool(campaigns)
        and all(info.kind == "pairwise" for info in campaigns.values())
    )


def item_rows_sql(filters: ExportFilters) -> tuple[str, tuple[Any, ...]]:
    """Per item (id order): campaign, prompt, arena model names, judgment arrays, the 'general path' flag, responses."""
    judgments = (
        judgments_queryset(filters)
        .order_by()
        .values("item_id")
        .annotate(
            choices=ArrayAgg("choice", order_by="id"),
            sources=ArrayAgg("source", order_by="id"),
            annotators=ArrayAgg("annotator_id", order_by="id"),
            names=ArrayAgg("judge_name", order_by="id"),
            ranked=BoolOr(Q(ranking__isnull=False)),
        )
        .values_list("item_id", "choices", "sources", "annotators", "names", "ranked")
    )
    inner, params = judgments.query.sql_with_params()
    item, prompt = Item._meta.db_table, Prompt._meta.db_table
    item_response, response = ItemResponse._meta.db_table, Response._meta.db_table
    sql = f"""
        SELECT j.item_id, i.campaign_id,
               CASE WHEN jsonb_typeof(p.content) = 'string' THEN p.content #>> '{{}}' END,
               CASE WHEN jsonb_typeof(p.content) = 'string' THEN NULL ELSE p.content::text END,
               CASE WHEN jsonb_typeof(i.meta -> 'model_a') = 'string' THEN i.meta ->> 'model_a' END,
               CASE WHEN jsonb_typeof(i.meta -> 'model_b') = 'string' THEN i.meta ->> 'model_b' END,
               j.choices, j.sources, j.annotators, j.names, j.ranked, r.texts, r.models
        FROM ({inner}) AS j(item_id, choices, sources, annotators, names, ranked)
        JOIN "{item}" i ON i.id = j.item_id
        JOIN "{prompt}" p ON p.id = i.prompt_id
        CROSS JOIN LATERAL (
            SELECT array_agg(re.text ORDER BY ir.position) AS texts,
                   array_agg(re.model_name ORDER BY ir.position) AS models
            FROM "{item_response}" ir JOIN "{response}" re ON re.id = ir.response_id
            WHERE ir.item_id = j.item_id
        ) r
        ORDER BY j.item_id
    """  # noqa: S608 - table names from model metadata; every value is a parameter
    return sql, tuple(params)


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
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(float(value)) if isinstance(value, float) else int.__repr__(value)


def pairwise_lines(
    filters: ExportFilters,
    options: ExportOptions,
    campaigns: dict[int, CampaignInfo],
    reliability: Any,
    flagged: set[str],
    encode_row: Callable[[Row], str],
) -> Iterator[str]:
    """JSONL lines (without newline) of the pairwise format, as the general path writes them."""
    weights = reliability if options.weighting == "reliability" else None
    majority_only = options.weighting == "majority"
    need_keys = bool(flagged or reliability.reliability)
    conversational, include_ties = options.conversational, options.include_ties
    check_filters = filters.min_agreement is not None or filters.min_margin is not None
    campaign_names: dict[int, str] = {}
    summary = ItemSummary()

    def completion(text: str) -> str:
        if conversational:
            return '[{"role":"assistant","content":' + encode_basestring(text) + "}]"
        return encode_basestring(text)

    sql, params = item_rows_sql(filters)
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            chunk = cursor.fetchmany(CHUNK_SIZE)
            if not chunk:
                return
            for (
                item_id,
                campaign_id,
                prompt_str,
                prompt_json,
                model_a,
                model_b,
                choices,
                sources,
                annotators,
                names,
                ranked,
                texts,
                models,
            ) in chunk:
                if ranked or texts is None or len(texts) != 2:
                    yield from _general_item(item_id, filters, options, campaigns, reliability, flagged, encode_row)
                    continue
                if need_keys:
                    keys = [judge_key(*judge) for judge in zip(sources, annotators, names, strict=True)]
                    if flagged:
                        kept = [n for n, key in enumerate(keys) if key not in flagged]
                        if not kept:
                            continue
                        if len(kept) != len(keys):
                            keys = [keys[n] for n in kept]
                            choices = [choices[n] for n in kept]
                            sources = [sources[n] for n in kept]
                else:
                    keys = None
                if len(sources) == 1:
                    source = sources[0]
                else:
                    distinct = set(sources)
                    source = next(iter(distinct)) if len(distinct) == 1 else "+".join(sorted(distinct))
                if keys is None:
                    votes = [("", choice) for choice in choices if choice]
                else:
                    votes = [(key, choice) for key, choice in zip(keys, choices, strict=True) if choice]
                if not votes:
                    continue  # no pairwise resolution and no ranking: the item has no pairwise row
                resolution = pairwise_resolve(votes, weights)
                if majority_only:
                    resolution = _majority_view(resolution)
                if check_filters:
                    summary.agreement, summary.margin = resolution.agreement, resolution.margin
                    if not summary_passes(summary, filters):
                        continue
                label = resolution.label
                if label == "a":
                    chosen, p_chosen, is_tie = 0, resolution.p_a, "false"
                elif label == "b":
                    chosen, p_chosen, is_tie = 1, 1.0 - resolution.p_a, "false"
                elif label == "tie" and include_ties:
                    chosen, p_chosen, is_tie = 0, 0.5, "true"
                else:
                    continue
                name = campaign_names.get(campaign_id)
                if name is None:
                    info = campaigns.get(campaign_id)
                    name = campaign_names[campaign_id] = encode_basestring(
                        info.name if info is not None else str(campaign_id)
                    )
                if prompt_str is not None:
                    prompt = (
                        encode_row(prompt_messages(prompt_str)) if conversational else encode_basestring(prompt_str)
                    )
                else:
                    content = json.loads(prompt_json)
                    prompt = encode_row(prompt_messages(content) if conversational else prompt_text(content))
                rejected = 1 - chosen
                model_chosen = (model_a, model_b)[chosen] or models[chosen]
                model_rejected = (model_a, model_b)[rejected] or models[rejected]
                yield (
                    f'{{"prompt":{prompt},"chosen":{completion(texts[chosen])},'
                    f'"rejected":{completion(texts[rejected])},"margin":{_float(abs(2.0 * p_chosen - 1.0))},'
                    f'"p_chosen":{_float(p_chosen)},"is_tie":{is_tie},"source":{encode_basestring(source)},'
                    f'"n_judgments":{int.__repr__(resolution.n_judgments)},'
                    f'"agreement":{_float(resolution.agreement)},"item_id":{int.__repr__(item_id)},'
                    f'"campaign":{name},"model_chosen":{encode_basestring(model_chosen)},'
                    f'"model_rejected":{encode_basestring(model_rejected)}}}'
                )


def _general_item(
    item_id: int,
    filters: ExportFilters,
    options: ExportOptions,
    campaigns: dict[int, CampaignInfo],
    reliability: Any,
    flagged: set[str],
    encode_row: Callable[[Row], str],
) -> Iterator[str]:
    """One item through the general path (bundles -> summarise -> pairwise_rows)."""
    for bundle in bundles(filters, campaigns, frozenset(), item_id=item_id):
        summary = summarise(bundle, options, reliability, flagged)
        if summary is None or not summary_passes(summary, filters):
            continue
        for row in pairwise_rows(bundle, summary, options):
            yield encode_row(row)
