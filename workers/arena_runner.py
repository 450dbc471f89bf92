"""Live arena battles on the gpu queue: generate both responses and stream them to the battle's page.

Both sides run at once, each in its own thread, and both stream: a local model through transformers'
TextIteratorStreamer (whatever its registered engine: vLLM's offline engine yields no partial text), an
OpenAI-compatible endpoint through a streamed chat completion whose deltas arrive by callback. Neither
side's timing says which one started first, and neither kind of model shows by arriving in one piece.
The threads never touch the database or the channel layer: they put (side, cumulative text) into a
queue, and this thread relays the latest text of each side to the battle's Channels group at most every
`SEND_INTERVAL_S` — a page that joins late catches up with the next message, because every message
carries the whole text so far. Messages carry a side ("a"/"b") and text only: never a model name, a
label or a path.

When both sides are finished the texts (or the error) are stored by `arena.services.battle_responses_store`,
which ignores a duplicate delivery; the final message tells the page it may vote.

Two sides that answer the same text (`prefarena.text.comparable`) are kept as they are, and logged: the
visitor has watched both arrive, and regenerating one side would swap that model's answer for one chosen
for being different (a greedy model cannot even give another). Such a battle stays votable: its vote still
rates the pair (a tie is the honest answer), and the arena item the vote files has two equal responses
(generation jobs never make such items: workers/runners.py).

torch and transformers are imported inside the functions: the web process imports workers.tasks.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from arena import selectors
from arena.models import Battle, BattleStatus
from arena.services import SideSpeed, battle_images_store, battle_responses_store
from models_hub.models import Model, ModelBackend, ModelKind
from prefarena import rendering
from prefarena.text import comparable
from workers.runtime import generator_for, image_generator_for, sampling_params

logger = logging.getLogger(__name__)
SEND_INTERVAL_S = 0.05  # at most ~20 messages per second per battle; text in between is coalesced
# A side's text is re-rendered to HTML (Markdown + highlighting + sanitiser, ~25 ms for 5 KB) at most every
# RENDER_INTERVAL_S, and never more often than RENDER_BUDGET times its last rendering's cost, so rendering a
# long answer takes at most ~1/RENDER_BUDGET of a core. Between renders the page shows the last HTML followed by
# the text after its `html_chars` characters, as plain text.
RENDER_INTERVAL_S = 0.25
RENDER_BUDGET = 10.0
STREAM_TIMEOUT_S = 300.0  # a local model that yields no text for this long is treated as hung


@dataclass
class SideResult:
    text: str = ""
    error: str = ""
    finished: bool = False
    # perf_counter() readings: generation started (model loaded), first text seen, generation ended
    started_at: float | None = None
    first_text_at: float | None = None
    ended_at: float | None = None
    tokens: int | None = None  # generated tokens (an endpoint's usage, or its estimate when it reports none)

    def speed(self) -> SideSpeed | None:
        """Time to first text and tokens per second after it; None for a failed side."""
        if self.error or self.started_at is None or self.first_text_at is None or self.ended_at is None:
            return None
        decoding = self.ended_at - self.first_text_at
        rate = (self.tokens - 1) / decoding if self.tokens is not None and self.tokens >= 2 and decoding > 0 else None
        return SideSpeed(1000.0 * (self.first_text_at - self.started_at), self.tokens, rate)


def battle_seed(battle_id: int, side: str, model: Model) -> int:
    """A per-battle, per-side seed: the same battle regenerates the same text on a redelivery."""
    digest = hashlib.sha256(f"{battle_id}:{side}:{model.seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def stream_generate(lm: Any, prompt: Any, seed: int, params: Any, on_text: Callable[[str], None]) -> tuple[str, int]:
    """Generate one response with a loaded `workers.ml.generation.CausalLM`, calling `on_text(text so far)`
    as text arrives; returns the final text and its number of generated tokens (up to EOS).

    Sampling is `CausalLM.generate`'s: the same SeededSampler (Gumbel-max noise from a hash of seed,
    step and token), one row, stop at EOS, so the result equals `lm.generate([prompt], [seed], params)`.
    """
    import torch
    from transformers import LogitsProcessorList, TextIteratorStreamer

    from workers.ml.generation import SeededSampler

    encoded = lm.tokenizer([lm.render(prompt)], return_tensors="pt", add_special_tokens=False).to(lm.device)
    prompt_length = encoded["input_ids"].shape[1]
    sampler = SeededSampler([seed], params, prompt_length, lm.model.config.vocab_size, lm.device)
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.inference_mode():
                outcome["ids"] = lm.model.generate(
                    **encoded,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    logits_processor=LogitsProcessorList([sampler]),
                    pad_token_id=lm.tokenizer.pad_token_id,
                    eos_token_id=sorted(lm.eos_ids),
                    streamer=streamer,
                )
        except Exception as exc:  # handed to the caller below; the streamer must still end
            outcome["error"] = exc
            streamer.end()

    thread = threading.Thread(target=run, name="arena-generate", daemon=True)
    thread.start()
    text = ""
    for chunk in streamer:  # raises queue.Empty after STREAM_TIMEOUT_S of silence
        if chunk:
            text += chunk
            on_text(text)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    ids = outcome["ids"][0, prompt_length:].tolist()
    stop = next((i for i, token in enumerate(ids) if token in lm.eos_ids), None)
    kept = ids if stop is None else ids[:stop]
    return lm.tokenizer.decode(kept, skip_special_tokens=True), len(kept)


def _side_run(
    side: str, model: Model, generator: Any, prompt: Any, seed: int, outbox: queue.Queue, result: SideResult
) -> None:
    params = sampling_params(model, max_new_tokens=None, temperature=None, top_p=None)

    def on_text(text: str) -> None:
        if result.first_text_at is None and text:
            result.first_text_at = time.perf_counter()
        outbox.put((side, text))

    result.started_at = time.perf_counter()
    try:
        if model.backend == ModelBackend.TRANSFORMERS:
            result.text, result.tokens = stream_generate(generator, prompt, seed, params, on_text)
        else:
            parts: list[str] = []

            def on_delta(delta: str) -> None:
                parts.append(delta)
                on_text("".join(parts))  # the text so far, as a local side sends it

            try:
                completion = generator.generate_streaming(prompt, seed, params, on_delta)
                result.text, result.tokens = completion.text, completion.completion_tokens
            finally:
                generator.close()
        result.ended_at = time.perf_counter()
    except Exception as exc:
        result.error = f"{model.label}: {type(exc).__name__}: {exc}"
        logger.warning("arena battle side %s (%s) failed", side, model.label, exc_info=True)
    finally:
        result.finished = True
        outbox.put((side, None))  # wakes the relay loop


def _send(battle_id: int, event: dict[str, Any]) -> None:
    """Relay one event to the battle's group; a failing channel layer never fails the battle."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(selectors.battle_group(battle_id), event)
    except Exception:
        logger.warning("arena battle %s: broadcast failed", battle_id, exc_info=True)


