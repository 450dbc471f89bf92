"""Routing between LLM judges and humans (Django side). The decisions are `annotations/routing_core.py`'s.

Flow for a campaign whose routing_mode is not human_only:
  import → item `awaiting_judge`, no slots (the human queue cannot hand it out)
  judge job(s) store `Judgment(source=llm)` rows (workers/judging.py), then call `campaign_route`
  campaign_route (one transaction, campaign row locked so two routings never double-spend the budget):
    - fits the router on the campaign's items that have both human and LLM labels
    - judge_only: every judged item is auto-labelled (state done); unparseable → humans
    - hybrid: rules (safety tags, judge errors, failed judge jobs) and a random audit slice go to
      humans, then the items with the highest predicted judge error until the human budget is used;
      the rest are auto-labelled
    - human-routed items get their `overlap` slots, prioritised by predicted error (active) or at
      random (comparison arm); open slots of earlier human-routed items are re-prioritised with the
      newly fitted router
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotations import events
from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignKind,
    HumanSelection,
    Item,
    ItemRoute,
    ItemState,
    Judgment,
    JudgmentSource,
    RoutingMode,
    SlotState,
)
from annotations.routing_core import (
    PRIORITY_SCALE,
    ItemSignals,
    Router,
    human_slots_for_batch,
    route_decide,
    router_fit,
)
from prefarena.errors import Conflict, InvalidInput

ROUTING_FIELDS = {
    "routing_mode",
    "human_budget",
    "audit_fraction",
    "routing_rules",
    "human_selection",
    "judge_config",
    "judge_templates",
}
JUDGE_CONFIG_KEYS = {"scale", "use_logprobs", "samples", "temperature", "max_new_tokens", "seed", "top_logprobs"}
TEMPLATE_KEYS = {"pairwise_system_3", "pairwise_system_5", "pairwise_user", "rating_system", "rating_user"}


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, fields={field: [message]})


@transaction.atomic
def campaign_routing_configure(
    *, campaign: Campaign, judge_models: Iterable[Any] | None = None, **changes: Any
) -> Campaign:
    """Set a campaign's routing policy, judges and judge prompts. The mode is fixed once items exist."""
    unknown = set(changes) - ROUTING_FIELDS
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))}")
    given, campaign = campaign, Campaign.objects.select_for_update().get(pk=campaign.pk)
    if "routing_mode" in changes:
        if changes["routing_mode"] not in RoutingMode.values:
            raise _bad("routing_mode", f"must be one of {', '.join(RoutingMode.values)}")
        if changes["routing_mode"] != campaign.routing_mode and campaign.items.exists():
            raise Conflict(
                "The routing mode cannot change once the campaign has items",
                fields={"routing_mode": ["campaign has items"]},
            )
    for key in ("human_budget", "audit_fraction"):
        if key in changes and not (isinstance(changes[key], int | float) and 0 <= changes[key] <= 1):
            raise _bad(key, f"{key} must be between 0 and 1")
    if "human_selection" in changes and changes["human_selection"] not in HumanSelection.values:
        raise _bad("human_selection", f"must be one of {', '.join(HumanSelection.values)}")
    for key in ("routing_rules", "judge_config", "judge_templates"):
        if key in changes and changes[key] is None:  # a form field reading "null": the columns hold objects
            raise _bad(key, f"{key} must be an object, not null")
    rules = changes.get("routing_rules")
    if rules is not None:
        tags = rules.get("human_tags", []) if isinstance(rules, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or set(rules) - {"human_tags"}:
            raise _bad("routing_rules", 'routing_rules must look like {"human_tags": ["safety", ...]}')
    config = changes.get("judge_config")
    if config is not None:
        if not isinstance(config, dict) or set(config) - JUDGE_CONFIG_KEYS:
            raise _bad("judge_config", f"judge_config keys: {', '.join(sorted(JUDGE_CONFIG_KEYS))}")
        if config.get("scale", 3) not in (3, 5):
            raise _bad("judge_config", "scale must be 3 or 5")
    templates = changes.get("judge_templates")
    if templates is not None:
        if not isinstance(templates, dict) or set(templates) - TEMPLATE_KEYS:
            raise _bad("judge_templates", f"judge_templates keys: {', '.join(sorted(TEMPLATE_KEYS))}")
        if not all(isinstance(v, str) and v.strip() for v in templates.values()):
            raise _bad("judge_templates", "templates must be non-empty text")
    for key, value in changes.items():
        setattr(campaign, key, value)
        setattr(given, key, value)  # the caller's object too: a stale routing_mode would mis-import items
    if changes:
        campaign.save(update_fields=list(changes))
    if judge_models is not None:
        models = list(judge_models)
        not_judges = [m.label for m in models if m.role != "judge"]
        if not_judges:
            raise _bad("judge_models", f"not judge models: {', '.join(not_judges)}")
        campaign.judge_models.set(models)
    return campaign


# --- signals and labels -----------------------------------------------------------------------------------
def _majority(choices: list[str]) -> str:
    if not choices:
        return ""
    counts = Counter(choices).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def _item_rows(item_ids: list[int]) -> tuple[dict[int, list[Judgment]], dict[int, list[Judgment]], dict[int, Any]]:
    llm: dict[int, list[Judgment]] = defaultdict(list)
    human: dict[int, list[Judgment]] = defaultdict(list)
    for judgment in Judgment.objects.filter(
        item_id__in=item_ids, source__in=[JudgmentSource.LLM, JudgmentSource.HUMAN]
    ):
        (llm if judgment.source == JudgmentSource.LLM else human)[judgment.item_id].append(judgment)
    items = {
        item.pk: item
        for item in Item.objects.filter(pk__in=item_ids)
        .select_related("campaign")
        .prefetch_related("item_responses__response")
    }
    return llm, human, items


def item_signals(item: Item, llm_judgments: list[Judgment]) -> ItemSignals:
    """What the router sees of one item: texts, category, and the judges' verdicts."""
    responses = [link.response for link in sorted(item.item_responses.all(), key=lambda link: link.position)]
    text_a = responses[0].text if responses else ""
    text_b = responses[1].text if len(responses) > 1 else ""
    reward_margin = None
    if len(responses) >= 2:
        common = set(responses[0].reward_scores or {}) & set(responses[1].reward_scores or {})
        if common:
            key = sorted(common)[0]
            reward_margin = abs(float(responses[0].reward_scores[key]) - float(responses[1].reward_scores[key]))
    p_values = [j.meta.get("p_a") for j in llm_judgments if j.meta.get("p_a") is not None]
    confidences = [j.confidence for j in llm_judgments if j.confidence is not None]
    if item.campaign.kind != CampaignKind.PAIRWISE and confidences and not p_values:
        p_values = [0.5 + c / 2 for c in confidences]  # rankings / ratings: only the confidence speaks
    choices = {j.choice for j in llm_judgments if j.choice}
    return ItemSignals(
        text_a=text_a,
        text_b=text_b,
        category=str((item.meta or {}).get("category", "")),
        p_a=statistics.fmean(p_values) if p_values else None,
        consistent=all(j.meta.get("consistent", True) for j in llm_judgments) and len(choices) <= 1,
        confidence=statistics.fmean(confidences) if confidences else 0.0,
        judge_spread=statistics.pstdev(p_values) if len(p_values) > 1 else 0.0,
        reward_margin=reward_margin,
    )


def judge_label(llm_judgments: list[Judgment]) -> str:
    """The judges' label of a pairwise item: their majority choice ("tie" when split)."""
    return _majority([j.choice for j in llm_judgments if j.choice])


def human_label(human_judgments: list[Judgment]) -> str:
    return _majority([j.choice for j in human_judgments if j.choice])


def router_for_campaign(campaign: Campaign) -> Router:
    """Fit the router on the campaign's pairwise items labelled by both humans and judges."""
    if campaign.kind != CampaignKind.PAIRWISE:
        return Router(kind="heuristic")
    ids = list(
        Item.objects.filter(campaign=campaign, judgments__source=JudgmentSource.HUMAN)
        .filter(judgments__source=JudgmentSource.LLM)
        .values_list("pk", flat=True)
        .distinct()
    )
    llm, human, items = _item_rows(ids)
    signals, wrong = [], []
    for item_id in ids:
        h, j = human_label(human[item_id]), judge_label(llm[item_id])
        if not h or not j:
            continue
        signals.append(item_signals(items[item_id], llm[item_id]))
        wrong.append(j != h)
    return router_fit(signals, wrong, seed=campaign.pk)


IMAGES_UNSEEN_REASON = "judge_cannot_see_images"  # no judge that saw the prompt's images judged the item


def _forced_reason(
    campaign: Campaign,
    item: Item,
    llm_judgments: list[Judgment],
    failed: bool,
    rng: random.Random,
    images_unseen: bool = False,
) -> str:
    if failed:
        return "judge_failed"
    if images_unseen and not llm_judgments:
        return IMAGES_UNSEEN_REASON
    if not llm_judgments:
        return "judge_error"  # every judge's answer was unparseable
    if campaign.routing_mode == RoutingMode.JUDGE_ONLY:
        return ""
    tags = (item.meta or {}).get("tags") or []
    human_tags = set((campaign.routing_rules or {}).get("human_tags", []))
    if isinstance(tags, list) and human_tags & {str(t) for t in tags}:
        return "rule"
    if rng.random() < campaign.audit_fraction:
        return "audit"
    return ""


def campaign_route(
    *,
    campaign_id: int,
    exclude_item_ids: Iterable[int] = (),
    judge_failed_item_ids: Iterable[int] = (),
    images_unseen_item_ids: Iterable[int] = (),
) -> dict[str, Any]:
    """Route the campaign's judged items still awaiting the judge; returns counts by route and reason.

    `exclude_item_ids`: items other judge jobs are still working on (they wait for every judge).
    `judge_failed_item_ids`: items a failed judge job never judged (they go to humans).
    `images_unseen_item_ids`: items a judge that reads text only left alone because their prompt holds images;
    without a verdict of another judge they go to humans (`IMAGES_UNSEEN_REASON`).
    """
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.routing_mode == RoutingMode.HUMAN_ONLY:
            return {"routed": 0}
        excluded, failed, unseen = set(exclude_item_ids), set(judge_failed_item_ids), set(images_unseen_item_ids)
        waiting = Item.objects.filter(campaign=campaign, state=ItemState.AWAITING_JUDGE).exclude(pk__in=excluded)
        # Ready: judged (a judgment or a counted error) or given up on.
        candidate_ids = list(waiting.values_list("pk", flat=True).order_by("pk"))
        llm, _, items = _item_rows(candidate_ids)
        ready = [i for i in candidate_ids if llm.get(i) or items[i].judge_errors or i in failed or i in unseen]
        router = router_for_campaign(campaign)
        counts: Counter[str] = Counter()
        if ready:
            rng = random.Random(f"{campaign.pk}:{ready[0]}:{len(ready)}")
            signals = [item_signals(items[i], llm.get(i, [])) for i in ready]
            predicted = router.predict_error(signals)
            forced = [
                _forced_reason(campaign, items[i], llm.get(i, []), i in failed, rng, images_unseen=i in unseen)
                for i in ready
            ]
            routed = Item.objects.filter(campaign=campaign).exclude(route=ItemRoute.NONE).exclude(route_reason="gold")
            if campaign.routing_mode == RoutingMode.JUDGE_ONLY:
                slots = 0
            else:
                slots = human_slots_for_batch(
                    budget=campaign.human_budget,
                    routed_before=routed.count(),
                    humans_before=routed.filter(route=ItemRoute.HUMAN).count(),
                    batch=len(ready),
                )
            decision = route_decide(
                np.asarray(predicted),
                forced=forced,
                human_slots=slots,
                selection=campaign.human_selection,
                rng=np.random.default_rng(rng.randrange(2**32)),
            )
            _apply(campaign, [items[i] for i in ready], decision)
            counts.update(f"{r}:{why}" for r, why in zip(decision.route, decision.reason, strict=True))
        reprioritised = _reprioritise(campaign, router) if campaign.human_selection == HumanSelection.ACTIVE else 0
        campaign.router_state = {**router.describe(), "fitted_at": timezone.now().isoformat()}
        campaign.save(update_fields=["router_state"])
        transaction.on_commit(lambda: events.campaign_progress_broadcast(campaign_id))
        return {"routed": len(ready), "by_reason": dict(counts), "router": router.kind, "reprioritised": reprioritised}


def _apply(campaign: Campaign, items: list[Item], decision: Any) -> None:
    slots: list[AssignmentSlot] = []
    for item, route, reason, error, priority in zip(
        items, decision.route, decision.reason, decision.predicted_error, decision.priority, strict=True
    ):
        item.route, item.route_reason, item.predicted_error = route, reason, error
        item.uncertainty = error
        if route == "human":
            item.state = ItemState.NEEDS_HUMANS
            slots.extend(
                AssignmentSlot(item=item, campaign=campaign, slot_no=n, priority=priority, is_gold=item.is_gold)
                for n in range(campaign.overlap)
            )
        else:
            item.state = ItemState.DONE  # the LLM judgment(s) are its label
    # A handful of (route, reason, state) groups, then one VALUES join for the per-item errors: Django's
    # bulk_update builds a CASE per row and took ~5 ms an item here.
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for item in items:
        groups[(item.route, item.route_reason, item.state)].append(item.pk)
    for (route, reason, state), ids in groups.items():
        Item.objects.filter(pk__in=ids).update(route=route, route_reason=reason, state=state)
    errors = {item.pk: item.predicted_error for item in items}
    _set_per_row(Item, ["predicted_error", "uncertainty"], errors, "DOUBLE PRECISION")
    # ignore_conflicts: a slot can only exist already if this item was routed before, which the
    # campaign lock and the awaiting_judge filter rule out; the unique key keeps it harmless anyway.
    AssignmentSlot.objects.bulk_create(slots, ignore_conflicts=True)


def _reprioritise(campaign: Campaign, router: Router) -> int:
    """Re-score items waiting for humans with the current router; their open slots take the new priority."""
    if router.kind != "learned":
        return 0
    ids = list(
        Item.objects.filter(campaign=campaign, state=ItemState.NEEDS_HUMANS, route=ItemRoute.HUMAN)
        .exclude(route_reason="gold")
        .filter(slots__state=SlotState.OPEN)
        .values_list("pk", flat=True)
        .distinct()
    )
    if not ids:
        return 0
    llm, _, items = _item_rows(ids)
    predicted = router.predict_error([item_signals(items[i], llm.get(i, [])) for i in ids])
    error_of = {item_id: float(error) for item_id, error in zip(ids, predicted, strict=True)}
    _set_per_row(Item, ["predicted_error", "uncertainty"], error_of, "DOUBLE PRECISION")
    # Only open slots move: a leased slot keeps its place (its priority no longer matters until it reopens).
    slots = dict(AssignmentSlot.objects.filter(item_id__in=ids, state=SlotState.OPEN).values_list("pk", "item_id"))
    priorities = {pk: int(round(error_of[item_id] * PRIORITY_SCALE)) for pk, item_id in slots.items()}
    _set_per_row(AssignmentSlot, ["priority"], priorities, "INTEGER")
    return len(slots)


def _set_per_row(model: Any, columns: list[str], values: Mapping[int, float | int | None], sql_type: str) -> None:
    """UPDATE … FROM (VALUES …): one statement per 1,000 rows, each row its own value (SQL type `sql_type`)."""
    table = connection.ops.quote_name(model._meta.db_table)
    assignments = ", ".join(f"{connection.ops.quote_name(c)} = v.value" for c in columns)
    rows = list(values.items())
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            placeholders = ", ".join([f"(CAST(%s AS BIGINT), CAST(%s AS {sql_type}))"] * len(chunk))
            sql = (
                f"UPDATE {table} SET {assignments} FROM (VALUES {placeholders}) AS v(row_id, value) "  # noqa: S608
                f"WHERE {table}.id = v.row_id"
            )
            cursor.execute(sql, [x for pair in chunk for x in pair])
