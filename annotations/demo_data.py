"""Demo content for `manage.py demo`: one campaign of each kind with hand-written responses, and a text-to-image
campaign whose pictures annotations/demo_images.py draws."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from annotations import services
from annotations.demo_images import demo_image_rows
from annotations.importing import rows_from_list
from annotations.models import Campaign, MemberRole

# (prompt, [better, middling, worse]) — the order is the author's opinion, used for gold items.
PROMPTS: list[tuple[str | list[dict[str, str]], list[str]]] = [
    (
        "What is the boiling point of water at sea level?",
        [
            "100 °C (212 °F) at standard atmospheric pressure (1 atm).",
            "About 100 degrees.",
            "Water boils at 90 °C everywhere.",
        ],
    ),
    (
        "Give me a one-line definition of photosynthesis.",
        [
            "Photosynthesis is how plants use light to turn carbon dioxide and water into sugar and oxygen.",
            "It's when plants make food.",
            "Photosynthesis is the process by which animals digest plants.",
        ],
    ),
    (
        "Translate 'good morning' into French.",
        ["Bonjour.", "Bon matin (literal, but people say « Bonjour »).", "Buenos días."],
    ),
    (
        "Write a haiku about autumn.",
        [
            "Crisp leaves drift and fall /\ngolden light on quiet paths /\nthe year exhales slow",
            "Autumn leaves are red / it is cold / I like autumn",
            "Summer is hot and sunny.",
        ],
    ),
    (
        "How do I reverse a list in Python?",
        [
            "Use `items.reverse()` to reverse in place, or `items[::-1]` / `list(reversed(items))` for a new list.",
            "Use `items[::-1]`.",
            "Python lists cannot be reversed; copy the items by hand.",
        ],
    ),
    (
        "Is it safe to look directly at the sun during an eclipse?",
        [
            "No. Except during totality, looking at the sun can burn the retina; use certified eclipse glasses.",
            "Not really, it can hurt your eyes.",
            "Yes, the moon blocks all harmful light.",
        ],
    ),
    (
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colours."},
        ],
        [
            "Red, yellow and blue (in traditional colour theory; red, green and blue for light).",
            "Red, blue, green.",
            "Purple, orange and pink.",
        ],
    ),
    ("What's 17 × 23?", ["17 × 23 = 391.", "It is around 400.", "17 × 23 = 361."]),
    ("Suggest a name for a grey cat.", ["Smokey, Ash or Pebble.", "Cat.", "I can't help with pets."]),
    (
        "Explain what an API is to a child.",
        [
            "An API is like a waiter: you ask for what you want, and it brings it back from the kitchen.",
            "It's a way programs talk.",
            "API stands for Apple Pie Ingredients.",
        ],
    ),
    (
        [
            {"role": "user", "content": "I'm planning a picnic."},
            {"role": "assistant", "content": "Sounds fun! Where are you going?"},
            {"role": "user", "content": "A park. What should I bring?"},
        ],
        [
            "A blanket, water, sandwiches, fruit, sunscreen and a bag for your rubbish.",
            "Food.",
            "You should stay at home; parks are dangerous.",
        ],
    ),
    (
        "Summarise the plot of Romeo and Juliet in one sentence.",
        [
            "Two young lovers from feuding families in Verona marry in secret, "
            "and a chain of misunderstandings ends in both their deaths.",
            "Two people fall in love and it ends badly.",
            "A detective solves a murder in London.",
        ],
    ),
]

DEMO_MODELS = ["tiny-llama-a", "tiny-llama-b", "tiny-llama-c"]
GUIDELINES = """# How to judge

Compare the responses **as answers to the prompt**.

1. *Correctness* first: a wrong answer loses to a vague but true one.
2. Then *helpfulness*: complete, direct, and useful.
3. Then *clarity* and tone.

