"""Management commands of the workers app: register_model (with its real load check), build_tiny_models,
generate and score, including their refusals. No worker runs: jobs are created, not executed."""

from __future__ import annotations

import json
import shutil
import socket
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotations.models import Prompt
from models_hub.models import Model
from models_hub.services import model_register
from tests.workers.openai_server import FakeOpenAIServer
from workers.management import job_wait
from workers.models import GenerationJob, JobStatus, ScoringJob

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def stored_model(name: str, role: str = "policy") -> Model:
    return model_register(name=name, role=role, backend="transformers", path=f"/checkpoints/{name}", check=False)


# --- register_model ------------------------------------------------------------------------------------
def test_register_model_loads_and_generates_before_storing(tiny_models):
    output = run(
        "register_model", "tiny", "--role", "policy", "--backend", "transformers",
        "--path", str(tiny_models["tiny-lm-small"]), "--temperature", "0.3", "--in-arena",
    )  # fmt: skip
    assert "Load check passed: generated" in output
    assert "Registered tiny@v1" in output
    model = Model.objects.get()
    assert (model.label, model.role, model.temperature, model.in_arena) == ("tiny@v1", "policy", 0.3, True)
    assert model.path == str(tiny_models["tiny-lm-small"].resolve())


def test_register_model_stores_the_engine_and_refuses_one_for_an_endpoint(tiny_models):
    output = run(
        "register_model", "fast", "--role", "policy", "--backend", "transformers",
        "--path", str(tiny_models["tiny-lm-small"]), "--engine", "vllm", "--no-load-check",
    )  # fmt: skip
    assert "Registered fast@v1" in output and Model.objects.get().engine == "vllm"
    with pytest.raises(CommandError, match="--engine applies to --backend transformers"):
        run(
            "register_model", "remote", "--role", "policy", "--backend", "openai",
            "--base-url", "http://127.0.0.1:9/v1", "--remote-model", "m", "--engine", "hf",
        )  # fmt: skip
    assert Model.objects.count() == 1


def test_register_model_stores_list_prices_and_refuses_a_negative_one(tiny_models):
    output = run(
        "register_model", "priced", "--role", "policy", "--backend", "transformers",
        "--path", str(tiny_models["tiny-lm-small"]), "--no-load-check",
        "--price-input", "0.15", "--price-output", "0.6",
    )  # fmt: skip
    assert "Registered priced@v1" in output
    model = Model.objects.get()
    assert (float(model.price_input_per_million), float(model.price_output_per_million)) == (0.15, 0.6)
    with pytest.raises(CommandError, match="price-input"):
        run(
            "register_model", "priced", "--role", "policy", "--backend", "transformers",
            "--path", str(tiny_models["tiny-lm-small"]), "--no-load-check", "--price-input", "-1",
        )  # fmt: skip
    assert Model.objects.count() == 1


def test_register_reward_model_scores_a_pair(tiny_models):
    output = run(
        "register_model", "rm", "--role", "reward", "--backend", "transformers",
        "--path", str(tiny_models["tiny-reward"]), "--version", "4",
    )  # fmt: skip
    assert "Load check passed: scored one pair" in output
    assert Model.objects.get().label == "rm@v4"


def test_register_model_refuses_a_directory_that_is_no_checkpoint(tmp_path):
    with pytest.raises(CommandError, match="no config.json") as error:
        run("register_model", "x", "--role", "policy", "--backend", "transformers", "--path", str(tmp_path))
    assert "nothing was registered" in str(error.value)
    assert Model.objects.count() == 0


def test_register_model_refuses_corrupted_weights_that_pass_the_file_checks(tiny_models, tmp_path):
    # given: a copy of a real checkpoint whose weights file is garbage (config and tokenizer intact)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["tiny-lm-small"], broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors header" * 100)
    # when / then: the structural checks pass, the real load fails, nothing is stored
    with pytest.raises(CommandError, match="does not load as a policy model") as error:
        run("register_model", "broken", "--role", "policy", "--backend", "transformers", "--path", str(broken))
    assert "nothing was registered" in str(error.value)
    assert Model.objects.count() == 0
    # --no-load-check skips exactly that step: the files alone look fine
    run("register_model", "broken", "--role", "policy", "--backend", "transformers", "--path", str(broken),
        "--no-load-check")  # fmt: skip
    assert Model.objects.get().label == "broken@v1"


def test_register_model_refuses_a_causal_lm_as_reward_model(tiny_models):
    with pytest.raises(CommandError, match="ForSequenceClassification"):
        run("register_model", "x", "--role", "reward", "--backend", "transformers",
            "--path", str(tiny_models["tiny-lm-small"]))  # fmt: skip
    assert Model.objects.count() == 0