def battle_generate_run(battle_id: int) -> Battle | None:
    """Generate, stream and store both responses of a live battle (a no-op if they are stored already)."""
    battle = Battle.objects.select_related("model_a", "model_b", "prompt").filter(pk=battle_id).first()
    if battle is None or battle.status != BattleStatus.GENERATING:
        return battle
    sides = {"a": battle.model_a, "b": battle.model_b}
    if any(model.kind == ModelKind.IMAGE for model in sides.values()):
        return images_generate_run(battle, sides)
    results = {side: SideResult() for side in sides}
    try:
        # Loaded here, one after the other: the runtime's model cache is not thread-safe. Local models stream
        # through transformers' own generate (stream_generate), so they are loaded as transformers models.
        generators = {side: generator_for(model, engine="hf") for side, model in sides.items()}
    except Exception as exc:
        logger.warning("arena battle %s: cannot load a model", battle_id, exc_info=True)
        stored = battle_responses_store(battle_id=battle_id, text_a="", text_b="", error=f"{type(exc).__name__}: {exc}")
        _send(battle_id, {"type": "battle.status", "status": stored.status, "a": None, "b": None})
        return stored

    outbox: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(
            target=_side_run,
            args=(side, model, generators[side], battle.prompt.content, battle_seed(battle_id, side, model), outbox),
            kwargs={"result": results[side]},
            name=f"arena-{battle_id}-{side}",
            daemon=True,
        )
        for side, model in sides.items()
    ]
    for thread in threads:
        thread.start()
    latest: dict[str, str] = {}
    sent: dict[str, str] = {}
    next_render: dict[str, float] = {}
    while True:
        try:
            side, text = outbox.get(timeout=SEND_INTERVAL_S)
            if text is not None:
                latest[side] = text
            while True:  # drain: only the newest text of each side matters
                side, text = outbox.get_nowait()
                if text is not None:
                    latest[side] = text
        except queue.Empty:
            pass
        for side, text in latest.items():
            if sent.get(side) != text and not results[side].finished:
                event: dict[str, Any] = {"type": "battle.text", "side": side, "text": text, "done": False}
                started = time.monotonic()
                if started >= next_render.get(side, 0.0):
                    event["html"], event["html_chars"] = rendering.text_to_html(text), len(text)
                    cost = time.monotonic() - started
                    next_render[side] = started + max(RENDER_INTERVAL_S, RENDER_BUDGET * cost)
                _send(battle_id, event)
                sent[side] = text
        if all(result.finished for result in results.values()):
            break
        time.sleep(SEND_INTERVAL_S)
    for thread in threads:
        thread.join()

    error = "; ".join(f"{side}: {r.error}" for side, r in results.items() if r.error)
    stored = battle_responses_store(
        battle_id=battle_id,
        text_a=results["a"].text,
        text_b=results["b"].text,
        error=error,
        speed={side: result.speed() for side, result in results.items()},
    )
    texts = selectors.battle_texts(battle_id)  # what is stored (a duplicate delivery may have stored first)
    if texts["status"] == BattleStatus.ERROR:
        _send(battle_id, {"type": "battle.status", "status": "error", "a": None, "b": None})
    else:
        if comparable(texts["a"] or "") == comparable(texts["b"] or ""):
            logger.info("arena battle %s: both models answered the same text", battle_id)
        for side in ("a", "b"):
            text = texts[side] or ""
            _send(
                battle_id,
                {
                    "type": "battle.text",
                    "side": side,
                    "text": text,
                    "done": True,
                    "html": texts["html"][side] or "",
                    "html_chars": len(text),
                },
            )
        _send(battle_id, {"type": "battle.status", **texts})
    return stored


