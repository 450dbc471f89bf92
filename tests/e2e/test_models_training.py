"""The Training and Models pages in a real browser, with a real gpu worker training a tiny model (issue #17):
a campaign manager starts a run from the form (a bad value first: its field's error, nothing queued), watches
the curve fill in on the run page, finds the new version in the lineage tree, promotes it and puts it in the arena.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from annotations import services as annotation_services
from annotations.models import MemberRole
from models_hub.models import Model

# The training tests' fixtures: a campaign whose preferences carry a learnable rule, its built snapshot, the tiny
# policy, a real gpu worker, and the temporary training folders (autouse).
from tests.training.conftest import (  # noqa: F401  (fixtures)
    build_snapshot,
    pattern_campaign,
    start_worker,
    tiny_policy,
    training_dirs,
)
from workers.models import TrainingRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRAIN_MS = 240_000  # worker start-up is done before the form is sent; six steps and the evaluation remain


def screenshot(page: Page, name: str) -> None:
    """Save a screenshot when PREFARENA_E2E_SCREENSHOTS names a folder (for looking at the page)."""
    folder = os.environ.get("PREFARENA_E2E_SCREENSHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def test_a_manager_trains_a_version_from_the_form_then_promotes_it_into_the_arena(
    page: Page,
    log_in: Any,
    make_user: Any,
    pattern_campaign: Any,  # noqa: F811
    build_snapshot: Any,  # noqa: F811
    tiny_policy: Model,  # noqa: F811
    start_worker: Any,  # noqa: F811
) -> None:
    # given a manager of the campaign who may start runs and change models, its snapshot, and a gpu worker
    campaign = pattern_campaign()
    snapshot = build_snapshot(campaign, formats=("pairwise",))
    manager = make_user("manager")
    manager.user_permissions.add(*Permission.objects.filter(codename__in=["add_trainingrun", "change_model"]))
    annotation_services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    worker = start_worker()
    csp_refusals: list[str] = []  # every page of the flow runs under the Content-Security-Policy
    page.on("console", lambda m: csp_refusals.append(m.text) if "Content Security Policy" in m.text else None)
    log_in(page, manager, "/training/")
    screenshot(page, "training-runs-empty")

    # when the manager opens the form from the Training page and sends a learning rate of 0
    page.get_by_role("link", name="Start a run").click()
    page.get_by_label("Base model").select_option(label="tiny-policy@v1 (policy)")
    page.get_by_label("Dataset snapshot").select_option(value=str(snapshot.pk))
    page.get_by_label("Method").select_option(value="dpo")
    for name, value in {"max_steps": "6", "batch_size": "8", "max_length": "128", "warmup_ratio": "0"}.items():
        page.locator(f'input[name="{name}"]').fill(value)
    page.locator('input[name="eval_fraction"]').fill("0.25")
    page.locator('input[name="learning_rate"]').fill("0")
    page.get_by_role("button", name="Start the run").click()

    # then that field shows the API's message and nothing is queued
    error = page.locator('[data-field="learning_rate"] .field-error')
    expect(error).to_have_text("must be in (0, 1], got 0.0")
    expect(page.locator(".field-error")).to_have_count(1)
    assert TrainingRun.objects.count() == 0
    screenshot(page, "training-form-error")

    # when the value is corrected (the other fields kept what was typed) and sent again
    expect(page.locator('input[name="max_steps"]')).to_have_value("6")
    page.locator('input[name="learning_rate"]').fill("0.001")
    page.get_by_role("button", name="Start the run").click()

    # then the run page opens, and its curve fills in as the worker trains
    page.wait_for_url("**/jobs/training/*/")
    run = TrainingRun.objects.get()
    assert (run.created_by_id, run.hyperparameters["max_steps"]) == (manager.pk, 6)
    expect(page.locator("#curves")).to_have_attribute("data-points", "0")
    page.wait_for_function("() => Number(document.getElementById('curves').dataset.points) > 0", timeout=TRAIN_MS)
    screenshot(page, "training-run-live")
    status = page.locator('#training-run [data-run-field="status"]')
    expect(status).to_have_text("Succeeded", timeout=TRAIN_MS)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error + worker.log.read_text()[-3000:]
    expect(page.locator("#curves")).to_have_attribute("data-points", "6")
    expect(page.locator('[data-run-field="output_model"]')).to_have_text("tiny-policy@v2")
    page.reload()
    screenshot(page, "training-run-done")
    page.get_by_role("link", name="← Training runs").click()
    expect(page.locator(f'tr[data-run="{run.pk}"]')).to_contain_text("tiny-policy@v2")
    screenshot(page, "training-runs")

    # when the manager opens the Models page from the navigation
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    trained = run.output_model
    node = page.locator(f"#model-{trained.pk}")
    # then v2 hangs under v1, produced by the run, not the champion, not in the arena
    expect(page.locator(f"#model-{tiny_policy.pk} .lineage #model-{trained.pk}")).to_be_visible()
    expect(node.locator(".facts").first).to_contain_text(f"training run #{run.pk}")
    expect(page.locator(f"#model-{tiny_policy.pk} > .version-head [data-champion]")).to_be_visible()
    expect(node.locator(":scope > .version-head [data-champion]")).to_have_count(0)
    screenshot(page, "models-lineage")

    # when the manager promotes v2 and puts it in the arena
    node.locator(":scope > .version-actions [data-action=promote]").click()
    expect(page.locator(".flash")).to_contain_text("tiny-policy@v2 is now the champion of tiny-policy.")
    node.locator(":scope > .version-actions [data-action=arena-in]").click()
    expect(page.locator(".flash")).to_contain_text("tiny-policy@v2 is in the arena.")

    # then the page and the registry agree: v2 is the champion, in the arena; v1 is no longer the champion
    expect(node.locator(":scope > .version-head [data-champion]")).to_be_visible()
    expect(node.locator(":scope > .version-head [data-in-arena]")).to_be_visible()
    expect(page.locator(f"#model-{tiny_policy.pk} > .version-head [data-champion]")).to_have_count(0)
    trained.refresh_from_db()
    assert (trained.is_current, trained.in_arena) == (True, True)
    assert Model.objects.get(pk=tiny_policy.pk).is_current is False
    screenshot(page, "models-promoted")
    assert csp_refusals == []
