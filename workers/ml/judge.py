"""LLM-as-a-judge: pairwise verdicts in both orders, rubric ratings, rankings from pairwise comparisons.

Pure Python (torch only inside the transformers path, imported lazily); no Django. The backend is a
`workers.ml.generation.CausalLM` (local checkpoint), a `workers.ml.openai_backend.OpenAIChat`, or any other
object with CausalLM's `generate` (`workers.ml.vllm_engine.VLLMCausalLM`: sampled verdicts only).

Pairwise (MT-Bench, Zheng et al. 2023, "Judging LLM-as-a-Judge", §3.3 and Appendix A):
  the judge sees (A, B) and then (B, A); each call yields a distribution over verdicts of the
  presented order; mapped back to canonical A/B and averaged, which cancels a constant position bias.
  Verdicts are parsed from the LAST match of a strict pattern (`[[A]]` / `[[B]]` / `[[C]]`, or the
  Arena-Hard 5-way `[[A>>B]]` … `[[B>>A]]`). When the two orders disagree MT-Bench counts a tie; we do
  the same and halve the confidence.
  Where does the distribution come from?
    - transformers: the log-likelihood of each verdict string after the rendered prompt (one batched
      forward pass, no sampling), normalised over the verdicts;
    - OpenAI-compatible: `logprobs` / `top_logprobs` of the verdict token when the endpoint returns them;
    - otherwise `config.samples` sampled answers (their parsed verdicts' frequencies), or one answer.
Rating (Prometheus, Kim et al. 2023, absolute grading): "Feedback: … [RESULT] n", n in 1..5.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.ml.errors import PermanentBackendError
from workers.ml.openai_backend import OpenAIChat  # httpx only: no torch
from workers.ml.types import Prompt, SamplingParams, prompt_has_images

__all__ = [
    "DEFAULT_TEMPLATES",
    "JudgeCall",
    "JudgeConfig",
    "PairwiseVerdict",
    "RankingVerdict",
    "RatingVerdict",
    "combine_orders",
    "judge_pairwise",
    "judge_ranking",
    "judge_rating",
    "parse_pairwise",
    "parse_rating",
    "render_template",
]

# --- templates (defaults; campaigns may override any of them) ----------------------------------------
_PAIRWISE_SYSTEM_3 = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Avoid any position biases "
    "and ensure that the order in which the responses were presented does not influence your decision. Do not "
    "allow the length of the responses to influence your evaluation. Be as objective as possible. After "
    'providing your explanation, output your final verdict by strictly following this format: "[[A]]" if '
    'assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
_PAIRWISE_SYSTEM_5 = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Avoid any position biases and do not let the length of the responses "
    "influence your evaluation. After providing your explanation, output your final verdict by strictly "
    "following this format, with exactly one of these labels: "
    '"[[A>>B]]" (A is significantly better), "[[A>B]]" (A is slightly better), "[[A=B]]" (tie), '
    '"[[B>A]]" (B is slightly better), "[[B>>A]]" (B is significantly better).'
)
_PAIRWISE_USER = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
_RATING_USER = (
    "###Task Description:\n"
    "An instruction (might include an Input inside it), a response to evaluate, a reference answer that gets a "
    "score of 5, and a score rubric representing a evaluation criteria are given.\n"
    "1. Write a detailed feedback that assess the quality of the response strictly based on the given score "
    "rubric, not evaluating in general.\n"
    "2. After writing a feedback, write a score that is an integer between 1 and 5. You should refer to the "
    "score rubric.\n"
    '3. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] '
    '(an integer number between 1 and 5)"\n'
    "4. Please do not generate any other opening, closing, and explanations.\n\n"
    "###The instruction to evaluate:\n{instruction}\n\n"
    "###Response to evaluate:\n{response}\n\n"
    "###Reference Answer (Score 5):\n{reference_answer}\n\n"
    "###Score Rubrics:\n{rubric}\n\n"
    "###Feedback: "
)
_RATING_SYSTEM = (
    "You are a fair judge assistant tasked with providing clear, objective feedback based on specific criteria."
)

DEFAULT_TEMPLATES: dict[str, str] = {
    "pairwise_system_3": _PAIRWISE_SYSTEM_3,
    "pairwise_system_5": _PAIRWISE_SYSTEM_5,
    "pairwise_user": _PAIRWISE_USER,
    "rating_system": _RATING_SYSTEM,
    "rating_user": _RATING_USER,
}
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "pairwise_system_3": (),
    "pairwise_system_5": (),
    "pairwise_user": ("question", "answer_a", "answer_b"),
    "rating_system": (),
    "rating_user": ("instruction", "response", "reference_answer", "rubric"),
}

# Verdict labels in the presented order ("first" is the response shown as A).
VERDICTS_3 = {"A": "first", "B": "second", "C": "tie"}
VERDICTS_5 = {"A>>B": "first", "A>B": "first", "A=B": "tie", "B>A": "second", "B>>A": "second"}
# P(first better) contributed by each label: ties count half.
_P_FIRST_5 = {"A>>B": 1.0, "A>B": 0.75, "A=B": 0.5, "B>A": 0.25, "B>>A": 0.0}
_P_FIRST_3 = {"A": 1.0, "B": 0.0, "C": 0.5}
_PATTERN_3 = re.compile(r"\[\[([ABC])\]\]")
_PATTERN_5 = re.compile(r"\[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]")
_RESULT = re.compile(r"\[RESULT\]\s*\(?([1-5])\)?(?![0-9.])")


@dataclass(frozen=True)
class JudgeConfig:
    """How to judge. Every field is stored with each call (`JudgeCall.params`)."""

    scale: int = 3  # 3: A / B / tie ([[A]] [[B]] [[C]]); 5: A>>B … B>>A (Arena-Hard labels)
    use_logprobs: bool = True  # verdict distribution from token log-probabilities where the backend has them
    samples: int = 1  # without log-probabilities: sampled answers per order (frequencies → probabilities)
    temperature: float = 0.0  # 0 = greedy; raised to 0.7 automatically when samples > 1 and this is 0
    max_new_tokens: int = 512  # cap on the judge's answer (explanation + verdict)
    seed: int = 0  # base seed of sampled answers
    templates: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_TEMPLATES by key
    top_logprobs: int = 5  # OpenAI: alternatives per token to ask for

    def template(self, key: str) -> str:
        return self.templates.get(key) or DEFAULT_TEMPLATES[key]

    def as_params(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "use_logprobs": self.use_logprobs,
            "samples": self.samples,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass
class JudgeCall:
    """One request to the judge, kept verbatim for audit (stored as a `workers.JudgeCall` row)."""

    kind: str  # "pairwise" | "rating"
    order: str  # pairwise: "ab" (canonical order) or "ba" (swapped); rating: the aspect name
    prompt_hash: str  # sha256 of the rendered messages (JSON), so identical prompts are recognisable
    messages: list[dict[str, Any]]
    raw_output: str
    parsed: str  # pairwise: label in presented order ("A", "A>B", …) or "error"; rating: "1".."5" or "error"
    distribution: dict[str, float]  # label → probability (presented order)
    source: str  # where the distribution came from: "logprobs" | "samples" | "single" | "none"
    model: str
    params: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    error: str = ""


@dataclass
class PairwiseVerdict:
    """The verdict on one pair, canonical terms: "a" is `response_a` whatever order it was shown in."""

    p_a: float | None  # P(A better), ties counting half, averaged over both orders; None on error
    verdict: str  # "a" | "b" | "tie" | "error"
    consistent: bool  # both orders agree (after mapping back to canonical)
    confidence: float  # probability mass of the verdict, halved when the orders disagree; 0 on error
    order_verdicts: list[str]  # per call, in presented terms: "first" | "second" | "tie" | "error"
    calls: list[JudgeCall]
    strength: str = ""  # 5-way scale: "clear" (>>) or "slight" (>)
    error: str = ""

    @property
    def first_position_wins(self) -> list[bool]:
        """Per order with a non-tie verdict: did the judge pick the response shown first?"""
        return [v == "first" for v in self.order_verdicts if v in ("first", "second")]


@dataclass
class RatingVerdict:
    score: int | None  # 1..5, None when unparseable
    expected_score: float | None  # mean under the verdict distribution (log-probabilities), else = score
    feedback: str
    calls: list[JudgeCall]
    error: str = ""


@dataclass
class RankingVerdict:
    ranking: list[list[int]]  # groups of positions, best first; positions in one group are tied
    scores: list[float]  # sum over opponents of P(i better than j)
    pairs: dict[tuple[int, int], PairwiseVerdict]
    errors: int = 0
    calls: list[JudgeCall] = field(default_factory=list)


# --- small pure helpers -----------------------------------------------------------------------------------
_FIELD = re.compile(r"\{([a-z_]+)\}")


def render_template(template: str, **values: str) -> str:
    """Replace `{name}` for the given names only; other braces (code in a question) are left alone."""
    return _FIELD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def prompt_hash(messages: list[dict[str, Any]]) -> str:
    import json

    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ImageAnswer:
    """An image response for a judge that sees images (a VLM behind an OpenAI-compatible endpoint): sent as an
    `image_url` part holding its data URI; audited (`JudgeCall.messages`) by its reference `sha256:<hex>`."""

    data_uri: str
    reference: str
    caption: str = ""


Answer = str | ImageAnswer


def has_images(*answers: Answer) -> bool:
    return any(isinstance(answer, ImageAnswer) for answer in answers)


def messages_for_audit(
    messages: list[dict[str, Any]], answers: Sequence[Answer], prompt_images: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The messages with each image's data URI replaced by its `sha256:` reference (no megabytes per call row):
    the answers' images and the prompt's (`prompt_images`: reference → data URI)."""
    by_uri = {a.data_uri: a.reference for a in answers if isinstance(a, ImageAnswer)}
    by_uri.update({uri: ref for ref, uri in (prompt_images or {}).items()})
    if not by_uri:
        return messages
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": by_uri.get(part["image_url"]["url"], "data:…")}}
                if part.get("type") == "image_url"
                else part
                for part in content
            ]
        out.append({**message, "content": content})
    return out


