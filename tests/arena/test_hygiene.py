"""Prompt hygiene: normalised hashes, near-duplicate clusters, their cap in fits, automatic categories."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from arena import hygiene, selectors, tally
from arena.models import Battle
from tests.arena.test_api import NO_LIMITS, live_battle, make_models, ready, vote

POEM = "Write a short poem about the autumn leaves falling in the park near my house."
POEM_AGAIN = "write a short poem about the autumn leaves falling in the park near my home!"
OTHER = "Explain quantum entanglement to a ten year old child in simple words please."


# --- pure ----------------------------------------------------------------------------------------------------
def test_the_hash_ignores_case_spacing_and_end_punctuation_only():
    assert hygiene.prompt_hash("Hello   World!") == hygiene.prompt_hash("hello world")
    assert hygiene.prompt_hash([{"role": "user", "content": "Hello world"}]) == hygiene.prompt_hash("hello world")
    assert hygiene.prompt_hash("hello world") != hygiene.prompt_hash("hello word")


def test_near_duplicates_share_a_minhash_band_and_unrelated_prompts_do_not():
    poem, again, other = (set(hygiene.minhash_bands(text)) for text in (POEM, POEM_AGAIN, OTHER))
    assert len(poem) == hygiene.MINHASH_BANDS
    assert poem & again
    assert not poem & other
    assert hygiene.minhash_bands(POEM) == hygiene.minhash_bands(POEM)  # the same in every process (fixed seed)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("What is the capital of France?", ["lang_en"]),
        ("Quelle est la capitale de la France ?", ["lang_fr"]),
        ("写一首关于秋天的诗", ["lang_zh"]),
        ("Solve 2x + 3 = 7 for x.", ["math"]),
        ("What is 15% of 80?", ["math"]),
        ("Compute \\frac{1}{2} + \\frac{1}{3}", ["math"]),
        ("```python\nprint(1)\n```", ["code"]),
        ("def f(x):\n    return x + 1\nprint(f(2));", ["code"]),
        ("hi", []),
        (
            [
                {"role": "user", "content": "Who wrote Hamlet and when was the play first performed?"},
                {"role": "assistant", "content": "Shakespeare."},
                {"role": "user", "content": "And how many acts does the play have in total?"},
            ],
            ["multi_turn", "lang_en"],
        ),
    ],
)
def test_automatic_categories(content, expected):
    assert hygiene.prompt_categories(content) == expected


def test_a_long_prompt_is_long_and_the_dedup_weight_caps_a_cluster():
    assert "long_prompt" in hygiene.prompt_categories("word " * 300)
    assert [hygiene.dedup_weight(n, 20) for n in (1, 20, 40)] == [1.0, 1.0, 0.5]


# --- battles -------------------------------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_battles_store_hash_cluster_and_categories_and_fits_cap_a_cluster():
    # given
    make_models(2)
    client = APIClient()

    # when: four battles on one prompt and a near-duplicate, one on another prompt
    created = []
    for prompt in (POEM, POEM.upper(), POEM_AGAIN, POEM, OTHER):
        battle = live_battle(client, prompt)
        ready(battle["id"])
        assert vote(client, battle, "a").status_code == 201
        created.append(Battle.objects.get(pk=battle["id"]))

    # then: exact duplicates share the hash, near duplicates the cluster
    poem, upper, again, poem_twice, other = created
    assert poem.prompt_hash == upper.prompt_hash == poem_twice.prompt_hash != again.prompt_hash
    assert poem.prompt_cluster == upper.prompt_cluster == again.prompt_cluster == poem_twice.prompt_cluster
    assert other.prompt_cluster != poem.prompt_cluster
    assert "lang_en" in poem.categories
    # ... a fit weighs the poem's cluster as `cap` votes at most, the other prompt fully
    with override_settings(ARENA_PROMPT_CLUSTER_CAP=2):
        weights = {row.vote_id: row.dedup_weight for row in selectors.battles_for_fit()}
    assert sorted(weights.values()) == [0.5, 0.5, 0.5, 0.5, 1.0]  # the poem's cluster weighs 2 votes in all
    # ... and the language has its own leaderboard category once the votes are counted
    tally.votes_apply(wait=True)
    assert "lang_en" in selectors.leaderboard_categories()


@pytest.mark.django_db
def test_a_battle_stored_before_clustering_weighs_one():
    make_models(2)
    client = APIClient()
    battle = live_battle(client)
    ready(battle["id"])
    assert vote(client, battle, "b").status_code == 201
    Battle.objects.filter(pk=battle["id"]).update(prompt_hash="", prompt_cluster="")
    [row] = selectors.battles_for_fit()
    assert (row.dedup_weight, row.prompt_cluster, row.weight) == (1.0, "", pytest.approx(row.ipw_weight))
