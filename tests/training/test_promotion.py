"""Promotion: the rule a policy states, the decision it yields, and who the champion of a name is (issue #14)."""

from __future__ import annotations

from typing import Any

import pytest

from models_hub.models import Model
from models_hub.selectors import model_champion, model_get_by_label
from models_hub.services import model_champion_set, model_register
from prefarena.errors import InvalidInput, NotFound
from workers.ml.guards import guard_result, token_f1
from workers.models import PromotionDecision
from workers.training.promotion import promotion_decide, promotion_rule_parse


def test_a_full_rule_parses() -> None:
    rule = promotion_rule_parse(
        {
            "judge": "judge",
            "gate": {"alpha": 0.01, "prompt_budget": 64, "batch_size": 16, "min_decisive": 8},
            "eval_prompts": ["a", "b", "a"],
            "guards": {
                "held_out_accuracy": {"min": 0.6},
                "kl": {"max": 12},
                "reward_model": {"model": "rm", "max_drop": 0.1},
                "reference_f1": {"references": [{"prompt": "p", "answer": "x"}], "max_drop": 0.05},
                "safety": {"prompts": ["flagged"], "max_regression": 0.1},
            },
        }
    )
    assert rule.gate.alpha == 0.01 and rule.gate.prompt_budget == 64 and rule.eval_prompts == ("a", "b")
    assert rule.guards_named == ["held_out_accuracy", "kl", "reward_model", "reference_f1", "safety"]
    assert promotion_rule_parse({}).judge is None and promotion_rule_parse(None).guards_named == []


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"min_win_rate_lower_bound": 0.5}, "promotion_rule.min_win_rate_lower_bound"),
        ({"gate": {"alpha": 2}}, "promotion_rule.gate.alpha"),
        ({"gate": {"alpah": 0.1}}, "promotion_rule.gate.alpah"),
        ({"gate": {"batch_size": 0}}, "promotion_rule.gate.batch_size"),
        ({"guards": {"kl": {}}}, "promotion_rule.guards.kl.max"),
        ({"guards": {"kl": {"max": float("inf")}}}, "promotion_rule.guards.kl.max"),
        ({"guards": {"vibes": {}}}, "promotion_rule.guards.vibes"),
        (
            {"guards": {"reference_f1": {"references": [{"prompt": "p"}]}}},
            "promotion_rule.guards.reference_f1.references[0]",
        ),
        ({"guards": {"reward_model": {"max_drop": 0.1}}}, "promotion_rule.guards.reward_model.model"),
        ({"eval_prompts": "not a list"}, "promotion_rule.eval_prompts"),
        ({"judge": True}, "promotion_rule.judge"),
        ([1, 2], "promotion_rule"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_field(rule: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        promotion_rule_parse(rule)
    assert field in caught.value.fields or any(field in key for key in caught.value.fields), caught.value.fields


def test_the_decision_needs_the_gate_and_every_guard() -> None:
    passing = guard_result("kl", 3.0, 10.0, "<=", "KL")
    failing = guard_result("reference_f1", -0.3, -0.05, ">=", "F1 fell")
    promote = {"decision": "promote", "reason": "e = 40 reached 20"}
    assert promotion_decide(promote, [passing])[0] == PromotionDecision.PROMOTED
    decision, reason = promotion_decide(promote, [passing, failing])
    assert decision == PromotionDecision.GUARD_FAILED and "F1 fell" in reason
    assert promotion_decide({"decision": "reject", "reason": "r"}, [])[0] == PromotionDecision.REJECTED
    assert promotion_decide({"decision": "inconclusive", "reason": "r"}, [])[0] == PromotionDecision.INCONCLUSIVE
    assert promotion_decide(None, [passing])[0] == PromotionDecision.NOT_EVALUATED
    # a guard that could not be measured fails closed
    assert not guard_result("kl", None, 10.0, "<=", "no samples").passed
    assert not guard_result("kl", float("nan"), 10.0, "<=", "no samples").passed


def test_token_f1_is_squad_s() -> None:
    assert token_f1("The sky is blue.", "the sky is blue") == 1.0
    assert token_f1("The moon and cets.", "A map helps you find your way.") == 0.0
    assert 0 < token_f1("the sky is grey", "the sky is blue") < 1


@pytest.mark.django_db
def test_a_bare_name_is_the_champion_and_latest_the_newest(tiny_models: dict[str, Any]) -> None:
    path = str(tiny_models["tiny-lm-small"])
    first = model_register(name="fam", role="policy", backend="transformers", path=path)
    # a version a training run produced is a challenger: registered, not the champion
    challenger = Model.objects.create(name="fam", version=2, role="policy", path=path, parent=first, training_run_id=7)
    assert model_get_by_label("fam") == first and model_champion("fam") == first
    assert model_get_by_label("fam@latest") == challenger and model_get_by_label("fam@v2") == challenger
    model_champion_set(model=challenger)
    assert model_get_by_label("fam") == challenger
    assert list(Model.objects.filter(name="fam", is_current=True)) == [challenger]
    # a person registering a version makes it the champion
    third = model_register(name="fam", role="policy", backend="transformers", path=path)
    assert model_get_by_label("fam") == third and Model.objects.filter(name="fam").count() == 3


@pytest.mark.django_db
def test_a_name_whose_only_versions_are_unpromoted_challengers_has_no_champion() -> None:
    Model.objects.create(name="orphan", version=1, role="policy", path="/x", training_run_id=3)
    with pytest.raises(NotFound, match="no champion"):
        model_get_by_label("orphan")
    assert model_get_by_label("orphan@latest").version == 1