def _question_text(prompt: Prompt) -> str:
    """The prompt as the text a template quotes; a message's image parts are left out (see `_question_parts`)."""
    if isinstance(prompt, str):
        return prompt
    return "".join(part["text"] for part in _question_parts(prompt, None) if part["type"] == "text")


def _question_parts(prompt: Prompt, prompt_images: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """The prompt as content parts: "role: text" per message (blank lines between them), each image where its
    message holds it, as an `image_url` part whose URL is the image's data URI from `prompt_images` (reference
    → data URI; None: images are skipped)."""
    if isinstance(prompt, str):
        return [{"type": "text", "text": prompt}]
    parts: list[dict[str, Any]] = []
    for number, message in enumerate(prompt):
        content = message.get("content", "")
        text = f"{chr(10) * 2 if number else ''}{message.get('role', 'user')}: "
        pieces = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
        for piece in pieces:
            if not isinstance(piece, dict):
                continue
            if piece.get("type") == "text":
                text += str(piece.get("text", ""))
            elif piece.get("type") == "image_url" and prompt_images is not None:
                image_url = piece.get("image_url")
                reference = str(image_url.get("url", "") if isinstance(image_url, dict) else "")
                if reference not in prompt_images:
                    raise PermanentBackendError(f"the prompt's image {reference[:80]} was not given to the judge")
                parts.append({"type": "text", "text": text})
                parts.append({"type": "image_url", "image_url": {"url": prompt_images[reference]}})
                text = ""
        parts.append({"type": "text", "text": text})
    return [part for part in parts if part["type"] != "text" or part["text"]]


_QUESTION_SLOT = "\x00question\x00"  # where the prompt goes in a rendered template that holds its images


def _user_content(
    template: str, field_name: str, prompt: Prompt, prompt_images: Mapping[str, str] | None, **values: str
) -> str | list[dict[str, Any]]:
    """A user message's content from a template: text, or (a prompt with images) content parts with the
    prompt's images at the place of the `{field_name}` field, inside the prompt's own text."""
    question = _question_parts(prompt, prompt_images or {})
    if all(part["type"] == "text" for part in question):
        return render_template(template, **{field_name: _question_text(prompt)}, **values)
    rendered = render_template(template, **{field_name: _QUESTION_SLOT}, **values)
    parts: list[dict[str, Any]] = []
    for number, piece in enumerate(rendered.split(_QUESTION_SLOT)):
        if number:
            parts.extend(question)
        parts.append({"type": "text", "text": piece})
    merged: list[dict[str, Any]] = []  # adjacent text parts as one
    for part in parts:
        if part["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = {"type": "text", "text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(part)
    return [part for part in merged if part["type"] != "text" or part["text"]]


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _images_check(backend: Any, prompt: Prompt, *answers: Answer) -> None:
    if has_images(*answers) and not _is_endpoint(backend):
        raise PermanentBackendError("image responses need a judge behind an endpoint that accepts images")
    if prompt_has_images(prompt) and not _is_endpoint(backend):
        raise PermanentBackendError("a prompt that holds images needs a judge behind an endpoint that accepts images")


def parse_pairwise(text: str, scale: int = 3) -> str | None:
    """The label of the LAST strict match (`[[A]]` …), or None. Earlier matches are explanation text."""
    pattern = _PATTERN_5 if scale == 5 else _PATTERN_3
    matches = pattern.findall(text or "")
    return matches[-1] if matches else None


def parse_rating(text: str) -> int | None:
    """The score of the LAST `[RESULT] n` (n in 1..5), or None."""
    matches = _RESULT.findall(text or "")
    return int(matches[-1]) if matches else None


def _labels(scale: int) -> dict[str, str]:
    if scale not in (3, 5):
        raise PermanentBackendError(f"judge scale must be 3 or 5, not {scale!r}")
    return VERDICTS_5 if scale == 5 else VERDICTS_3


def _verdict_string(label: str) -> str:
    return f"[[{label}]]"


def _p_first(distribution: dict[str, float], scale: int) -> float:
    weights = _P_FIRST_5 if scale == 5 else _P_FIRST_3
    total = sum(distribution.values())
    return sum(weights[k] * v for k, v in distribution.items()) / total if total > 0 else 0.5


def _outcome_probs(distribution: dict[str, float], scale: int) -> dict[str, float]:
    """{first, second, tie} probabilities of one call."""
    labels = _labels(scale)
    out = {"first": 0.0, "second": 0.0, "tie": 0.0}
    total = sum(distribution.values()) or 1.0
    for label, p in distribution.items():
        out[labels[label]] += p / total
    return out


def combine_orders(
    ab: dict[str, float] | None, ba: dict[str, float] | None, scale: int = 3
) -> tuple[float | None, str, bool, float, str]:
    """(p_a, verdict, consistent, confidence, strength) from the two calls' label distributions.

    `ab` was asked with A shown first, `ba` with B shown first. Either None (unparseable) → error.
    P(A) = (P_ab(first) + P_ba(second)) / 2, ties counting half: a judge that always prefers the
    first position then lands on 0.5 instead of on a side.
    """
    if ab is None or ba is None or not ab or not ba:
        return None, "error", False, 0.0, ""
    o1, o2 = _outcome_probs(ab, scale), _outcome_probs(ba, scale)
    canonical = {
        "a": (o1["first"] + o2["second"]) / 2,
        "b": (o1["second"] + o2["first"]) / 2,
        "tie": (o1["tie"] + o2["tie"]) / 2,
    }
    p_a = (_p_first(ab, scale) + 1.0 - _p_first(ba, scale)) / 2
    top1 = {"first": "a", "second": "b", "tie": "tie"}[max(o1, key=o1.__getitem__)]
    top2 = {"first": "b", "second": "a", "tie": "tie"}[max(o2, key=o2.__getitem__)]
    consistent = top1 == top2
    if consistent:
        verdict = top1
        confidence = canonical[verdict]
    else:  # MT-Bench: inconsistent verdicts across orders count as a tie; we trust them half as much
        verdict = "tie"
        confidence = 0.5 * max(canonical.values())
    strength = ""
    if scale == 5 and verdict in ("a", "b"):
        strong = (ab.get("A>>B", 0) + ba.get("B>>A", 0)) if verdict == "a" else (ab.get("B>>A", 0) + ba.get("A>>B", 0))
        weak = (ab.get("A>B", 0) + ba.get("B>A", 0)) if verdict == "a" else (ab.get("B>A", 0) + ba.get("A>B", 0))
        strength = "clear" if strong >= weak else "slight"
    return p_a, verdict, consistent, float(confidence), strength


# --- backends -----------------------------------------------------------------------------------------------
def _is_local(backend: Any) -> bool:
    """A transformers model whose logits can be read (verdict log-likelihoods)."""
    return hasattr(backend, "tokenizer") and hasattr(backend, "model")


def _is_endpoint(backend: Any) -> bool:
    return isinstance(backend, OpenAIChat)


def _backend_name(backend: Any) -> str:
    if _is_local(backend):
        return str(getattr(backend.model, "name_or_path", "") or "local")
    if _is_endpoint(backend):
        return str(backend.model)
    return str(getattr(backend, "name_or_path", "") or "local")


def _local_candidate_logprobs(backend: Any, messages: list[dict[str, str]], candidates: list[str]) -> list[float]:
    """Sum of token log-probabilities of each candidate continuation after the rendered prompt.

    One forward pass over [prompt + candidate] for all candidates (right-padded); the log-probability
    of candidate token t_k is log_softmax(logits[k-1])[t_k], summed over the candidate's tokens.
    """
    import torch

    tokenizer = backend.tokenizer
    prefix = backend.render(messages)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    rows, spans = [], []
    for candidate in candidates:
        full = tokenizer(prefix + candidate, add_special_tokens=False)["input_ids"]
        # BPE may merge across the boundary; the candidate starts where the shared prefix ends.
        start = 0
        while start < min(len(prefix_ids), len(full)) and prefix_ids[start] == full[start]:
            start += 1
        start = max(1, start)
        rows.append(full)
        spans.append((start, len(full)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.inference_mode():
        logits = backend.model(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [C, T, V]
    totals = []
    for i, (start, end) in enumerate(spans):
        positions = torch.arange(start, end, device=logprobs.device)
        targets = ids[i, start:end].to(logprobs.device)
        totals.append(float(logprobs[i, positions - 1, targets].sum()))
    return totals


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _local_generate(backend: Any, messages: list[dict[str, str]], config: JudgeConfig, seed: int) -> Any:
    temperature = config.temperature if config.samples <= 1 or config.temperature > 0 else 0.7
    params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=temperature, top_p=1.0)
    return backend.generate([messages], [seed], params)[0]


def _openai_request(
    backend: Any, messages: list[dict[str, Any]], config: JudgeConfig, seed: int, logprobs: bool
) -> tuple[str, int, int, list[dict[str, Any]] | None]:
    """One chat completion with the client's pool and error mapping; (text, prompt/completion tokens, logprobs)."""
    temperature = config.temperature if config.samples <= 1 or config.temperature > 0 else 0.7
    body: dict[str, Any] = {
        "model": backend.model,
        "messages": messages,
        "max_tokens": config.max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "n": 1,
        "stream": False,
    }
    if logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = config.top_logprobs
    with backend._transport_errors():
        response = backend._client.post(
            f"{backend.base_url}/chat/completions", json=body, headers={"Accept": "application/json"}
        )
    backend._status_check(response)
    payload = backend._json_object(response)
    completion = backend._completion_from_body(payload, response.text)
    content = None
    choices = payload.get("choices") or []
    if choices and isinstance(choices[0], dict) and isinstance(choices[0].get("logprobs"), dict):
        content = choices[0]["logprobs"].get("content")
        if not isinstance(content, list):
            content = None
    return completion.text, completion.prompt_tokens, completion.completion_tokens, content


def _openai_verdict_distribution(
    text: str, token_logprobs: list[dict[str, Any]], scale: int, label: str
) -> dict[str, float] | None:
    """3-way scale: the verdict letter of the last `[[X]]` is one token; its top_logprobs give P(A/B/C).

    Walks the tokens to the character offset of the last match's letter. Returns None when the letter
    is not a token of its own or the alternatives are missing (then the parsed label is used alone).
    """
    if scale != 3:
        return None
    match = list(_PATTERN_3.finditer(text))[-1]
    target = match.start(1)
    offset = 0
    for entry in token_logprobs:
        token = entry.get("token", "") if isinstance(entry, dict) else ""
        if offset <= target < offset + len(token):
            if token.strip() != label:
                return None
            alternatives = entry.get("top_logprobs") or [{"token": token, "logprob": entry.get("logprob", 0.0)}]
            probs: dict[str, float] = {}
            for alt in alternatives:
                name = str(alt.get("token", "")).strip()
                if name in VERDICTS_3 and isinstance(alt.get("logprob"), int | float):
                    probs[name] = probs.get(name, 0.0) + math.exp(alt["logprob"])
            if label not in probs:
                probs[label] = (
                    math.exp(entry.get("logprob", 0.0)) if isinstance(entry.get("logprob"), int | float) else 1
                )
            total = sum(probs.values())
            return {k: v / total for k, v in probs.items()} if total > 0 else None
        offset += len(token)
    return None


def _judge_call(
    backend: Any,
    messages: list[dict[str, Any]],
    config: JudgeConfig,
    *,
    kind: str,
    order: str,
    labels: list[str],
    to_string: Any,
    parse: Any,
    seed: int,
    audit: list[dict[str, Any]] | None = None,
) -> JudgeCall:
    """One logical judge call: a label distribution from log-probabilities, samples, or one answer.
    `audit`: the messages as recorded (images by reference) when they differ from those sent."""
    started = time.perf_counter()
    recorded = messages if audit is None else audit
    call = JudgeCall(
        kind=kind,
        order=order,
        prompt_hash=prompt_hash(recorded),
        messages=recorded,
        raw_output="",
        parsed="error",
        distribution={},
        source="none",
        model=_backend_name(backend),
        params=config.as_params(),
    )
    if _is_local(backend) and config.use_logprobs:
        scores = _local_candidate_logprobs(backend, messages, [to_string(label) for label in labels])
        probs = _softmax(scores)
        call.distribution = dict(zip(labels, probs, strict=True))
        best = labels[max(range(len(labels)), key=lambda i: probs[i])]
        call.raw_output, call.parsed, call.source = to_string(best), best, "logprobs"
        call.prompt_tokens = len(backend.tokenizer(backend.render(messages), add_special_tokens=False)["input_ids"])
        call.completion_tokens = 0  # scored, not generated
        call.latency_ms = int((time.perf_counter() - started) * 1000)
        return call
    outputs: list[str] = []
    counts: dict[str, float] = {}
    for sample in range(max(1, config.samples)):
        if not _is_endpoint(backend):
            completion = _local_generate(backend, messages, config, seed + sample)
            text, token_logprobs = completion.text, None
            call.prompt_tokens += completion.prompt_tokens
            call.completion_tokens += completion.completion_tokens
        else:
            text, n_prompt, n_completion, token_logprobs = _openai_request(
                backend, messages, config, seed + sample, logprobs=config.use_logprobs
            )
            call.prompt_tokens += n_prompt
            call.completion_tokens += n_completion
        outputs.append(text)
        label = parse(text)
        if label is None:
            continue
        if token_logprobs and sample == 0 and kind == "pairwise":
            distribution = _openai_verdict_distribution(text, token_logprobs, config.scale, label)
            if distribution:
                call.distribution, call.source, call.parsed = distribution, "logprobs", label
                break
        counts[label] = counts.get(label, 0.0) + 1.0
    call.raw_output = outputs[0] if len(outputs) == 1 else "\n\n--- sample ---\n\n".join(outputs)
    if call.source != "logprobs":
        if counts:
            total = sum(counts.values())
            call.distribution = {k: v / total for k, v in counts.items()}
            call.parsed = max(counts, key=counts.__getitem__)
            call.source = "samples" if len(outputs) > 1 else "single"
        else:
            call.error = "no verdict matched the required format"
    call.latency_ms = int((time.perf_counter() - started) * 1000)
    return call


# --- public entry points --------------------------------------------------------------------------------------
def _pairwise_messages(
    prompt: Prompt,
    first: Answer,
    second: Answer,
    config: JudgeConfig,
    prompt_images: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    system = config.template("pairwise_system_5" if config.scale == 5 else "pairwise_system_3")
    template = config.template("pairwise_user")
    if isinstance(first, str) and isinstance(second, str):
        user = _user_content(template, "question", prompt, prompt_images, answer_a=first, answer_b=second)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    # Images: the same template, each answer named in its place and sent after the text as an image_url part
    # (OpenAI's vision message format), in the presented order.
    placeholders = {
        "answer_a": "(the image labelled Assistant A below)",
        "answer_b": "(the image labelled Assistant B below)",
    }
    parts = _as_parts(_user_content(template, "question", prompt, prompt_images, **placeholders))
    for label, answer in (("A", first), ("B", second)):
        if isinstance(answer, ImageAnswer):
            caption = f" (caption: {answer.caption})" if answer.caption else ""
            parts.append({"type": "text", "text": f"Assistant {label}'s image{caption}:"})
            parts.append({"type": "image_url", "image_url": {"url": answer.data_uri}})
        else:
            parts.append({"type": "text", "text": f"Assistant {label}'s answer:\n{answer}"})
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]


def judge_pairwise(
    backend: Any,
    prompt: Prompt,
    response_a: Answer,
    response_b: Answer,
    config: JudgeConfig | None = None,
    prompt_images: Mapping[str, str] | None = None,
) -> PairwiseVerdict:
    """Judge (A, B) and (B, A); combine into a position-debiased verdict. Backend errors propagate
    (TransientBackendError / PermanentBackendError); unparseable answers give verdict "error".

    Image answers (`ImageAnswer`) and prompts holding images (their `image_url` parts name `sha256:<hex>`
    references, `prompt_images` maps each to its data URI) need an OpenAI-compatible endpoint that accepts
    image content; the calls record the references."""
    config = config or JudgeConfig()
    _images_check(backend, prompt, response_a, response_b)
    labels = list(_labels(config.scale))
    calls = []
    for order, (first, second) in (("ab", (response_a, response_b)), ("ba", (response_b, response_a))):
        messages = _pairwise_messages(prompt, first, second, config, prompt_images)
        calls.append(
            _judge_call(
                backend,
                messages,
                config,
                audit=messages_for_audit(messages, [first, second], prompt_images),
                kind="pairwise",
                order=order,
                labels=labels,
                to_string=_verdict_string,
                parse=lambda text: parse_pairwise(text, config.scale),
                seed=config.seed + (0 if order == "ab" else 1000),
            )
        )
    ab, ba = (c.distribution if c.parsed != "error" else None for c in calls)
    p_a, verdict, consistent, confidence, strength = combine_orders(ab, ba, config.scale)
    names = _labels(config.scale)
    order_verdicts = [names[c.parsed] if c.parsed != "error" else "error" for c in calls]
    error = "; ".join(f"order {c.order}: {c.error}" for c in calls if c.error)
    return PairwiseVerdict(
        p_a=p_a,
        verdict=verdict,
        consistent=consistent,
        confidence=confidence,
        order_verdicts=order_verdicts,
        calls=calls,
        strength=strength,
        error=error,
    )


def _rubric_text(aspect: dict[str, Any]) -> str:
    lines = [f"[{aspect.get('name', 'quality')}: {aspect.get('description', '')}]".replace(": ]", "]")]
    rubric = aspect.get("rubric") or {}
    for score in range(1, 6):
        if str(score) in rubric:
            lines.append(f"Score {score}: {rubric[str(score)]}")
    return "\n".join(lines)


def judge_rating(
    backend: Any,
    prompt: Prompt,
    response: str,
    aspect: dict[str, Any],
    config: JudgeConfig | None = None,
    reference_answer: str | None = None,
    prompt_images: Mapping[str, str] | None = None,
) -> RatingVerdict:
    """Prometheus-style absolute grading of one response on one aspect: score 1..5 with feedback.
    A prompt's images as for `judge_pairwise`."""
    config = config or JudgeConfig()
    _images_check(backend, prompt)
    user = _user_content(
        config.template("rating_user"),
        "instruction",
        prompt,
        prompt_images,
        response=response,
        reference_answer=reference_answer or "(no reference answer given)",
        rubric=_rubric_text(aspect),
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": config.template("rating_system")},
        {"role": "user", "content": user},
    ]
    labels = [str(n) for n in range(1, 6)]
    call = _judge_call(
        backend,
        messages,
        config,
        audit=messages_for_audit(messages, [], prompt_images),
        kind="rating",
        order=str(aspect.get("name", "")),
        labels=labels,
        to_string=lambda label: f"[RESULT] {label}",
        parse=lambda text: str(s) if (s := parse_rating(text)) is not None else None,
        seed=config.seed,
    )
    if call.parsed == "error":
        return RatingVerdict(score=None, expected_score=None, feedback=call.raw_output, calls=[call], error=call.error)
    expected = sum(int(k) * v for k, v in call.distribution.items())
    feedback = call.raw_output.split("[RESULT]")[0].strip().removeprefix("Feedback:").strip()
    return RatingVerdict(score=int(call.parsed), expected_score=expected, feedback=feedback, calls=[call])


def judge_ranking(
    backend: Any,
    prompt: Prompt,
    responses: Sequence[str],
    config: JudgeConfig | None = None,
    tie_margin: float = 0.05,
    prompt_images: Mapping[str, str] | None = None,
) -> RankingVerdict:
    """Rank N responses from all pairwise verdicts (each in both orders): score_i = Σ_j P(i > j)
    (a Borda count over win probabilities); scores within `tie_margin` of each other share a group.
    A prompt's images as for `judge_pairwise`."""
    config = config or JudgeConfig()
    n = len(responses)
    scores = [0.0] * n
    pairs: dict[tuple[int, int], PairwiseVerdict] = {}
    calls: list[JudgeCall] = []
    errors = 0
    for i in range(n):
        for j in range(i + 1, n):
            verdict = judge_pairwise(backend, prompt, responses[i], responses[j], config, prompt_images)
            pairs[(i, j)] = verdict
            calls.extend(verdict.calls)
            p = verdict.p_a if verdict.p_a is not None else 0.5
            errors += verdict.p_a is None
            scores[i] += p
            scores[j] += 1.0 - p
    order = sorted(range(n), key=lambda k: (-scores[k], k))
    groups: list[list[int]] = []
    for position in order:
        if groups and scores[groups[-1][0]] - scores[position] <= tie_margin:
            groups[-1].append(position)
        else:
            groups.append([position])
    return RankingVerdict(ranking=groups, scores=scores, pairs=pairs, errors=errors, calls=calls)
