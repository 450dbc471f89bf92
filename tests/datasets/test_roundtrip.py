"""Round trip (property-based): judgments stored -> exported -> parsed give back the same preferences."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from annotations import services
from annotations.export import export_files, filters_parse, options_parse
from annotations.models import Judgment, JudgmentSource

pytestmark = pytest.mark.django_db
CHOICES = ["a", "b", "tie", "both_bad"]
_names = count()
_humans: list[Any] = []

# Texts as the importer keeps them: no NUL or control characters, no surrounding whitespace, not empty.
text_strategy = (
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)

# One item = a prompt, two response texts, and 1-4 votes (human annotator index or an LLM judge).
item_strategy = st.fixed_dictionaries(
    {
        "prompt": text_strategy,
        "texts": st.lists(text_strategy, min_size=2, max_size=2, unique=True),
        "votes": st.lists(
            st.tuples(st.sampled_from(["human0", "human1", "human2", "llm"]), st.sampled_from(CHOICES)),
            min_size=1,
            max_size=4,
            unique_by=lambda vote: vote[0],
        ),
    }
)


@hypothesis_settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(items=st.lists(item_strategy, min_size=1, max_size=5))
def test_judgments_round_trip_through_raw_and_pairwise_exports(
    items: list[dict[str, Any]], make_campaign: Any, make_user: Any, tmp_path_factory: Any
) -> None:
    # given: a fresh campaign holding the generated items and votes
    tag = next(_names)
    if not _humans or not Judgment.annotator.field.related_model.objects.filter(pk=_humans[0].pk).exists():
        # users persist across examples (one test transaction); hashing passwords is slow
        _humans.clear()
        _humans.extend(make_user(f"roundtrip-{n}") for n in range(3))
    humans = _humans
    rows = [
        {"prompt": i["prompt"], "responses": [{"text": t, "model": f"m{n}"} for n, t in enumerate(i["texts"])]}
        for i in items
    ]
    campaign = make_campaign(rows=rows, name=f"roundtrip-{tag}")
    stored: dict[int, tuple[int, str, str]] = {}
    for item, spec in zip(campaign.items.order_by("id"), items, strict=True):
        for who, choice in spec["votes"]:
            human = who.startswith("human")
            judgment = Judgment.objects.create(
                item=item,
                source=JudgmentSource.HUMAN if human else JudgmentSource.LLM,
                annotator=humans[int(who[-1])] if human else None,
                judge_name="" if human else "judge",
                choice=choice,
            )
            stored[judgment.pk] = (item.pk, who, choice)
    # when: exported (raw and pairwise, majority labels) and parsed back
    folder = tmp_path_factory.mktemp("roundtrip")
    raw, pairwise = folder / "raw.jsonl", folder / "pairwise.jsonl"
    export_files(
        {"raw": [raw], "pairwise": [pairwise]},
        filters_parse({"campaigns": [campaign.pk]}),
        options_parse({"weighting": "majority", "include_ties": True}),
    )
    raw_rows = [json.loads(line) for line in raw.read_text().splitlines()]
    pair_rows = {row["item_id"]: row for row in map(json.loads, pairwise.read_text().splitlines())}
    # then: every judgment comes back with its item, judge and choice (annotators as consistent pseudonyms)
    assert sorted(row["judgment_id"] for row in raw_rows) == sorted(stored)
    names: dict[str, str] = {}
    for row in raw_rows:
        item_id, who, choice = stored[row["judgment_id"]]
        assert (row["item_id"], row["choice"], row["source"]) == (item_id, choice, "llm" if who == "llm" else "human")
        if who != "llm":
            assert names.setdefault(who, row["annotator"]) == row["annotator"]  # one pseudonym per person
    assert len(set(names.values())) == len(names)
    # and the pairwise rows carry the votes' majority preference with the right texts
    for item, spec in zip(campaign.items.order_by("id"), items, strict=True):
        choices = [choice for _, choice in spec["votes"]]
        top = max(choices.count(c) for c in CHOICES)
        leaders = {c for c in CHOICES if choices.count(c) == top}
        if leaders == {"a"} or leaders == {"b"}:
            winner = next(iter(leaders))
            row = pair_rows[item.pk]
            chosen, rejected = (0, 1) if winner == "a" else (1, 0)
            assert (row["chosen"], row["rejected"]) == (spec["texts"][chosen], spec["texts"][rejected])
            assert row["prompt"] == spec["prompt"] and not row["is_tie"]
            assert row["n_judgments"] == len(choices)
            assert row["agreement"] == pytest.approx(top / len(choices))
        elif "both_bad" in leaders and not leaders & {"a", "b", "tie"}:
            assert item.pk not in pair_rows
        elif "tie" in leaders or {"a", "b"} <= leaders:
            # a tie for first place between A and B, or "tie" among the leaders: a tie row (include_ties)
            row = pair_rows[item.pk]
            assert row["is_tie"] and row["n_judgments"] == len(choices)
        else:
            # one side level with "both bad" at the top: both bad wins, and no preference row is written
            assert leaders in ({"a", "both_bad"}, {"b", "both_bad"})
            assert item.pk not in pair_rows


def test_services_external_judgments_round_trip_through_the_arena_export(make_campaign: Any, tmp_path: Path) -> None:
    from annotations.models import Prompt, Response

    campaign = services.campaign_create(name="external", kind="pairwise", created_by=None)
    prompt = Prompt.objects.create(content="Which is better?")
    responses = [Response.objects.create(prompt=prompt, text=t, model_name=m) for t, m in (("x", "mx"), ("y", "my"))]
    for choice in CHOICES:
        services.judgment_record_external(
            campaign=campaign, prompt=prompt, responses=responses, source="llm", choice=choice, judge_name="j"
        )
    path = tmp_path / "arena.jsonl"
    export_files({"arena": [path]}, filters_parse({"campaigns": [campaign.pk]}), options_parse({}))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["winner"] for r in rows] == ["model_a", "model_b", "tie", "tie (bothbad)"]
    assert {(r["model_a"], r["model_b"]) for r in rows} == {("mx", "my")}
