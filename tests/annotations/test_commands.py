"""Management commands: import_items and add_annotators, including their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotations.models import CampaignMembership, Item, ItemResponse, Response

pytestmark = pytest.mark.django_db


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_import_items_stores_items_responses_and_gold(tmp_path, make_campaign):
    campaign = make_campaign(name="chat", overlap=2)
    path = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"prompt": "Hi?", "responses": [{"text": "Hello", "model": "m1"}, {"text": "Yo", "model": "m2"}]},
            {
                "prompt": [{"role": "user", "content": "2+2?"}],
                "responses": [{"text": "4"}, {"text": "5"}],
                "gold": {"choice": "a"},
                "meta": {"topic": "math"},
            },
        ],
    )
    call_command("import_items", "--campaign", "chat", str(path))
    items = list(Item.objects.filter(campaign=campaign).order_by("id"))
    assert len(items) == 2
    assert items[1].is_gold and items[1].gold_answer == {"choice": "a"}
    assert items[1].prompt.content == [{"role": "user", "content": "2+2?"}]
    assert items[1].meta == {"topic": "math"}
    assert [link.response.text for link in ItemResponse.objects.filter(item=items[0]).order_by("position")] == [
        "Hello",
        "Yo",
    ]
    assert items[0].slots.count() == 2


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        (
            json.dumps({"prompt": "x", "responses": [{"text": "only one"}]}),
            "line 2: 'responses' must be a list of at least 2",
        ),
        (json.dumps({"prompt": "", "responses": [{"text": "a"}, {"text": "b"}]}), "line 2: 'prompt' is empty"),
        (
            json.dumps({"prompt": "x", "responses": [{"text": "a"}, {"text": "b"}], "gold": {"choice": "c"}}),
            "line 2: 'gold'",
        ),
        (
            json.dumps({"prompt": "x", "responses": [{"text": "a"}, {"text": "b"}], "extra": 1}),
            "line 2: unknown field(s) extra",
        ),
        (
            json.dumps({"prompt": [{"role": "robot", "content": "x"}], "responses": [{"text": "a"}, {"text": "b"}]}),
            "line 2: 'prompt'[0].role",
        ),
        (
            json.dumps({"prompt": "x", "responses": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}),
            "line 2: pairwise campaigns take exactly 2",
        ),
    ],
)
def test_import_items_bad_line_names_line_and_stores_nothing(tmp_path, make_campaign, bad_line, message):
    make_campaign(name="chat", items=1)
    before = (Item.objects.count(), Response.objects.count())
    path = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"prompt": "fine", "responses": [{"text": "a"}, {"text": "b"}]},
            bad_line,
            {"prompt": "also fine", "responses": [{"text": "a"}, {"text": "b"}]},
        ],
    )
    with pytest.raises(CommandError) as error:
        call_command("import_items", "--campaign", "chat", str(path))
    assert message in str(error.value)
    assert "nothing was imported" in str(error.value)
    assert (Item.objects.count(), Response.objects.count()) == before


def test_import_items_unknown_campaign_and_missing_file(tmp_path, make_campaign):
    make_campaign(name="chat")
    with pytest.raises(CommandError, match="No campaign named 'nope'"):
        call_command("import_items", "--campaign", "nope", str(tmp_path / "x.jsonl"))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_items", "--campaign", "chat", str(tmp_path / "missing.jsonl"))


def test_import_items_rating_gold_is_checked_against_aspects(tmp_path, make_campaign):
    make_campaign(name="hhh", kind="rating")
    path = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "gold": {"ratings": {"helpfulness": [5, 1]}}},
        ],
    )
    with pytest.raises(CommandError, match="line 1: 'gold': .*missing aspects: honesty"):
        call_command("import_items", "--campaign", "hhh", str(path))


def test_add_annotators_all_or_nothing(make_user, make_campaign):
    campaign = make_campaign(name="chat")
    make_user("ann"), make_user("bea")
    with pytest.raises(CommandError, match="Unknown user\\(s\\): ghost; nobody was added"):
        call_command("add_annotators", "--campaign", "chat", "ann", "ghost")
    assert not CampaignMembership.objects.filter(campaign=campaign, user__username="ann").exists()
    call_command("add_annotators", "--campaign", "chat", "ann", "bea")
    assert set(campaign.memberships.filter(role="annotator").values_list("user__username", flat=True)) == {"ann", "bea"}
    call_command("add_annotators", "--campaign", "chat", "--role", "manager", "bea")
    assert campaign.memberships.get(user__username="bea").role == "manager"


def test_demo_seed_only_creates_one_campaign_of_each_kind_and_a_text_to_image_one(db, capsys, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    call_command("demo", "--seed-only", "--no-models")
    out = capsys.readouterr().out
    assert "admin     / " in out and "annotator / " in out
    from annotations.models import Campaign

    kinds = sorted(Campaign.objects.values_list("kind", flat=True))
    assert kinds == ["pairwise", "pairwise", "ranking", "rating"]  # text pairs and text-to-image pairs
    assert all(c.items.count() > 0 for c in Campaign.objects.all())
    # Running again keeps the data and only refreshes passwords.
    call_command("demo", "--seed-only", "--no-models")
    assert Campaign.objects.count() == 4


@pytest.mark.parametrize("choice", ["a", "b", "tie", "both_bad"])
def test_import_gold_pairwise_accepts_every_choice(tmp_path, make_campaign, choice):
    make_campaign(name="chat")
    path = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "p", "responses": ["x", "y"], "gold": {"choice": choice}}])
    call_command("import_items", "--campaign", "chat", str(path))
    assert Item.objects.get().gold_answer == {"choice": choice}


def test_import_items_refuses_nul_characters(tmp_path, make_campaign):
    make_campaign(name="chat")
    path = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "a\u0000b", "responses": ["x", "y"]}])
    with pytest.raises(CommandError, match="line 1: prompt: contains a NUL character"):
        call_command("import_items", "--campaign", "chat", str(path))
    assert Item.objects.count() == 0
