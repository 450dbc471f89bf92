"""OpenAIChat against a real local HTTP server: texts, order, concurrency, pass-through, and every failure."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.workers.openai_server import ERROR_MESSAGES, FakeOpenAIServer, serve
from workers.ml.errors import BackendError, PermanentBackendError, TransientBackendError
from workers.ml.openai_backend import OpenAIChat
from workers.ml.types import Completion, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
MODES = [pytest.param(False, id="plain"), pytest.param(True, id="stream")]


def chat_for(server: FakeOpenAIServer, **options: object) -> OpenAIChat:
    return OpenAIChat(base_url=server.base_url, model="fake-model", **options)  # type: ignore[arg-type]


def chat_requests(server: FakeOpenAIServer) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize("stream", MODES)
def test_generate_returns_each_prompts_answer_in_input_order_while_running_requests_concurrently(stream: bool):
    # given: later prompts are answered sooner, so finishing order is the reverse of input order
    prompts = [f"question {i}" for i in range(8)]
    seeds = [100 + i for i in range(8)]
    delays = {seed: 0.05 + 0.03 * (seeds[-1] - seed) for seed in seeds}
    with (
        serve("echo", delay_s=lambda body: delays[body["seed"]]) as server,
        chat_for(server, max_concurrency=4, stream=stream) as chat,
    ):
        # when
        started = time.monotonic()
        completions = chat.generate(prompts, seeds, SamplingParams(max_new_tokens=50))
        elapsed = time.monotonic() - started
    # then
    assert [c.text for c in completions] == [f"echo: question {i} #seed={100 + i}" for i in range(8)]
    assert all(isinstance(c, Completion) and c.finish_reason == "stop" for c in completions)
    assert server.max_in_flight == 4  # four at once, never more
    sequential = sum(delays.values())  # 1.24 s one after the other
    assert elapsed < sequential * 0.75, elapsed
    # token counts come from `usage` (the fake counts words): "question i" is 2, the echo 4
    assert {(c.prompt_tokens, c.completion_tokens) for c in completions} == {(2, 4)}


def test_max_concurrency_one_sends_one_request_at_a_time():
    with serve("echo", delay_s=0.02) as server, chat_for(server, max_concurrency=1) as chat:
        completions = chat.generate(["a", "b", "c"], [1, 2, 3], SamplingParams())
    assert [c.text for c in completions] == ["echo: a #seed=1", "echo: b #seed=2", "echo: c #seed=3"]
    assert server.max_in_flight == 1


@pytest.mark.parametrize("stream", MODES)
def test_sampling_parameters_and_seed_are_sent_with_every_request(stream: bool):
    params = SamplingParams(max_new_tokens=33, temperature=0.25, top_p=0.9)
    with serve("echo") as server, chat_for(server, stream=stream) as chat:
        chat.generate(["x", "y"], [7, 8], params)
    bodies = sorted(chat_requests(server), key=lambda body: body["seed"])
    assert [b["seed"] for b in bodies] == [7, 8]
    for body in bodies:
        assert body["model"] == "fake-model"
        assert (body["max_tokens"], body["temperature"], body["top_p"], body["n"]) == (33, 0.25, 0.9, 1)
        assert body["stream"] is stream
        assert body.get("stream_options") == ({"include_usage": True} if stream else None)


@pytest.mark.parametrize("stream", MODES)
def test_hitting_max_tokens_maps_to_finish_reason_length(stream: bool):
    with serve("echo") as server, chat_for(server, stream=stream) as chat:
        short, long_enough = chat.generate(
            ["one two three four", "hi"], [5, 5], SamplingParams(max_new_tokens=3, temperature=0)
        )
    assert (short.text, short.finish_reason, short.completion_tokens) == ("echo: one two", "length", 3)
    assert long_enough.finish_reason == "stop"
    assert long_enough.text.startswith("echo: hi")  # "echo: hi #seed=5" is exactly 3 words


@pytest.mark.parametrize("stream", MODES)
def test_without_usage_prompt_tokens_are_zero_and_completion_tokens_a_rough_count(stream: bool):
    with serve("echo", usage=False) as server, chat_for(server, stream=stream) as chat:
        [completion] = chat.generate(["a fairly long question about bees"], [3], SamplingParams())
    assert completion.text == "echo: a fairly long question about bees #seed=3"
    assert completion.prompt_tokens == 0
    assert 5 <= completion.completion_tokens <= len(completion.text)  # ~4 characters a token


def test_conversation_prompts_are_sent_as_messages_and_text_prompts_as_one_user_message():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    with serve("echo") as server, chat_for(server) as chat:
        completions = chat.generate([conversation, "plain text"], [1, 2], SamplingParams())
    assert [c.text for c in completions] == ["echo: second question #seed=1", "echo: plain text #seed=2"]
    messages_by_seed = {body["seed"]: body["messages"] for body in chat_requests(server)}
    assert messages_by_seed == {1: conversation, 2: [{"role": "user", "content": "plain text"}]}


def test_api_key_is_sent_as_a_bearer_token_and_never_shown():
    with serve("echo", api_key="sk-secret-123") as server:
        with chat_for(server, api_key="sk-secret-123") as chat:
            chat.generate(["hi"], [0], SamplingParams())
            assert chat.ping() == ["fake-model"]
            assert "sk-secret-123" not in repr(chat)
        with chat_for(server, api_key="sk-wrong-456") as chat, pytest.raises(PermanentBackendError) as error:
            chat.generate(["hi"], [0], SamplingParams())
        with chat_for(server) as chat, pytest.raises(PermanentBackendError):
            chat.ping()
    assert {r.headers.get("authorization") for r in server.requests[:2]} == {"Bearer sk-secret-123"}
    assert "authorization" not in server.requests[-1].headers  # no key, no header
    assert error.value.status_code == 401
    assert ERROR_MESSAGES[401] in str(error.value)
    assert "sk-wrong-456" not in str(error.value)


def test_base_url_with_a_trailing_slash_works():
    with serve("echo") as server, OpenAIChat(base_url=server.base_url + "/", model="fake-model") as chat:
        assert chat.generate(["hi"], [1], SamplingParams())[0].text == "echo: hi #seed=1"
        assert chat.ping() == ["fake-model"]
    assert [r.path for r in server.requests] == ["/v1/chat/completions", "/v1/models"]


def test_ping_lists_the_models_the_endpoint_serves():
    with serve("echo", models=("llama-3-8b", "qwen-2-7b")) as server, chat_for(server) as chat:
        assert chat.ping() == ["llama-3-8b", "qwen-2-7b"]
    [request] = server.requests
    assert (request.method, request.path) == ("GET", "/v1/models")


def test_no_prompts_send_nothing_and_mismatched_seeds_are_refused():
    with serve("echo") as server, chat_for(server) as chat:
        assert chat.generate([], [], SamplingParams()) == []
        with pytest.raises(ValueError, match="one seed per prompt"):
            chat.generate(["a", "b"], [1], SamplingParams())
    assert server.requests == []


# -- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", MODES)
def test_a_server_slower_than_the_timeout_is_a_transient_error_raised_within_the_timeout(stream: bool):
    with serve("slow", slow_s=10) as server, chat_for(server, timeout_s=0.5, stream=stream) as chat:
        started = time.monotonic()
        with pytest.raises(TransientBackendError) as error:
            chat.generate(["hi"], [1], SamplingParams())
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0, elapsed
    assert str(error.value) == f"endpoint {server.base_url} timed out after 0.5 s waiting for the answer"


def test_ping_timeout_can_be_shorter_than_the_generation_timeout():
    with serve("slow", slow_s=10) as server, chat_for(server, timeout_s=30) as chat:
        started = time.monotonic()
        with pytest.raises(TransientBackendError, match="timed out after 0.3 s"):
            chat.ping(timeout_s=0.3)
    assert time.monotonic() - started < 2.0


def test_a_closed_port_is_a_transient_error():
    # given: a port that was free a moment ago and has no listener now
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    with OpenAIChat(base_url=base_url, model="m", timeout_s=2) as chat:
        with pytest.raises(TransientBackendError) as generate_error:
            chat.generate(["hi"], [1], SamplingParams())
        with pytest.raises(TransientBackendError) as ping_error:
            chat.ping()
    for error in (generate_error, ping_error):
        assert str(error.value).startswith(f"could not connect to endpoint {base_url}: ")
        assert error.value.status_code is None


@pytest.mark.parametrize("stream", MODES)
def test_malformed_json_is_a_permanent_error_quoting_the_body(stream: bool):
    with serve("malformed") as server, chat_for(server, stream=stream) as chat:
        with pytest.raises(PermanentBackendError) as error:
            chat.generate(["hi"], [1], SamplingParams())
        with pytest.raises(PermanentBackendError) as ping_error:
            chat.ping()
    expected = f'endpoint {server.base_url} returned malformed JSON: {{"id": "chatcmpl-1", "choices": [{{"message":'
    assert str(error.value) == expected
    assert str(ping_error.value) == expected


def test_json_without_choices_is_a_permanent_error_quoting_the_body():
    with serve("missing_choices") as server, chat_for(server) as chat:
        with pytest.raises(PermanentBackendError) as error:
            chat.generate(["hi"], [1], SamplingParams())
        with pytest.raises(PermanentBackendError, match="without a `data` list"):
            chat.ping()
    assert str(error.value).startswith(f"endpoint {server.base_url} returned no `choices`: {{")
    assert '"object": "chat.completion"' in str(error.value)


def test_a_long_bad_body_is_cut_to_an_excerpt():
    from workers.ml.openai_backend import EXCERPT_CHARS, _excerpt

    assert _excerpt("x" * 5000) == "x" * EXCERPT_CHARS + "…"
    assert _excerpt("  ") == "(empty body)"


@pytest.mark.parametrize("stream", MODES)
def test_http_500_is_transient_and_quotes_the_server(stream: bool):
    with (
        serve("error500") as server,
        chat_for(server, stream=stream) as chat,
        pytest.raises(TransientBackendError) as error,
    ):
        chat.generate(["hi"], [1], SamplingParams())
    assert str(error.value) == (
        f"endpoint {server.base_url} answered HTTP 500 Internal Server Error: {ERROR_MESSAGES[500]}"
    )
    assert error.value.status_code == 500


@pytest.mark.parametrize("stream", MODES)
def test_http_400_is_permanent_and_carries_the_servers_error_message(stream: bool):
    with (
        serve("error400") as server,
        chat_for(server, stream=stream) as chat,
        pytest.raises(PermanentBackendError) as error,
    ):
        chat.generate(["hi"], [1], SamplingParams())
    assert str(error.value) == f"endpoint {server.base_url} answered HTTP 400 Bad Request: {ERROR_MESSAGES[400]}"
    assert error.value.status_code == 400


def test_http_429_is_transient_with_the_servers_retry_after():
    with serve("error429") as server, chat_for(server) as chat:
        with pytest.raises(TransientBackendError) as error:
            chat.generate(["hi"], [1], SamplingParams())
        with pytest.raises(TransientBackendError):
            chat.ping()
    assert (error.value.status_code, error.value.retry_after_s) == (429, 2.0)
    assert ERROR_MESSAGES[429] in str(error.value)


def test_a_stream_with_an_event_that_is_not_json_is_a_permanent_error():
    with (
        serve("garbage_stream") as server,
        chat_for(server, stream=True) as chat,
        pytest.raises(PermanentBackendError) as error,
    ):
        chat.generate(["hi"], [1], SamplingParams())
    assert str(error.value) == (
        f'endpoint {server.base_url} sent a malformed stream event: {{"choices": [{{"delta": {{"content": "oops'
    )


def test_a_stream_that_ends_before_finishing_is_a_permanent_error():
    with (
        serve("truncated_stream") as server,
        chat_for(server, stream=True) as chat,
        pytest.raises(PermanentBackendError, match=r"ended the stream before a finish_reason or \[DONE\]"),
    ):
        chat.generate(["hi"], [1], SamplingParams())


def test_an_error_event_in_the_stream_is_classified_by_its_code():
    with (
        serve("stream_error") as server,
        chat_for(server, stream=True) as chat,
        pytest.raises(TransientBackendError) as error,
    ):
        chat.generate(["hi"], [1], SamplingParams())
    assert str(error.value) == f"endpoint {server.base_url} reported an error mid-stream: {ERROR_MESSAGES[500]}"
    assert error.value.status_code == 500


def test_one_failing_prompt_fails_the_batch_and_unstarted_requests_are_not_sent():
    # given: a 400 for every request, one worker, many prompts
    with serve("error400") as server, chat_for(server, max_concurrency=1) as chat, pytest.raises(PermanentBackendError):
        chat.generate([f"q{i}" for i in range(20)], list(range(20)), SamplingParams())
    # then: the queued requests were cancelled after the first failure (one more may have started)
    assert 1 <= len(server.requests) <= 2


def test_a_malformed_prompt_fails_before_any_request_is_sent():
    with (
        serve("echo") as server,
        chat_for(server) as chat,
        pytest.raises(PermanentBackendError, match="prompt 1, message 0: needs a `role` and a `content`"),
    ):
        chat.generate(["fine", [{"role": "user"}]], [1, 2], SamplingParams())
    assert server.requests == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "localhost:8000/v1"}, "must start with http:// or https://"),
        ({"base_url": "ftp://example.org/v1"}, "must start with http:// or https://"),
        ({"model": "  "}, "model name"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
    ],
)
def test_bad_configuration_is_a_permanent_error(options: dict, message: str):
    arguments = {"base_url": "http://127.0.0.1:8000/v1", "model": "m"} | options
    with pytest.raises(PermanentBackendError, match=message):
        OpenAIChat(**arguments)


def test_errors_survive_pickling_with_their_details():
    error = TransientBackendError("endpoint x timed out", status_code=503, retry_after_s=1.5)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - bytes we just made
    assert (type(copy), str(copy), copy.status_code, copy.retry_after_s) == (
        TransientBackendError,
        "endpoint x timed out",
        503,
        1.5,
    )
    assert isinstance(copy, BackendError)


def test_fake_server_stops_promptly_with_a_request_still_waiting_and_leaves_no_thread():
    threads_before = threading.active_count()
    server = FakeOpenAIServer("slow", slow_s=30).start()
    chat = chat_for(server, timeout_s=0.2)
    with pytest.raises(TransientBackendError):
        chat.generate(["hi"], [1], SamplingParams())
    started = time.monotonic()
    server.stop()  # the handler is still inside its 30 s wait, and the client keeps its connection
    chat.close()
    assert time.monotonic() - started < 2.0
    assert threading.active_count() == threads_before


def test_importing_and_pinging_loads_neither_django_nor_torch():
    code = (
        "import sys, workers.ml.openai_backend, workers.ml.errors;"
        "from tests.workers.openai_server import serve;"
        "server = serve('echo');"
        "s = server.__enter__();"
        "from workers.ml.openai_backend import OpenAIChat;"
        "assert OpenAIChat(base_url=s.base_url, model='m').ping() == ['fake-model'];"
        "server.__exit__(None, None, None);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'torch', 'transformers'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- streamed text through a callback (live arena battles) ----------------------------------------------------
@pytest.mark.parametrize("stream", MODES)
def test_generate_streaming_hands_over_each_delta_as_it_arrives(stream: bool):
    # given a server that sends one word every 0.1 s; the client's own `stream` setting does not matter
    with serve("echo", stream_delay_s=0.1) as server, chat_for(server, stream=stream) as chat:
        arrivals: list[tuple[float, str]] = []
        started = time.monotonic()

        completion = chat.generate_streaming(
            "one two three four", 5, SamplingParams(max_new_tokens=50), lambda d: arrivals.append((time.monotonic(), d))
        )

        # then every word came as its own delta, in order, spread over the stream, and they add up to the answer
        deltas = [delta for _, delta in arrivals]
        assert deltas == ["echo:", " one", " two", " three", " four", " #seed=5"]
        assert "".join(deltas) == completion.text == "echo: one two three four #seed=5"
        assert arrivals[0][0] - started < arrivals[-1][0] - started - 0.4  # not all at the end
        assert completion.finish_reason == "stop" and completion.completion_tokens == 6
        assert server.requests[-1].body["stream"] is True


def test_generate_streaming_from_a_server_that_answers_in_one_piece_gives_one_delta():
    # given a server that ignores `stream` (it answers JSON): the whole text is one delta
    with serve("echo", ignore_stream=True) as server, chat_for(server) as chat:
        deltas: list[str] = []
        completion = chat.generate_streaming("hi", 1, SamplingParams(), deltas.append)
        assert server.requests[-1].body["stream"] is True
    assert deltas == [completion.text] == ["echo: hi #seed=1"]
