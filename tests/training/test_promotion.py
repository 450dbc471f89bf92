"""Promotion: a version becomes current only when its win-rate lower bound against the parent is above
one half and the flagged prompt set shows no safety regression; earlier versions are kept."""

from __future__ import annotations

from typing import Any

import pytest

from models_hub.models import Model
from models_hub.services import model_register
from workers.training import services as training_services
from workers.training.evaluation import wilson_interval

pytestmark = pytest.mark.django_db


def battles(low: float | None) -> dict[str, Any]:
    return {"battles": {"win_rate_ci_low": low}}


@pytest.mark.parametrize(
    ("evaluation", "rule", "allowed"),
    [
        (battles(0.62), None, True),
        (battles(0.48), None, False),
        (battles(0.5), None, False),  # strictly above one half
        (battles(None), None, False),  # nothing judged: never promoted
        ({**battles(0.7), "safety": {"regression": 0.1}}, None, False),
        ({**battles(0.7), "safety": {"regression": 0.1}}, {"max_safety_regression": 0.2}, True),
        (battles(0.55), {"min_win_rate_lower_bound": 0.6}, False),
    ],
)
def test_promotion_rule(evaluation: dict[str, Any], rule: dict[str, Any] | None, allowed: bool) -> None:
    assert training_services.promotion_decide(evaluation, rule)[0] is allowed


def test_wilson_interval_brackets_the_rate_and_tightens_with_more_battles() -> None:
    low_small, high_small = wilson_interval(8, 10)
    low_big, high_big = wilson_interval(80, 100)
    assert low_small < 0.8 < high_small and low_big < 0.8 < high_big
    assert high_big - low_big < high_small - low_small
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_promote_marks_one_current_version_per_name_and_keeps_the_others(tiny_models: dict[str, Any]) -> None:
    path = str(tiny_models["tiny-lm-small"])
    first = model_register(name="fam", role="policy", backend="transformers", path=path)
    second = model_register(name="fam", role="policy", backend="transformers", path=path, parent=first)
    training_services.model_promote(model=first)
    training_services.model_promote(model=second)
    assert list(Model.objects.filter(name="fam", is_current=True)) == [second]
    assert Model.objects.filter(name="fam").count() == 2
