"""Rankings and ratings binarised into pairwise rows (annotations/export/pairs.py): every mode, the margin, the
seeded draw, and the options' validation in the API, the commands and snapshots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotations import snapshots
from annotations.export import export_files, filters_parse, options_parse, stream_jsonl
from annotations.export.pairs import Grades, grades_of_ranking, grades_of_scores, pairs_choose, raters_prefer
from annotations.models import DatasetSnapshot
from prefarena.errors import InvalidInput
from tests.datasets.conftest import GradedData

MODES: list[dict[str, Any]] = [
    {"pair_mode": "all"},
    {"pair_mode": "best_vs_each"},
    {"pair_mode": "all", "pair_margin": 1},
    {"pair_mode": "best_vs_random", "pair_seed": 3},
]


def mode_id(options: dict[str, Any]) -> str:
    return "-".join(str(value) for value in options.values())


# --- the pure choice of pairs ------------------------------------------------------------------------------
def test_grades_group_equal_scores_best_first_and_leave_out_unscored() -> None:
    grades = grades_of_scores([3.0, None, 4.5, 3.0, 1.0])
    assert grades.groups == [[2], [0, 3], [4]]
    assert grades.levels == [4.5, 3.0, 1.0]
    assert grades_of_ranking([[1], [0, 2]]) == Grades(groups=[[1], [0, 2]], levels=[-1.0, -2.0])


def test_each_mode_picks_its_pairs() -> None:
    grades = grades_of_scores([4.0, 5.0, 4.0, 2.5])  # 1 > 0 = 2 > 3

    def pairs(mode: str, margin: float = 0.0) -> list[tuple[int, int]]:
        return pairs_choose(grades, mode=mode, margin=margin, seed=0, item_id=1)

    assert pairs("all") == [(1, 0), (1, 2), (1, 3), (0, 3), (2, 3)]  # tied 0 and 2 make no pair
    assert pairs("best_vs_each") == [(1, 0), (1, 2), (1, 3)]
    assert pairs("all", 1.5) == [(1, 3), (0, 3), (2, 3)]  # 5 - 4 = 1 < 1.5
    assert pairs("best_vs_each", 3) == []
    assert pairs_choose(grades_of_scores([3.0, 3.0]), mode="all", margin=0, seed=0, item_id=1) == []
    # a margin equal to the difference of two means passes, rounding notwithstanding
    assert 4.1 - 3.1 < 1
    assert pairs_choose(grades_of_scores([4.1, 3.1]), mode="all", margin=1, seed=0, item_id=1) == [(0, 1)]
    # rankings: the margin counts ranks
    ranked = grades_of_ranking([[2], [0], [1], [3]])
    assert pairs_choose(ranked, mode="all", margin=2, seed=0, item_id=1) == [(2, 1), (2, 3), (0, 3)]


def test_best_vs_random_is_seeded_by_seed_and_item_alone() -> None:
    grades = grades_of_scores([5.0, 5.0, 3.0, 2.0, 1.0, 0.5])

    def draw(seed: int, item_id: int) -> tuple[int, int]:
        (pair,) = pairs_choose(grades, mode="best_vs_random", margin=0, seed=seed, item_id=item_id)
        return pair

    first = [draw(0, item) for item in range(40)]
    assert [draw(0, item) for item in reversed(range(40))] == first[::-1]  # order of reading changes nothing
    assert all(chosen in (0, 1) and rejected in (2, 3, 4, 5) for chosen, rejected in first)
    assert len(set(first)) > 4  # drawn, not fixed: 8 possible pairs
    assert [draw(1, item) for item in range(40)] != first
    # with a margin, only responses that far below the best are drawn
    assert {
        pairs_choose(grades, mode="best_vs_random", margin=3.5, seed=0, item_id=item)[0][1] for item in range(40)
    } == {4, 5}


def test_raters_preference_counts_raters_who_scored_both() -> None:
    ratings = [{"h": [5, 3], "x": [4, 4]}, {"h": [3, 3], "x": [3, 3]}, {"h": [1, 5]}, {"h": [4]}]
    p_chosen, agreement = raters_prefer(ratings, ("h", "x"), 0, 1)
    assert (p_chosen, agreement) == (pytest.approx((1 + 0.5 + 0) / 3), pytest.approx(1 / 3))


# --- exports ----------------------------------------------------------------------------------------------
def export_rows(tmp_path: Path, fmt: str, campaign: int, **options: Any) -> list[dict[str, Any]]:
    path = tmp_path / f"{fmt}-{campaign}.jsonl"
    export_files({fmt: [path]}, filters_parse({"campaigns": [campaign]}), options_parse(options))
    return [json.loads(line) for line in path.read_text().splitlines()]


def response_values(tmp_path: Path, data: GradedData, kind: str) -> dict[str, float]:
    """Each response text's grade value as the listwise export shows it: overall score, or minus its rank."""
    if kind == "rating":
        rows = export_rows(tmp_path, "ratings", data.rating.pk)
        return {c["text"]: c["overall"] for row in rows for c in row["completions"]}
    rows = export_rows(tmp_path, "ranking", data.ranking.pk)
    return {r["text"]: -float(r["rank"]) for row in rows for r in row["responses"]}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["ranking", "rating"])