def test_register_model_pings_an_endpoint():
    with FakeOpenAIServer("echo") as server:
        output = run(
            "register_model", "remote", "--role", "judge", "--backend", "openai",
            "--base-url", server.base_url, "--remote-model", "fake-model", "--timeout-s", "5",
        )  # fmt: skip
        with pytest.raises(CommandError, match="does not serve 'gpt-9'"):
            run("register_model", "remote", "--role", "judge", "--backend", "openai",
                "--base-url", server.base_url, "--remote-model", "gpt-9")  # fmt: skip
    assert "answers and serves 'fake-model'" in output
    assert Model.objects.get().label == "remote@v1"


def test_register_model_refuses_an_unreachable_endpoint():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CommandError, match="could not connect"):
        run("register_model", "remote", "--role", "policy", "--backend", "openai",
            "--base-url", f"http://127.0.0.1:{port}/v1", "--remote-model", "m")  # fmt: skip
    assert Model.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--role", "policy", "--backend", "transformers"], "--path is required"),
        (["x", "--role", "policy", "--backend", "openai", "--base-url", "http://h/v1"], "--remote-model are required"),
        (["x@v2", "--role", "policy", "--backend", "transformers", "--path", "/p"], "no spaces and no '@'"),
        (["x", "--role", "critic", "--backend", "transformers", "--path", "/p"], "invalid choice"),
        (["x", "--role", "reward", "--backend", "transformers", "--path", "/p", "--in-arena"], "only policy models"),
        (["x", "--role", "policy", "--backend", "transformers", "--path", "/p", "--top-p", "0"], "must be in"),
        (["x", "--role", "policy", "--backend", "transformers", "--path", "/p", "--temperature", "-1"], ">= 0"),
        (["x", "--role", "policy", "--backend", "transformers", "--path", "/p", "--parent", "ghost"], "--parent"),
    ],
)
def test_register_model_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run("register_model", *args)
    assert Model.objects.count() == 0


def test_register_model_version_clash(tiny_models):
    path = str(tiny_models["tiny-lm-small"])
    run("register_model", "tiny", "--role", "policy", "--backend", "transformers", "--path", path, "--no-load-check")
    with pytest.raises(CommandError, match="already registered"):
        run("register_model", "tiny", "--role", "policy", "--backend", "transformers", "--path", path,
            "--version", "1", "--no-load-check")  # fmt: skip
    assert Model.objects.count() == 1


# --- build_tiny_models ---------------------------------------------------------------------------------
def test_build_tiny_models_registers_once(tmp_path):
    out = tmp_path / "tiny"
    first = run("build_tiny_models", "--out", str(out), "--steps", "20", "--register")
    for name in ("tiny-lm-small", "tiny-lm-large", "tiny-reward"):
        assert f"{name}: {out / name}" in first
        assert (out / name / "config.json").is_file()
    registered = {m.label: (m.role, m.in_arena) for m in Model.objects.all()}
    assert registered == {
        "tiny-lm-small@v1": ("policy", True),
        "tiny-lm-large@v1": ("policy", True),
        "tiny-reward@v1": ("reward", False),
    }
    # when: built again into the same place
    second = run("build_tiny_models", "--out", str(out), "--steps", "20", "--register")
    # then: nothing registered twice
    assert second.count("already registered") == 3
    assert Model.objects.count() == 3


def test_build_tiny_models_refuses_a_file_as_output(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(CommandError, match="not a directory"):
        run("build_tiny_models", "--out", str(target))


# --- generate ------------------------------------------------------------------------------------------
@pytest.fixture
def policies() -> dict[str, Model]:
    return {"small": stored_model("small"), "large": stored_model("large"), "rm": stored_model("rm", "reward")}


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"text": "no prompt key"}', 'line 2: expected an object with a "prompt" key'),
        ('["a list"]', 'line 2: expected an object with a "prompt" key'),
        ('{"prompt": ""}', "line 2: 'prompt' is empty"),
        ('{"prompt": [{"role": "robot", "content": "x"}]}', "line 2: 'prompt'\\[0\\].role"),
    ],
)
def test_generate_reports_the_bad_line_and_stores_nothing(tmp_path, policies, line, message):
    path = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "fine"}, line, {"prompt": "also fine"}])
    with pytest.raises(CommandError, match=message):
        run("generate", "--model", "small", "--prompts-file", str(path))
    assert GenerationJob.objects.count() == 0
    assert Prompt.objects.count() == 0