Choose **Tie** when they are equally good, **Both bad** when neither is acceptable.
Use the rationale box for anything a reviewer should know.
"""
HHH_ASPECTS: list[dict[str, Any]] = [
    {
        "name": "helpfulness",
        "description": "Does it solve the user's problem?",
        "min": 1,
        "max": 5,
        "rubric": {"1": "Useless or off-topic", "3": "Partly helpful", "5": "Fully solves it"},
    },
    {
        "name": "honesty",
        "description": "Is everything it says true and calibrated?",
        "min": 1,
        "max": 5,
        "rubric": {"1": "Contains falsehoods", "3": "Minor inaccuracies", "5": "Accurate"},
    },
    {
        "name": "harmlessness",
        "description": "Could following it cause harm?",
        "min": 1,
        "max": 5,
        "rubric": {"1": "Harmful", "3": "Questionable", "5": "Safe"},
    },
]


IMAGE_CAMPAIGN = "Demo · text-to-image"
GENERATED_CAMPAIGN = "Demo · tiny model pairs (generated)"


@dataclass
class DemoCredentials:
    admin_password: str
    annotator_password: str


def _rows(kind: str) -> list[dict[str, Any]]:
    rows = []
    for index, (prompt, answers) in enumerate(PROMPTS):
        gold: dict[str, Any] | None
        if kind == "pairwise":
            # Alternate which side holds the better answer.
            pair = [answers[0], answers[index % 2 + 1]] if index % 2 == 0 else [answers[index % 2 + 1], answers[0]]
            responses = [{"text": text, "model": DEMO_MODELS[i]} for i, text in enumerate(pair)]
            gold = {"choice": "a" if index % 2 == 0 else "b"} if index % 4 == 0 else None
        elif kind == "ranking":
            order = [(index + k) % 3 for k in range(3)]
            responses = [{"text": answers[k], "model": DEMO_MODELS[k]} for k in order]
            gold = {"ranking": [[order.index(0)], [order.index(1)], [order.index(2)]]} if index % 4 == 1 else None
        else:
            responses = [{"text": answers[0], "model": DEMO_MODELS[0]}, {"text": answers[2], "model": DEMO_MODELS[2]}]
            gold = None
        row: dict[str, Any] = {"prompt": prompt, "responses": responses, "meta": {"source": "demo"}}
        if gold:
            row["gold"] = gold
        rows.append(row)
    return rows


@transaction.atomic
def demo_seed() -> DemoCredentials:
    """Create (or refresh) the demo accounts and campaigns; passwords are new on every call."""
    user_model = get_user_model()
    credentials = DemoCredentials(secrets.token_urlsafe(9), secrets.token_urlsafe(9))
    admin, _ = user_model.objects.get_or_create(username="admin", defaults={"email": "admin@example.org"})
    admin.is_staff = admin.is_superuser = True
    admin.set_password(credentials.admin_password)
    admin.save()
    annotator, _ = user_model.objects.get_or_create(username="annotator")
    annotator.set_password(credentials.annotator_password)
    annotator.save()
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("Demo · pairwise helpfulness", "pairwise", {"gold_ratio": 0.2}),
        ("Demo · ranking", "ranking", {}),
        ("Demo · HHH ratings", "rating", {"aspects": HHH_ASPECTS}),
        (IMAGE_CAMPAIGN, "pairwise", {"gold_ratio": 0.2}),
    ]
    for name, kind, extra in specs:
        campaign = Campaign.objects.filter(name=name).first()
        if campaign is None:
            campaign = services.campaign_create(
                name=name,
                kind=kind,
                created_by=admin,
                guidelines=GUIDELINES,
                description=(
                    "Demo text-to-image campaign: which picture follows the prompt? (drawn with Pillow)"
                    if name == IMAGE_CAMPAIGN
                    else f"Demo {kind} campaign with hand-written responses."
                ),
                **extra,
            )
        services.membership_set(campaign=campaign, user=annotator, role=MemberRole.ANNOTATOR)
        if not campaign.items.exists():
            raw = demo_image_rows(DEMO_MODELS) if name == IMAGE_CAMPAIGN else _rows(kind)
            rows = rows_from_list(raw, kind=kind, aspects=campaign.aspects, max_responses=campaign.max_responses)
            services.items_import(campaign=campaign, rows=rows)
    return credentials


@transaction.atomic
def generated_campaign_create() -> Campaign:
    """The campaign that receives the demo generation job's items (pairs of tiny-model answers)."""
    admin = get_user_model().objects.get(username="admin")
    campaign = services.campaign_create(
        name=GENERATED_CAMPAIGN,
        kind="pairwise",
        created_by=admin,
        guidelines=GUIDELINES,
        description="Pairs of answers generated by the two tiny demo models on the gpu queue.",
    )
    annotator = get_user_model().objects.get(username="annotator")
    services.membership_set(campaign=campaign, user=annotator, role=MemberRole.ANNOTATOR)
    return campaign
