"""arena_import_battles and arena_ratings reproduce the GenAI-Arena reference numbers through the commands."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from arena.models import PairStats, Rating
from models_hub.models import Model
from tests.arena.test_ratings import ONLINE_ELO, PREFIX, UNREGULARISED

# Public data shipped in the repo (Apache-2.0, arena/fixtures/genai_arena/README.md): a user's clone has it too.
FIXTURES = Path(__file__).resolve().parents[2] / "arena" / "fixtures" / "genai_arena"
BATTLES = FIXTURES / "genai_clean_battle_20240220.json"
PUBLISHED = FIXTURES / "genai_leaderboard_20240220.csv"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def battles_file() -> Path:
    return BATTLES


def test_ratings_of_a_file_reproduce_the_unregularised_reference_without_a_database(battles_file):
    # no django_db mark: any database access would fail the test
    rows = json.loads(run("arena_ratings", "--input", str(battles_file), "--anony-only", "--format", "json"))

    by_model = {row["model"]: row for row in rows}
    assert len(rows) == 13
    for model, value in UNREGULARISED.items():
        row = by_model[PREFIX + model]
        assert row["rating"] == pytest.approx(value, abs=0.01)
        assert row["elo"] == pytest.approx(ONLINE_ELO[model], abs=1e-4)
        assert row["ci_low"] < row["rating"] < row["ci_high"]
        assert set(row) == {
            "model",
            "rating",
            "ci_low",
            "ci_high",
            "rank_ub",
            "rank_lb",
            "provisional",
            "battles",
            "component",
            "elo",
        }
    # two components that never met, ranked separately
    assert {row["component"] for row in rows} == {0, 1}
    assert sorted(row["rank_ub"] for row in rows if row["component"] == 0)[0] == 1
    assert sorted(row["rank_ub"] for row in rows if row["component"] == 1)[0] == 1
    assert sum(row["battles"] for row in rows) == 2 * 1515


def test_l2_option_comes_within_the_lbfgs_gap_of_the_published_leaderboard(battles_file):
    import csv

    published = {row["key"]: float(row["Arena Elo rating (anony)"]) for row in csv.DictReader(PUBLISHED.open())}
    args = ("arena_ratings", "--input", str(battles_file), "--anony-only", "--l2", "1.0", "--bootstrap", "0")
    rows = json.loads(run(*args, "--format", "json"))
    # The published numbers stopped ~2 Elo short of the optimum (sklearn's lbfgs tolerance); we solve exactly.
    for row in rows:
        assert row["rating"] == pytest.approx(published[row["model"]], abs=3.0)
        assert row["ci_low"] is None and row["rank_ub"] is not None


def test_table_format_lists_every_model(battles_file):
    table = run("arena_ratings", "--input", str(battles_file), "--anony-only", "--bootstrap", "10")
    lines = table.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "model", "rating"]
    assert len(lines) == 14
    assert any(PREFIX + "Prompt2prompt_edition" in line and "1269.9" in line for line in lines)


@pytest.mark.django_db
def test_import_then_rate_the_database_reproduces_the_reference(battles_file):
    # when
    output = run("arena_import_battles", str(battles_file), "--anony-only")

    # then: counts, placeholder models, online Elo in timestamp order
    assert "Read 2061 battles: imported 1515" in output
    assert "546 non-anonymous" in output
    assert Model.objects.count() == 13
    placeholder = Model.objects.get(name=PREFIX + "SDEdit_edition")
    assert placeholder.path == "imported:" + PREFIX + "SDEdit_edition" and not placeholder.in_arena
    assert placeholder.role == "policy"
    total = sum(s.wins_lo + s.wins_hi + s.ties + s.both_bad for s in PairStats.objects.filter(category=""))
    assert total == 1515
    for model, value in ONLINE_ELO.items():
        assert Rating.objects.get(category="", model__name=PREFIX + model).elo == pytest.approx(value, abs=1e-4)

    # ... and the leaderboard was recomputed from the imported counts: the bias-corrected fit of the same battles
    # (ARENA_BIAS_CORRECTION, on by default), as the file's own `--bias-correct` rating gives it
    corrected = json.loads(
        run("arena_ratings", "--input", str(battles_file), "--anony-only", "--format", "json", "--bias-correct")
    )
    for row in corrected:
        stored = Rating.objects.get(category="", model__name=row["model"])
        assert stored.rating == pytest.approx(row["rating"], abs=0.01)
        assert (stored.ci_low, stored.ci_high) == (pytest.approx(row["ci_low"]), pytest.approx(row["ci_high"]))

    # when: the database is rated through the command
    rows = json.loads(run("arena_ratings", "--format", "json", "--bootstrap", "20"))

    # then: the same numbers, labelled name@v1
    by_model = {row["model"]: row for row in rows}
    for model, value in UNREGULARISED.items():
        assert by_model[f"{PREFIX}{model}@v1"]["rating"] == pytest.approx(value, abs=0.01)
        assert by_model[f"{PREFIX}{model}@v1"]["elo"] == pytest.approx(ONLINE_ELO[model], abs=1e-4)


@pytest.mark.django_db
def test_import_skips_and_counts_the_self_battle(battles_file):
    output = run("arena_import_battles", str(battles_file), "--no-recompute")
    assert "imported 2060, skipped 1 self-battle(s)" in output
    assert Rating.objects.filter(rating__isnull=False).count() == 0  # --no-recompute
    total = sum(s.wins_lo + s.wins_hi + s.ties + s.both_bad for s in PairStats.objects.filter(category=""))
    assert total == 2060


@pytest.mark.django_db
def test_import_reuses_registered_models_and_counts_a_category(tmp_path):
    Model.objects.create(name="alpha", version=2, role="policy", backend="transformers", path="/x")
    battles = [
        {"model_a": "alpha", "model_b": "beta", "winner": "model_a", "tstamp": 2},
        {"model_a": "beta", "model_b": "alpha", "winner": "tie (bothbad)", "tstamp": 1},
    ]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(battles))
    output = run("arena_import_battles", str(path), "--category", "coding", "--no-recompute")
    assert "Created 1 model(s): beta" in output
    alpha = Model.objects.get(name="alpha")
    stats = PairStats.objects.get(category="coding")
    assert stats.model_lo == alpha and (stats.wins_lo, stats.both_bad) == (1, 1)
    assert PairStats.objects.get(category="").wins_lo == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"model_a": "x"}', "expected a JSON list"),
        ('[{"model_a": "x", "winner": "model_a"}]', "battle 0: missing model_b"),
        ('[{"model_a": "x", "model_b": "y", "winner": "model_a"}, 3]', "battle 1: expected an object"),
        ('[{"model_a": "x", "model_b": "y", "winner": "draw"}]', "winner 'draw' is not one of"),
        ('[{"model_a": "x", "model_b": "y", "winner": ["model_a"]}]', r"winner \['model_a'\] is not one of"),
        ('[{"model_a": "", "model_b": "y", "winner": "tie"}]', "model_a must be a model name"),
        ('[{"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": "noon"}]', "tstamp must be a number"),
    ],
)
def test_bad_files_are_refused_with_a_message_and_nothing_is_written(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    good_then_bad = path
    with pytest.raises(CommandError, match=message):
        call_command("arena_import_battles", str(good_then_bad), stdout=StringIO())
    with pytest.raises(CommandError, match=message):
        call_command("arena_ratings", "--input", str(good_then_bad), stdout=StringIO())
    assert PairStats.objects.count() == 0 and Model.objects.count() == 0


def test_missing_file_and_bad_options_are_command_errors(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("arena_import_battles", str(tmp_path / "absent.json"), stdout=StringIO())
    with pytest.raises(CommandError, match="--l2"):
        call_command("arena_ratings", "--input", str(tmp_path / "x.json"), "--l2", "-1", stdout=StringIO())
    with pytest.raises(CommandError, match="--save"):
        call_command("arena_ratings", "--input", str(tmp_path / "x.json"), "--save", stdout=StringIO())
    with pytest.raises(CommandError, match="--bias-correct applies to the unregularised fit"):
        call_command("arena_ratings", "--input", str(BATTLES), "--l2", "1", "--bias-correct", stdout=StringIO())
    with pytest.raises(CommandError, match="ARENA_BIAS_CORRECTION"):
        call_command("arena_ratings", "--save", "--bias-correct", stdout=StringIO())


@pytest.mark.django_db
def test_if_empty_imports_into_an_empty_arena_only(battles_file):
    # the demo's seed: the first run imports, a second run (the demo started again) counts nothing twice
    first = run("arena_import_battles", str(battles_file), "--anony-only", "--if-empty")
    counted = [(p.wins_lo, p.wins_hi, p.ties, p.both_bad) for p in PairStats.objects.order_by("pk")]
    second = run("arena_import_battles", str(battles_file), "--anony-only", "--if-empty")
    assert "imported 1515" in first and "nothing imported" in second
    assert [(p.wins_lo, p.wins_hi, p.ties, p.both_bad) for p in PairStats.objects.order_by("pk")] == counted