def _image_side(side: str, model: Model, generator: Any, prompt: str, seed: int, out: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        out[side] = generator.generate(prompt, seed)
        out[f"ms_{side}"] = 1000.0 * (time.perf_counter() - started)
    except Exception as exc:
        out[f"error_{side}"] = f"{model.label}: {type(exc).__name__}: {exc}"
        logger.warning("arena image battle side %s (%s) failed", side, model.label, exc_info=True)
    finally:
        generator.close()


def images_generate_run(battle: Battle, sides: dict[str, Model]) -> Battle:
    """An image battle: both images generated (two endpoints at once; local pipelines one after the other,
    they share the device), validated and stored (`arena.services.battle_images_store`); the page hears the
    status with both image URLs. No partial images are streamed: each side arrives whole, at the end."""
    battle_id = battle.pk
    prompt = battle.prompt.content if isinstance(battle.prompt.content, str) else ""
    out: dict[str, Any] = {}
    try:
        generators = {side: image_generator_for(model) for side, model in sides.items()}
    except Exception as exc:
        logger.warning("arena battle %s: cannot load an image model", battle_id, exc_info=True)
        stored = battle_images_store(
            battle_id=battle_id, image_a=None, image_b=None, error=f"{type(exc).__name__}: {exc}"
        )
        _send(battle_id, {"type": "battle.status", "status": stored.status, "a": None, "b": None})
        return stored
    jobs = [
        (side, model, generators[side], prompt, battle_seed(battle_id, side, model), out)
        for side, model in sides.items()
    ]
    if all(model.backend == ModelBackend.OPENAI for model in sides.values()):
        threads = [threading.Thread(target=_image_side, args=job, name=f"arena-{battle_id}-{job[0]}") for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for job in jobs:
            _image_side(*job)
    error = "; ".join(f"{side}: {out[f'error_{side}']}" for side in sides if f"error_{side}" in out)
    speed = {
        side: SideSpeed(out[f"ms_{side}"], None, None) if f"ms_{side}" in out else None for side in sides
    }  # an image's first (and only) output is its whole image
    stored = battle_images_store(
        battle_id=battle_id, image_a=out.get("a"), image_b=out.get("b"), error=error, speed=speed
    )
    texts = selectors.battle_texts(battle_id)
    if texts["status"] == BattleStatus.ERROR:
        _send(battle_id, {"type": "battle.status", "status": "error", "a": None, "b": None})
    else:
        _send(battle_id, {"type": "battle.status", **texts})
    return stored
