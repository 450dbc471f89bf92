"""workers.ml.judge: verdict parsing, order combination, tiny local judges, a scripted HTTP judge."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.judges.judge_server import Scripted, ScriptedJudgeServer, shown_answers
from workers.ml.errors import TransientBackendError
from workers.ml.judge import (
    JudgeConfig,
    combine_orders,
    judge_pairwise,
    judge_ranking,
    judge_rating,
    parse_pairwise,
    parse_rating,
    render_template,
)
from workers.ml.openai_backend import OpenAIChat

ROOT = Path(__file__).resolve().parents[2]


def test_judge_and_router_modules_never_import_django():
    code = (
        "import sys, workers.ml.judge, annotations.routing_core;"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_verdicts_come_from_the_last_strict_match():
    assert parse_pairwise("Maybe [[A]] at first, but on reflection [[B]]") == "B"
    assert parse_pairwise("[[ A ]] or [A] or A") is None
    assert parse_pairwise("[[C]]") == "C"
    assert parse_pairwise("[[A>>B]] hmm, final: [[B>A]]", scale=5) == "B>A"
    assert parse_pairwise("[[A]]", scale=5) is None
    assert parse_rating("Feedback: fine. [RESULT] 2 ... no: [RESULT] 4") == 4
    assert parse_rating("[RESULT] 6") is None
    assert parse_rating("[RESULT] 3.5") is None
    assert render_template("{question} {x} {answer_a}", question="Q {answer_b}", answer_a="A") == "Q {answer_b} {x} A"


def test_orders_combine_as_computed_by_hand():
    # consistent: A better in both orders
    p_a, verdict, consistent, confidence, _ = combine_orders(
        {"A": 0.7, "B": 0.2, "C": 0.1}, {"A": 0.1, "B": 0.8, "C": 0.1}
    )
    assert (verdict, consistent) == ("a", True)
    assert p_a == pytest.approx(((0.7 + 0.05) + (1 - (0.1 + 0.05))) / 2)  # 0.8
    assert confidence == pytest.approx((0.7 + 0.8) / 2)
    # inconsistent (the first position wins both times): a tie at half the confidence, as in MT-Bench
    p_a, verdict, consistent, confidence, _ = combine_orders(
        {"A": 0.8, "B": 0.1, "C": 0.1}, {"A": 0.6, "B": 0.3, "C": 0.1}
    )
    assert (verdict, consistent) == ("tie", False)
    assert p_a == pytest.approx((0.85 + 0.35) / 2)
    assert confidence == pytest.approx(0.5 * (0.8 + 0.3) / 2)
    # 5-way: A>>B shown first, B>A when swapped -> A, clearly (one strong and one weak vote)
    p_a, verdict, consistent, _, strength = combine_orders({"A>>B": 1.0}, {"B>A": 1.0}, scale=5)
    assert (verdict, consistent, strength) == ("a", True, "clear")
    assert p_a == pytest.approx((1.0 + 0.75) / 2)
    assert combine_orders(None, {"A": 1.0})[1] == "error"


def _prefers(word: str):
    """A scripted judge that picks the answer containing `word`, with a short explanation first."""

    def script(body):
        a, b = shown_answers(body)
        return "Assistant A mentions it. [[A]]" if word in a else ("B is right. [[B]]" if word in b else "[[C]]")

    return script


def test_http_judge_sees_both_orders_and_stores_every_call():
    with ScriptedJudgeServer(_prefers("Paris")) as server, OpenAIChat(base_url=server.base_url, model="judge") as chat:
        verdict = judge_pairwise(chat, "Capital of France?", "It is Lyon.", "It is Paris.", JudgeConfig())
    assert (verdict.verdict, verdict.consistent, verdict.p_a) == ("b", True, 0.0)
    assert verdict.order_verdicts == ["second", "first"]
    assert [shown_answers(b) for b in server.requests] == [
        ("It is Lyon.", "It is Paris."),
        ("It is Paris.", "It is Lyon."),
    ]
    assert [c.order for c in verdict.calls] == ["ab", "ba"]
    assert verdict.calls[0].raw_output == "B is right. [[B]]"
    assert verdict.calls[0].prompt_hash != verdict.calls[1].prompt_hash and len(verdict.calls[0].prompt_hash) == 64
    assert (verdict.calls[0].prompt_tokens, verdict.calls[0].completion_tokens) == (100, 10)
    assert verdict.calls[0].params["scale"] == 3 and verdict.calls[0].source == "single"
    assert server.requests[0]["temperature"] == 0.0 and server.requests[0]["logprobs"] is True


def test_http_judge_with_position_bias_gives_an_inconsistent_tie():
    with ScriptedJudgeServer(lambda body: "[[A]]") as server, OpenAIChat(base_url=server.base_url, model="j") as chat:
        verdict = judge_pairwise(chat, "Q?", "one", "two", JudgeConfig())
    assert (verdict.verdict, verdict.consistent, verdict.p_a) == ("tie", False, 0.5)
    assert verdict.first_position_wins == [True, True]
    assert verdict.confidence == pytest.approx(0.25)


def test_http_logprobs_give_the_probability():
    def script(body):
        a, _ = shown_answers(body)
        good_first = "good" in a
        lp = {"A": math.log(0.7), "B": math.log(0.2), "C": math.log(0.1)}
        if not good_first:
            lp = {"A": math.log(0.3), "B": math.log(0.6), "C": math.log(0.1)}
        return Scripted(text="[[A]]" if good_first else "[[B]]", verdict_logprobs=lp)

    with ScriptedJudgeServer(script) as server, OpenAIChat(base_url=server.base_url, model="j") as chat:
        verdict = judge_pairwise(chat, "Q?", "good answer", "bad answer", JudgeConfig())
    assert [c.source for c in verdict.calls] == ["logprobs", "logprobs"]
    assert verdict.calls[0].distribution == pytest.approx({"A": 0.7, "B": 0.2, "C": 0.1})
    # P(A) = (P_ab(first) + P_ba(second)) / 2 with ties counting half
    assert verdict.p_a == pytest.approx(((0.7 + 0.05) + (0.6 + 0.05)) / 2)
    assert verdict.verdict == "a" and verdict.consistent


def test_http_samples_give_frequencies_when_there_are_no_logprobs():
    answers = iter(["[[A]]", "[[A]]", "[[C]]", "[[B]]", "[[B]]", "[[B]]", "[[A]]", "nothing"])
    with (
        ScriptedJudgeServer(lambda body: next(answers)) as server,
        OpenAIChat(base_url=server.base_url, model="j") as c,
    ):
        verdict = judge_pairwise(c, "Q?", "x", "y", JudgeConfig(use_logprobs=False, samples=4))
    assert verdict.calls[0].distribution == pytest.approx({"A": 0.5, "C": 0.25, "B": 0.25})
    assert verdict.calls[1].distribution == pytest.approx({"B": 2 / 3, "A": 1 / 3})  # one unparseable sample
    assert {r["temperature"] for r in server.requests} == {0.7}
    assert len({r["seed"] for r in server.requests}) == 8
    assert "logprobs" not in server.requests[0]
    assert verdict.verdict == "a" and verdict.calls[0].source == "samples"


def test_http_garbage_is_an_error_and_a_time_out_is_transient():
    garbage = ScriptedJudgeServer(lambda body: "I refuse to pick one.")
    with garbage as server, OpenAIChat(base_url=server.base_url, model="j") as chat:
        verdict = judge_pairwise(chat, "Q?", "x", "y", JudgeConfig())
    assert verdict.verdict == "error" and verdict.p_a is None and verdict.confidence == 0
    assert "no verdict matched" in verdict.error
    assert verdict.calls[0].raw_output == "I refuse to pick one."
    slow = ScriptedJudgeServer(lambda body: Scripted(text="[[A]]", delay_s=3))
    with (
        slow as server,
        OpenAIChat(base_url=server.base_url, model="j", timeout_s=0.3) as chat,
        pytest.raises(TransientBackendError, match="timed out"),
    ):
        judge_pairwise(chat, "Q?", "x", "y", JudgeConfig())


def test_http_rating_uses_the_rubric_and_the_reference_answer():
    grader = ScriptedJudgeServer(lambda body: "Feedback: accurate and short. [RESULT] 4")
    aspect = {"name": "accuracy", "description": "Is it right?", "rubric": {"1": "wrong", "5": "exact"}}
    with grader as server, OpenAIChat(base_url=server.base_url, model="j") as chat:
        verdict = judge_rating(chat, "2+2?", "4", aspect, JudgeConfig(), reference_answer="REFERENCE-FOUR")
    prompt = server.requests[0]["messages"][-1]["content"]
    assert "REFERENCE-FOUR" in prompt and "Score 1: wrong" in prompt and "Score 5: exact" in prompt
    assert "###Response to evaluate:\n4" in prompt
    assert (verdict.score, verdict.feedback) == (4, "accurate and short.")


def test_http_ranking_is_resolved_from_pairwise_verdicts():
    def longer(body):
        a, b = shown_answers(body)
        return "[[A]]" if len(a) > len(b) else "[[B]]"

    with ScriptedJudgeServer(longer) as server, OpenAIChat(base_url=server.base_url, model="j") as chat:
        ranking = judge_ranking(chat, "Q?", ["mid size", "x", "the longest answer"], JudgeConfig())
    assert ranking.ranking == [[2], [0], [1]]
    assert len(server.requests) == 6 and len(ranking.calls) == 6


def test_tiny_local_judge_reads_verdict_logits(tiny_models):
    import torch

    from workers.ml.generation import CausalLM

    lm = CausalLM(tiny_models["tiny-lm-small"])
    config = JudgeConfig(templates={"pairwise_system_3": "Judge. Answer [[A]], [[B]] or [[C]]."})
    verdict = judge_pairwise(lm, "What is the capital of France?", "Paris.", "No idea.", config)
    assert verdict.verdict in ("a", "b", "tie") and 0 <= verdict.p_a <= 1
    for call in verdict.calls:
        assert call.source == "logprobs" and sum(call.distribution.values()) == pytest.approx(1.0)
    # the distribution is the softmax of each verdict's log-likelihood after the prompt: recompute one alone
    call = verdict.calls[0]
    prefix = lm.render(call.messages)
    logliks = {}
    for label in ("A", "B", "C"):
        prefix_ids = lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = lm.tokenizer(prefix + f"[[{label}]]", add_special_tokens=False)["input_ids"]
        start = 0
        while start < len(prefix_ids) and prefix_ids[start] == ids[start]:
            start += 1
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids])).logits.float().log_softmax(-1)[0]
        logliks[label] = sum(float(logits[t - 1, ids[t]]) for t in range(start, len(ids)))
    total = sum(math.exp(v) for v in logliks.values())
    assert call.distribution == pytest.approx({k: math.exp(v) / total for k, v in logliks.items()}, abs=1e-4)
    assert verdict.p_a == pytest.approx(combine_orders(verdict.calls[0].distribution, verdict.calls[1].distribution)[0])
    ab, ba = (c.messages[1]["content"] for c in verdict.calls)
    assert ab.index("Paris.") < ab.index("No idea.") and ba.index("No idea.") < ba.index("Paris.")


def test_tiny_local_rating_sees_the_reference(tiny_models):
    from workers.ml.generation import CausalLM

    lm = CausalLM(tiny_models["tiny-lm-small"])
    aspect = {"name": "helpfulness", "rubric": {"1": "useless", "5": "perfect"}}
    verdict = judge_rating(lm, "Q?", "answer", aspect, JudgeConfig(), reference_answer="REF-XYZ")
    assert verdict.score in range(1, 6) and 1 <= verdict.expected_score <= 5
    assert "REF-XYZ" in verdict.calls[0].messages[1]["content"]
