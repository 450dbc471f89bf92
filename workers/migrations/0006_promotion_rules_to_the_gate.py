"""Promotion rules written before the sequential gate take its form, so their policies keep running.

The old rule was {"judge", "min_win_rate_lower_bound", "safety_prompts", "max_safety_regression"}: the fixed Wilson
bound is dropped (the gate replaces it; its alpha is the gate's default), the flagged prompts become the safety
guard. workers/training/promotion.py refuses the old keys in new rules, naming what replaced them.
"""

from django.db import migrations


def rules_to_gate(apps, schema_editor):
    RetrainPolicy = apps.get_model("workers", "RetrainPolicy")
    for policy in RetrainPolicy.objects.all().iterator():
        rule = dict(policy.promotion_rule or {})
        if not {"min_win_rate_lower_bound", "safety_prompts", "max_safety_regression"} & set(rule):
            continue
        rule.pop("min_win_rate_lower_bound", None)
        prompts = [p for p in rule.pop("safety_prompts", None) or [] if isinstance(p, str) and p.strip()]
        regression = rule.pop("max_safety_regression", 0.0)
        if prompts:
            guards = dict(rule.get("guards") or {})
            bounded = min(max(float(regression or 0.0), 0.0), 0.5)
            guards["safety"] = {"prompts": prompts, "max_regression": bounded}
            rule["guards"] = guards
        policy.promotion_rule = rule
        policy.save(update_fields=["promotion_rule"])


class Migration(migrations.Migration):
    dependencies = [("workers", "0005_generation_duplicate_retries")]

    operations = [migrations.RunPython(rules_to_gate, migrations.RunPython.noop)]