@pytest.mark.parametrize("options", MODES, ids=mode_id)
def test_pairs_follow_the_resolved_order_in_every_mode(
    graded_data: GradedData, tmp_path: Path, kind: str, options: dict[str, Any]
) -> None:
    # given the listwise export's value of every response, by prompt
    campaign = graded_data.ranking if kind == "ranking" else graded_data.rating
    value = response_values(tmp_path, graded_data, kind)
    values_by_prompt: dict[str, list[float]] = {}
    for text, text_value in value.items():
        values_by_prompt.setdefault(text.split(" to: ")[1], []).append(text_value)
    # when the campaign is exported as pairs
    rows = export_rows(tmp_path, "pairwise", campaign.pk, **options)
    # then each row prefers the better response, with the mode's number of rows per item
    margin = float(options.get("pair_margin", 0))
    for row in rows:
        gap = value[row["chosen"]] - value[row["rejected"]]
        assert gap > 0 and gap >= margin - 1e-9, row
        assert 0.0 <= row["p_chosen"] <= 1.0 and row["margin"] == pytest.approx(abs(2 * row["p_chosen"] - 1))
        assert row["n_judgments"] == 2 and not row["is_tie"]
    expected = {}
    for prompt, values in values_by_prompt.items():
        best = max(values)
        if options["pair_mode"] == "all":
            expected[prompt] = sum(1 for a in values for b in values if a - b > 0 and a - b >= margin - 1e-9)
        elif options["pair_mode"] == "best_vs_each":
            expected[prompt] = values.count(best) * sum(1 for b in values if b < best)
        else:
            expected[prompt] = 1
    assert Counter(row["prompt"] for row in rows) == Counter({p: n for p, n in expected.items() if n})
    assert len(rows) >= 4


@pytest.mark.django_db
def test_rated_pairs_carry_the_raters_agreement(graded_data: GradedData, tmp_path: Path) -> None:
    rows = export_rows(tmp_path, "pairwise", graded_data.rating.pk, pair_mode="best_vs_each")
    first = graded_data.rating.items.order_by("id").first()
    assert first is not None
    # item 0: overall 4.75 / 3.75 / 2.5 / 1.25; both raters score response 0 above 1, 2 and 3
    first_rows = [r for r in rows if r["item_id"] == first.pk]
    assert [r["model_rejected"] for r in first_rows] == ["model-1", "model-2", "model-3"]
    assert {(r["p_chosen"], r["agreement"]) for r in first_rows} == {(1.0, 1.0)}


@pytest.mark.django_db
def test_best_vs_random_is_the_same_in_every_export_and_moves_with_the_seed(
    graded_data: GradedData, tmp_path: Path
) -> None:
    campaigns = [graded_data.ranking.pk, graded_data.rating.pk]
    filters = filters_parse({"campaigns": campaigns})

    def stream(seed: int) -> list[tuple[int, str, str]]:
        options = options_parse({"pair_mode": "best_vs_random", "pair_seed": seed})
        lines = b"".join(stream_jsonl("pairwise", filters, options)).decode().splitlines()
        return [(row["item_id"], row["chosen"], row["rejected"]) for row in map(json.loads, lines)]

    seeded = stream(3)
    assert len(seeded) == 8 and seeded == stream(3)
    # one campaign alone draws the same pairs for its items as both together
    alone = export_rows(tmp_path, "pairwise", graded_data.rating.pk, pair_mode="best_vs_random", pair_seed=3)
    rated_ids = set(graded_data.rating.items.values_list("pk", flat=True))
    assert [(r["item_id"], r["chosen"], r["rejected"]) for r in alone] == [s for s in seeded if s[0] in rated_ids]
    assert stream(4) != seeded  # (fixed seeds: deterministic, not a chance)


