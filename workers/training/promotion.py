"""A retraining policy's promotion rule: how its challengers are judged against the champion, and the decision.

A challenger becomes the champion only when all of these hold (`promotion_decide`):
1. the sequential gate (workers/ml/promotion_gate.py) promotes it: position-swapped judged battles against the
   current champion on held-out prompts, in batches, until the e-value crosses 1/alpha (promote), the futility
   e-process does (rejected), or the budget or the held-out pool is spent (inconclusive);
2. every guard the rule names passes (workers/ml/guards.py): held-out implicit-reward accuracy, KL from the
   champion, a reward model's mean score, token-F1 against reference answers, the judge on flagged prompts.

The rule is stored as JSON on the policy (`promotion_rule`):

    {"judge": "judge-name",                          # required to promote at all
     "gate": {"alpha": 0.05, "prompt_budget": 512, "batch_size": 32, "min_decisive": 20, ...},
     "eval_prompts": ["...", ...],                   # extra held-out prompts (never trained on) for the gate
     "guards": {"held_out_accuracy": {"min": 0.5},
                "kl": {"max": 20.0},                 # nats per response, KL(challenger ‖ champion)
                "reward_model": {"model": "rm", "max_drop": 0.0},
                "reference_f1": {"references": [{"prompt": "...", "answer": "..."}], "max_drop": 0.05},
                "safety": {"prompts": ["..."], "max_regression": 0.0}}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefarena.errors import InvalidInput
from workers.ml.guards import GuardResult
from workers.ml.promotion_gate import GateConfig, GateConfigError
from workers.models import PromotionDecision

RULE_KEYS = ("judge", "gate", "eval_prompts", "guards")
GUARD_KEYS = {
    "held_out_accuracy": ("min",),
    "kl": ("max",),
    "reward_model": ("model", "max_drop"),
    "reference_f1": ("references", "max_drop"),
    "safety": ("prompts", "max_regression"),
}
LEGACY_KEYS = {  # keys of the rule before the sequential gate: refused with what replaces them
    "min_win_rate_lower_bound": "the fixed Wilson bound was replaced by the sequential gate: set gate.alpha",
    "max_safety_regression": "moved to guards.safety.max_regression",
    "safety_prompts": "moved to guards.safety.prompts",
}
MAX_PROMPTS = 10_000


@dataclass(frozen=True)
class ReferenceAnswer:
    prompt: str
    answer: str


@dataclass(frozen=True)
class PromotionRule:
    """A parsed promotion rule; see the module docstring for its JSON form."""

    judge: str | int | None = None
    gate: GateConfig = field(default_factory=GateConfig)
    eval_prompts: tuple[str, ...] = ()
    held_out_accuracy_min: float | None = None
    kl_max: float | None = None
    reward_model: str | int | None = None
    reward_max_drop: float = 0.0
    references: tuple[ReferenceAnswer, ...] = ()
    reference_max_drop: float = 0.0
    safety_prompts: tuple[str, ...] = ()
    safety_max_regression: float = 0.0

    @property
    def guards_named(self) -> list[str]:
        names = []
        if self.held_out_accuracy_min is not None:
            names.append("held_out_accuracy")
        if self.kl_max is not None:
            names.append("kl")
        if self.reward_model is not None:
            names.append("reward_model")
        if self.references:
            names.append("reference_f1")
        if self.safety_prompts:
            names.append("safety")
        return names


def _bad(path: str, message: str) -> InvalidInput:
    field_name = f"promotion_rule.{path}"
    return InvalidInput(f"{field_name}: {message}", fields={field_name: [message]})


def _number(value: Any, path: str, *, low: float | None = None, high: float | None = None) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _bad(path, f"must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise _bad(path, f"must lie in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]")
    return float(value)


def _prompts(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise _bad(path, "must be a list of non-empty strings")
    if len(value) > MAX_PROMPTS:
        raise _bad(path, f"at most {MAX_PROMPTS} prompts")
    return tuple(dict.fromkeys(p.strip() for p in value))


def _model_reference(value: Any, path: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int) or (isinstance(value, str) and not value.strip()):
        raise _bad(path, "must be a model id or a label ('name', 'name@vN')")
    return value.strip() if isinstance(value, str) else value


def _object(value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _bad(f"{path}.{unknown[0]}" if path else unknown[0], f"unknown setting; known: {', '.join(allowed)}")
    return value


def promotion_rule_parse(rule: Any) -> PromotionRule:
    """The parsed rule, or InvalidInput naming the bad field (`promotion_rule.guards.kl.max`)."""
    if rule is None:
        return PromotionRule()
    if isinstance(rule, dict):
        for key, replacement in LEGACY_KEYS.items():
            if key in rule:
                raise _bad(key, replacement)
    data = _object(rule, "", RULE_KEYS)
    values: dict[str, Any] = {}
    if data.get("judge") is not None:
        values["judge"] = _model_reference(data["judge"], "judge")
    if "gate" in data:
        gate = _object(data["gate"], "gate", tuple(GateConfig.__dataclass_fields__))
        try:
            values["gate"] = GateConfig.from_dict(gate)
        except GateConfigError as exc:
            raise _bad(f"gate.{exc.field}", exc.message) from exc
        except TypeError as exc:
            raise _bad("gate", str(exc)) from exc
    if "eval_prompts" in data:
        values["eval_prompts"] = _prompts(data["eval_prompts"], "eval_prompts")
    guards = _object(data.get("guards") or {}, "guards", tuple(GUARD_KEYS))
    for name, keys in GUARD_KEYS.items():
        if name in guards:
            _object(guards[name], f"guards.{name}", keys)
    if "held_out_accuracy" in guards:
        values["held_out_accuracy_min"] = _number(
            guards["held_out_accuracy"].get("min", 0.5), "guards.held_out_accuracy.min", low=0.0, high=1.0
        )
    if "kl" in guards:
        if "max" not in guards["kl"]:
            raise _bad("guards.kl.max", "the KL guard needs its bound (nats per response)")
        values["kl_max"] = _number(guards["kl"]["max"], "guards.kl.max", low=0.0)
    if "reward_model" in guards:
        guard = guards["reward_model"]
        values["reward_model"] = _model_reference(guard.get("model"), "guards.reward_model.model")
        values["reward_max_drop"] = _number(guard.get("max_drop", 0.0), "guards.reward_model.max_drop", low=0.0)
    if "reference_f1" in guards:
        guard = guards["reference_f1"]
        references = guard.get("references")
        if not isinstance(references, list) or not references or len(references) > MAX_PROMPTS:
            raise _bad("guards.reference_f1.references", f"must be a list of 1 to {MAX_PROMPTS} objects")
        parsed = []
        for index, item in enumerate(references):
            path = f"guards.reference_f1.references[{index}]"
            item = _object(item, path, ("prompt", "answer"))
            if not all(isinstance(item.get(k), str) and item[k].strip() for k in ("prompt", "answer")):
                raise _bad(path, "needs a non-empty 'prompt' and 'answer'")
            parsed.append(ReferenceAnswer(item["prompt"].strip(), item["answer"].strip()))
        values["references"] = tuple(parsed)
        values["reference_max_drop"] = _number(
            guard.get("max_drop", 0.0), "guards.reference_f1.max_drop", low=0.0, high=1.0
        )
    if "safety" in guards:
        guard = guards["safety"]
        values["safety_prompts"] = _prompts(guard.get("prompts"), "guards.safety.prompts")
        values["safety_max_regression"] = _number(
            guard.get("max_regression", 0.0), "guards.safety.max_regression", low=0.0, high=0.5
        )
    return PromotionRule(**values)


def promotion_decide(gate: dict[str, Any] | None, guards: list[GuardResult]) -> tuple[str, str]:
    """(decision, reason): promoted only when the gate promotes and every named guard passes."""
    if gate is None:
        return PromotionDecision.NOT_EVALUATED, "the policy names no judge: challengers are never promoted"
    decision = gate.get("decision")
    if decision == "promote":
        failed = [g for g in guards if not g.passed]
        if failed:
            shown = "; ".join(f"{g.name}: {g.detail}" for g in failed)
            return PromotionDecision.GUARD_FAILED, f"beat the champion ({gate.get('reason')}), but {shown}"
        passed = f"; guards passed: {', '.join(g.name for g in guards)}" if guards else ""
        return PromotionDecision.PROMOTED, f"{gate.get('reason')}{passed}"
    if decision == "reject":
        return PromotionDecision.REJECTED, str(gate.get("reason"))
    return PromotionDecision.INCONCLUSIVE, str(gate.get("reason"))