def test_generate_from_jsonl_creates_a_job(tmp_path, policies):
    path = write_lines(
        tmp_path / "prompts.jsonl",
        [{"prompt": "What do bees make?"}, "", {"prompt": [{"role": "user", "content": "Hi"}], "id": 7}],
    )
    output = run("generate", "--model", "small", "--model", "large@v1", "--prompts-file", str(path),
                 "--max-new-tokens", "16", "--temperature", "0", "--seed", "3")  # fmt: skip
    job = GenerationJob.objects.get()
    assert f"Queued generation job {job.pk}: 4 generation(s)" in output
    assert job.status == JobStatus.QUEUED and job.progress_total == 4
    assert (job.max_new_tokens, job.temperature, job.seed, job.created_by) == (16, 0.0, 3, None)
    assert set(job.policy_models.all()) == {policies["small"], policies["large"]}
    assert sorted(map(json.dumps, job.prompts.values_list("content", flat=True))) == sorted(
        [json.dumps("What do bees make?"), json.dumps([{"role": "user", "content": "Hi"}])]
    )


def test_generate_from_text_file_with_best_of_n_into_a_campaign(tmp_path, policies, make_campaign):
    path = write_lines(tmp_path / "prompts.txt", ["first prompt", "", "second prompt"])
    campaign = make_campaign(name="generated")
    run("generate", "--model", "small", "--model", "large", "--prompts-file", str(path), "--candidates", "3",
        "--keep-top", "1", "--reward-model", "rm", "--target-campaign", "generated")  # fmt: skip
    job = GenerationJob.objects.get()
    assert job.progress_total == 2 * 2 * 3
    assert (job.reward_model, job.target_campaign, job.keep_top) == (policies["rm"], campaign, 1)


def test_generate_from_a_campaign(policies, make_campaign):
    make_campaign(name="source", items=3)
    run("generate", "--model", "small", "--campaign", "source", "--duplicate-retries", "5")
    job = GenerationJob.objects.get()
    assert job.progress_total == 3 and job.duplicate_retries == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nobody", "--campaign", "source"], "--model nobody: No model named 'nobody'"),
        (["--model", "small@v2", "--campaign", "source"], "No model small@v2"),
        (["--model", "rm", "--campaign", "source"], "not policy models: rm@v1"),
        (["--model", "small", "--campaign", "nowhere"], "--campaign nowhere: no campaign"),
        (["--model", "small", "--campaign", "source", "--keep-top", "2"], "keep_top must be between"),
        (["--model", "small", "--campaign", "source", "--candidates", "2"], "needs a reward model"),
        (["--model", "small", "--campaign", "source", "--duplicate-retries", "11"], "between 0 and 10"),
        (["--model", "small", "--prompts-file", "/no/such.jsonl"], "no such file"),
        (["--model", "small", "--prompts-file", "prompts.csv"], "give a .jsonl file"),
        (["--model", "small"], "one of the arguments --prompts-file --campaign is required"),
    ],
)
def test_generate_refusals(policies, make_campaign, args, message):
    make_campaign(name="source", items=1)
    with pytest.raises(CommandError, match=message):
        run("generate", *args)
    assert GenerationJob.objects.count() == 0


def test_generate_refuses_an_empty_file(tmp_path, policies):
    path = write_lines(tmp_path / "empty.txt", ["", "  "])
    with pytest.raises(CommandError, match="no prompts"):
        run("generate", "--model", "small", "--prompts-file", str(path))


# --- score ---------------------------------------------------------------------------------------------
def test_score_creates_a_job_over_the_campaign_responses(policies, make_campaign):
    make_campaign(name="scored", items=2)
    output = run("score", "--model", "rm", "--campaign", "scored")
    job = ScoringJob.objects.get()
    assert f"Queued scoring job {job.pk}: 4 response(s)" in output
    assert job.model == policies["rm"] and job.responses.count() == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "rm", "--campaign", "nowhere"], "--campaign nowhere: no campaign of that name"),
        (["--model", "small", "--campaign", "scored"], "is not a reward model"),
        (["--model", "ghost", "--campaign", "scored"], "No model named 'ghost'"),
    ],
)
def test_score_refusals(policies, make_campaign, args, message):
    make_campaign(name="scored", items=1)
    with pytest.raises(CommandError, match=message):
        run("score", *args)
    assert ScoringJob.objects.count() == 0


# --- --wait --------------------------------------------------------------------------------------------
def test_wait_reports_success_and_fails_on_a_failed_job(policies):
    from django.core.management.base import BaseCommand

    from workers import services

    command = BaseCommand(stdout=StringIO())
    job = services.generation_job_create(models=[policies["small"]], prompts=["a"], created_by=None)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, progress_done=1, metrics={"tokens": 12, "tokens_per_s": 31.25}
    )
    job_wait(command, job, poll_seconds=0.01)
    assert f"generation job {job.pk} succeeded: tokens=12, tokens_per_s=31.25" in command.stdout.getvalue()
    failed = services.generation_job_create(models=[policies["small"]], prompts=["b"], created_by=None)
    GenerationJob.objects.filter(pk=failed.pk).update(status=JobStatus.FAILED, error="out of memory")
    with pytest.raises(CommandError, match=f"generation job {failed.pk} failed: out of memory"):
        job_wait(command, failed, poll_seconds=0.01)
