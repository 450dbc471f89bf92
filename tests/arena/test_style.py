"""Style control: a length bias is separated from model strength."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from django.core.management import call_command

from arena.ratings import Battle, PairCounts, bt_ratings
from arena.style import bt_style_control, style_counts, style_from_conv_metadata, style_from_conversation


def _biased_battles(n_battles: int = 6000, seed: int = 0) -> list[Battle]:
    """Four equally strong models; 'verbose' writes ~3x longer answers, and voters favour length."""
    rng = np.random.default_rng(seed)
    models = ["plain", "terse", "middle", "verbose"]
    mean_length = {"plain": 100, "terse": 60, "middle": 120, "verbose": 300}
    battles = []
    for _ in range(n_battles):
        a, b = rng.choice(4, size=2, replace=False)
        la, lb = (max(5.0, rng.normal(mean_length[models[k]], 20)) for k in (a, b))
        x = (la - lb) / (la + lb)
        p_a = 1 / (1 + math.exp(-2.5 * x))  # pure style preference, no strength difference
        u = rng.random()
        winner = "tie" if u < 0.1 else ("model_a" if rng.random() < p_a else "model_b")
        battles.append(Battle(models[a], models[b], winner, 0.0, (la, 0.0, 0.0, 0.0), (lb, 0.0, 0.0, 0.0)))
    return battles


def test_style_control_removes_a_length_advantage_and_reports_its_coefficient():
    battles = _biased_battles(20000)
    plain = bt_ratings(PairCounts.from_battles(battles))
    fit = bt_style_control(battles)
    # without style control the verbose model looks best by a wide margin
    assert plain["verbose"] - plain["terse"] > 100
    # with it, the four equally strong models are within sampling noise of each other (the model and its
    # length are nearly collinear, which widens the noise: ±15 Elo across seeds at 20,000 battles)
    values = [v for v in fit.ratings.values() if v is not None]
    assert max(values) - min(values) < 40
    assert fit.coefficients["length"] > 0.5 and fit.battles == len(battles)
    assert fit.coefficients["headers"] == pytest.approx(0.0, abs=1e-6)  # constant feature: no effect


def test_style_control_agrees_with_plain_fit_without_style_effects():
    rng = np.random.default_rng(1)
    battles = [
        Battle(
            f"m{a}",
            f"m{b}",
            "model_a" if rng.random() < 1 / (1 + 10 ** ((b - a) / 4)) else "model_b",
            0.0,
            (float(rng.integers(50, 150)), 0.0, 0.0, 0.0),
            (float(rng.integers(50, 150)), 0.0, 0.0, 0.0),
        )
        for a, b in (rng.choice(5, size=2, replace=False) for _ in range(4000))
    ]
    plain = bt_ratings(PairCounts.from_battles(battles))
    fit = bt_style_control(battles)
    assert abs(fit.coefficients["length"]) < 0.15
    for name, value in plain.items():
        assert fit.ratings[name] == pytest.approx(value, abs=15)


def test_style_counts_of_markdown_and_clean_battle_metadata():
    text = "# Title\n\nSome **bold** words and __more__.\n\n- one\n- two\n1. three\n"
    assert style_counts(text) == (13.0, 1.0, 3.0, 2.0)  # 13 whitespace-separated words
    meta = {
        "sum_assistant_a_tokens": 120,
        "header_count_a": {"h1": 1, "h2": 2},
        "list_count_a": {"ordered": 3, "unordered": 0},
        "bold_count_a": {"**": 4, "__": 0},
    }
    assert style_from_conv_metadata(meta, "a") == (120.0, 3.0, 3.0, 4.0)
    assert style_from_conv_metadata(meta, "b") is None
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "**yes** sure"}]
    assert style_from_conversation(conversation) == (2.0, 0.0, 0.0, 1.0)


def test_arena_ratings_style_control_command_reads_a_clean_battle_file(tmp_path, capsys):
    rows = [
        {
            "model_a": b.model_a,
            "model_b": b.model_b,
            "winner": b.winner,
            "tstamp": float(k),
            "anony": True,
            "conv_metadata": {
                "sum_assistant_a_tokens": b.style_a[0],
                "sum_assistant_b_tokens": b.style_b[0],
                **{f"{kind}_{side}": {} for kind in ("header_count", "list_count", "bold_count") for side in "ab"},
            },
        }
        for k, b in enumerate(_biased_battles(8000))
    ]
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(rows))
    call_command("arena_ratings", "--input", str(path), "--style-control", "--format", "json")
    out, err = capsys.readouterr()
    ratings = {r["model"]: r for r in json.loads(out)}
    assert ratings["verbose"]["rating_without_style_control"] - ratings["terse"]["rating_without_style_control"] > 100
    assert abs(ratings["verbose"]["rating"] - ratings["terse"]["rating"]) < 50
    assert "length +" in err


def test_style_control_without_style_data_is_a_clear_error(tmp_path):
    from django.core.management.base import CommandError

    path = tmp_path / "battles.json"
    path.write_text(json.dumps([{"model_a": "x", "model_b": "y", "winner": "model_a"}]))
    with pytest.raises(CommandError, match="no battles with style data"):
        call_command("arena_ratings", "--input", str(path), "--style-control")


@pytest.mark.django_db
def test_style_control_reads_counted_votes_from_the_database(capsys):
    from django.test import override_settings

    from annotations.models import Prompt
    from arena import services
    from arena.identity import VoterIdentity
    from arena.models import Battle
    from tests.arena.test_leaderboard import NO_LIMITS, make_models

    strong, middle, weak = make_models()
    rng = np.random.default_rng(2)
    with override_settings(**NO_LIMITS):
        for k in range(120):
            model_a, model_b = (strong, weak) if k % 2 else (middle, weak)
            identity = VoterIdentity(session_hash=f"s{k}", ip_hash=f"i{k}", user_id=None)
            battle = Battle.objects.create(
                prompt=Prompt.objects.create(content=f"p{k}"), model_a=model_a, model_b=model_b, session_hash=f"s{k}"
            )
            long_text, short_text = "word " * int(rng.integers(50, 80)), "word " * int(rng.integers(5, 20))
            a_long = bool(k % 3)
            services.battle_responses_store(
                battle_id=battle.pk,
                text_a=long_text if a_long else short_text,
                text_b=short_text if a_long else long_text,
            )
            winner = ("a" if a_long else "b") if rng.random() < 0.8 else ("b" if a_long else "a")
            services.battle_vote_record(
                battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
            )
    call_command("arena_ratings", "--style-control")
    out = capsys.readouterr().out
    assert "strong@v1" in out and "weak@v1" in out
    coefficient = float(out.split("length ")[1].split(",")[0])
    assert coefficient > 0.5  # the voters here pick the longer answer 80% of the time