@pytest.mark.django_db
def test_kto_labels_the_best_rated_desirable_and_the_worst_undesirable(graded_data: GradedData, tmp_path: Path) -> None:
    rows = export_rows(tmp_path, "kto", graded_data.rating.pk)
    first = graded_data.rating.items.order_by("id").first()
    assert first is not None
    labels = sorted((r["model"], r["label"]) for r in rows if r["item_id"] == first.pk)
    assert labels == [("model-0", True), ("model-3", False)]
    assert {r["item_id"] for r in rows} == set(graded_data.rating.items.values_list("pk", flat=True))


# --- validation: the API, the commands, snapshots -----------------------------------------------------------
BAD_OPTIONS = [
    ("pair_mode", "best"),
    ("pair_mode", "margin"),
    ("pair_margin", "-1"),
    ("pair_margin", "wide"),
    ("pair_margin", "nan"),
    ("pair_margin", "inf"),
    ("pair_seed", "-1"),
    ("pair_seed", "1.5"),
    ("pair_seed", "seven"),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_bad_binarisation_options_name_the_option(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        options_parse({name: value})
    assert refused.value.fields is not None and name in refused.value.fields


@pytest.mark.django_db
@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_bad_binarisation_options_are_400_on_the_live_export(api: Any, staff: Any, ext: str, name: str, value: str):
    response = api(staff).get(f"/api/v1/export/pairwise.{ext}?{name}={value}")
    assert response.status_code == 400
    assert name in response.json() and name in response.json()["detail"]


@pytest.mark.django_db
def test_binarisation_options_from_the_query_string(graded_data: GradedData, api: Any, tmp_path: Path) -> None:
    query = f"campaign={graded_data.rating.pk}&pair_mode=best_vs_random&pair_seed=3&pair_margin=0.5"
    response = api(graded_data.manager).get(f"/api/v1/export/pairwise.jsonl?{query}")
    assert response.status_code == 200
    streamed = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    expected = export_rows(
        tmp_path, "pairwise", graded_data.rating.pk, pair_mode="best_vs_random", pair_seed=3, pair_margin=0.5
    )
    assert streamed == expected and len(streamed) == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pair-mode", "best"], "pair_mode"),
        (["--pair-margin", "-2"], "pair_margin"),
        (["--pair-seed", "x"], "pair_seed"),
    ],
)
def test_bad_binarisation_flags_are_command_errors(tmp_path: Path, args: list[str], message: str) -> None:
    for command, required in (
        ("export_preferences", ["--format", "pairwise", "--output", str(tmp_path / "out.jsonl")]),
        ("snapshot_create", ["--name", "n", "--format", "pairwise"]),
    ):
        with pytest.raises(CommandError, match=message):
            call_command(command, *required, *args)
    assert not (tmp_path / "out.jsonl").exists()
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.django_db
def test_commands_and_snapshots_binarise_with_the_same_options(
    graded_data: GradedData, staff: Any, tmp_path: Path
) -> None:
    flags = ["--pair-mode", "best_vs_random", "--pair-seed", "5", "--pair-margin", "1"]
    campaign = ["--campaign", str(graded_data.rating.pk)]
    output = tmp_path / "pairs.jsonl"
    call_command("export_preferences", "--format", "pairwise", "--output", str(output), "--quiet", *campaign, *flags)
    from_command = [json.loads(line) for line in output.read_text().splitlines()]
    expected = export_rows(
        tmp_path, "pairwise", graded_data.rating.pk, pair_mode="best_vs_random", pair_seed=5, pair_margin=1
    )
    assert from_command == expected and from_command
    call_command("snapshot_create", "--name", "rated pairs", "--format", "pairwise", "--now", *campaign, *flags)
    snapshot = DatasetSnapshot.objects.get(name="rated pairs")
    assert (snapshot.options["pair_mode"], snapshot.options["pair_seed"], snapshot.options["pair_margin"]) == (
        "best_vs_random",
        5,
        1.0,
    )
    written = snapshots.snapshot_file_path(snapshot, "pairwise", "jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == expected


@pytest.mark.django_db
def test_snapshot_api_refuses_bad_binarisation_options(graded_data: GradedData, api: Any) -> None:
    body = {"name": "x", "formats": ["pairwise"], "filters": {"campaigns": [graded_data.rating.pk]}}
    for options, field in (({"pair_mode": "best"}, "pair_mode"), ({"pair_margin": -1}, "pair_margin")):
        response = api(graded_data.manager).post("/api/v1/datasets/", {**body, "options": options}, format="json")
        assert response.status_code == 400 and field in response.json(), response.json()
    good = {**body, "options": {"pair_mode": "best_vs_random", "pair_seed": 2, "pair_margin": 0.5}}
    response = api(graded_data.manager).post("/api/v1/datasets/", good, format="json")
    assert response.status_code == 201
    assert response.json()["options"]["pair_seed"] == 2
