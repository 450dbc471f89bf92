"""Registering models. Checks run in the web process, so they never import torch: a checkpoint is
checked by its files and config.json, an endpoint by asking it for its model list."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from models_hub.models import GenerationEngine, Model, ModelBackend, ModelKind, ModelRole
from models_hub.selectors import model_champion
from prefarena.errors import Conflict, InvalidInput

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, fields={field: [message]})


def checkpoint_check(path: str, role: str) -> dict[str, Any]:
    """Check that `path` holds a transformers checkpoint fit for `role`; returns its config."""
    directory = Path(path)
    if not directory.is_dir():
        raise _bad("path", f"{path}: not a directory")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise _bad("path", f"{path}: no config.json (is this a save_pretrained directory?)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise _bad("path", f"{path}/config.json is not valid JSON: {exc}") from exc
    if not any(next(directory.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise _bad("path", f"{path}: no weights (*.safetensors or pytorch_model*.bin)")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise _bad("path", f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    architectures = config.get("architectures") or []
    if role == ModelRole.REWARD:
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise _bad(
                "path", f"{path}: a reward model must be a *ForSequenceClassification checkpoint, not {architectures}"
            )
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        if labels != 1:
            raise _bad("path", f"{path}: a reward model has one output (num_labels=1), this one has {labels}")
    elif not any(a.endswith("ForCausalLM") or a.endswith("ForConditionalGeneration") for a in architectures):
        raise _bad("path", f"{path}: a {role} model must be a causal LM checkpoint, not {architectures or 'unknown'}")
    return config


def endpoint_check(base_url: str, remote_model: str, api_key: str | None, timeout_s: float) -> None:
    """Ask an OpenAI-compatible endpoint for its models; a clear error if it does not answer."""
    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=min(timeout_s, 10.0))
    except httpx.TimeoutException as exc:
        raise _bad("base_url", f"{url} did not answer within {min(timeout_s, 10.0):g} s") from exc
    except httpx.HTTPError as exc:
        raise _bad("base_url", f"{url} is not reachable: {exc.__class__.__name__}: {exc}") from exc
    if response.status_code in (401, 403):
        raise _bad("api_key_env", f"{url} refused the credentials (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise _bad("base_url", f"{url} answered HTTP {response.status_code}")
    try:
        ids = [entry["id"] for entry in response.json().get("data", [])]
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise _bad("base_url", f"{url} did not answer like an OpenAI-compatible server (bad model list)") from exc
    if ids and remote_model not in ids:
        raise _bad("remote_model", f"{url} does not serve {remote_model!r}; it serves {', '.join(ids[:10])}")


def api_key_from_env(env_name: str) -> str | None:
    import os

    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise _bad("api_key_env", f"environment variable {env_name} is not set")
    return value


def kind_check(kind: str, role: str, backend: str) -> None:
    """An image model is a policy behind an images endpoint (openai) or a diffusers pipeline; diffusers is images."""
    if kind not in ModelKind.values:
        raise _bad("kind", f"kind must be one of {', '.join(ModelKind.values)}")
    if kind == ModelKind.IMAGE and role != ModelRole.POLICY:
        raise _bad("kind", "only policy models generate images")
    if backend == ModelBackend.DIFFUSERS and kind != ModelKind.IMAGE:
        raise _bad("kind", "the diffusers backend generates images: kind must be image")
    if backend == ModelBackend.TRANSFORMERS and kind == ModelKind.IMAGE:
        raise _bad("kind", "image models are an images endpoint (openai) or a diffusers pipeline")


def pipeline_check(path: str) -> None:
    """A diffusers pipeline folder holds `model_index.json` (what `DiffusionPipeline.from_pretrained` reads)."""
    if not (Path(path) / "model_index.json").is_file():
        raise _bad("path", f"{path} is not a diffusers pipeline folder (no model_index.json)")


def engine_check(backend: str, engine: str) -> None:
    """An engine other than the worker's default is a choice for local checkpoints only."""
    if engine not in GenerationEngine.values:
        raise _bad("engine", f"engine must be one of {', '.join(GenerationEngine.values)}")
    if engine != GenerationEngine.DEFAULT and backend != ModelBackend.TRANSFORMERS:
        raise _bad(
            "engine",
            f"engine {engine!r} applies to local transformers checkpoints; an endpoint's server picks its own engine",
        )


def model_register(
    *,
    name: str,
    role: str,
    backend: str,
    created_by: User | None = None,
    version: int | None = None,
    check: bool = True,
    **fields: Any,
) -> Model:
    """Register a model version after checking it loads (checkpoint files) or answers (endpoint)."""
    if role not in ModelRole.values:
        raise _bad("role", f"role must be one of {', '.join(ModelRole.values)}")
    if backend not in ModelBackend.values:
        raise _bad("backend", f"backend must be one of {', '.join(ModelBackend.values)}")
    engine_check(backend, fields.get("engine", GenerationEngine.DEFAULT))
    prices_check(fields)
    kind_check(fields.get("kind", ModelKind.TEXT), role, backend)
    if backend == ModelBackend.DIFFUSERS:
        if not fields.get("path"):
            raise _bad("path", "the diffusers backend needs a pipeline folder")
        fields["path"] = str(Path(fields["path"]).resolve())
        if check:
            pipeline_check(fields["path"])
    elif backend == ModelBackend.TRANSFORMERS:
        if not fields.get("path"):
            raise _bad("path", "the transformers backend needs a checkpoint path")
        fields["path"] = str(Path(fields["path"]).resolve())
        if check:
            checkpoint_check(fields["path"], role)
    else:
        if not fields.get("base_url") or not fields.get("remote_model"):
            raise _bad("base_url", "the openai backend needs base_url and remote_model")
        if check:
            key = api_key_from_env(fields.get("api_key_env", ""))
            endpoint_check(fields["base_url"], fields["remote_model"], key, float(fields.get("timeout_s", 60.0)))
    if not 0 < float(fields.get("top_p", 1.0)) <= 1:
        raise _bad("top_p", "top_p must be in (0, 1]")
    if float(fields.get("temperature", 0.7)) < 0:
        raise _bad("temperature", "temperature must be >= 0")
    for _ in range(3):
        try:
            with transaction.atomic():
                number = version or (Model.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0) + 1
                model = Model.objects.create(
                    name=name, version=number, role=role, backend=backend, created_by=created_by, **fields
                )
                # A person registering a version decides it is the one to use: it becomes the champion.
                return model_champion_set(model=model)
        except IntegrityError as exc:
            if version is not None:
                raise Conflict(f"{name} v{version} is already registered", fields={"version": ["taken"]}) from exc
    raise Conflict(f"could not allocate a version for {name}; try again")


def model_champion_set(*, model: Model) -> Model:
    """Make `model` the champion (current version) of its name; the previous champion stays registered."""
    with transaction.atomic():
        # Lock the family first: two promotions of one name serialise here instead of hitting the constraint.
        list(Model.objects.select_for_update().filter(name=model.name).values_list("pk", flat=True))
        Model.objects.filter(name=model.name, is_current=True).exclude(pk=model.pk).update(is_current=False)
        Model.objects.filter(pk=model.pk).update(is_current=True)
    model.refresh_from_db(fields=["is_current"])
    return model


def model_promote(*, model: Model) -> Model:
    """A person's promotion: `model` becomes its name's champion; Conflict when it already is (nothing changes)."""
    with transaction.atomic():
        list(Model.objects.select_for_update().filter(name=model.name).values_list("pk", flat=True))
        champion = model_champion(model.name)
        if champion is not None and champion.pk == model.pk:
            raise Conflict(f"{model.label} is already the champion of {model.name}")
        return model_champion_set(model=model)


def model_demote(*, model: Model) -> Model:
    """Unmark a promoted champion: the name falls back to its newest version registered by hand
    (models_hub.selectors.model_champion; a name with none has no champion until one is promoted). Conflict, and
    nothing changes, when `model` is not the marked champion or would stay the champion by that fallback."""
    with transaction.atomic():
        # The family's lock of model_champion_set: a promotion and a demotion of one name serialise.
        list(Model.objects.select_for_update().filter(name=model.name).values_list("pk", flat=True))
        if not Model.objects.filter(pk=model.pk, is_current=True).exists():
            raise Conflict(f"{model.label} is not the champion of {model.name}; only the champion can be demoted")
        fallback = Model.objects.filter(name=model.name, training_run_id__isnull=True).order_by("-version").first()
        if fallback is not None and fallback.pk == model.pk:
            raise Conflict(
                f"{model.label} is the newest version of {model.name} registered by hand, so it would stay the "
                "champion; promote another version instead"
            )
        Model.objects.filter(pk=model.pk).update(is_current=False)
    model.refresh_from_db(fields=["is_current"])
    return model


# Settings of a registered version that may change after registration; everything else (name, version,
# role, where the weights or endpoint live, lineage) identifies the version and stays as registered.
# `engine` is how the weights are run, like the sampling defaults: a worker reloads the model when it changes.
# Prices are list prices an operator may correct at any time.
MODEL_MUTABLE_FIELDS = (
    "in_arena",
    "description",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "engine",
    "price_input_per_million",
    "price_output_per_million",
)
PRICE_FIELDS = ("price_input_per_million", "price_output_per_million")


def prices_check(fields: dict[str, Any]) -> None:
    """Prices are null or a finite number >= 0 (the command line and the admin pass them unchecked)."""
    for name in PRICE_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        try:
            number = Decimal(str(value))
        except (InvalidOperation, ValueError) as exc:
            raise _bad(name, f"{name} must be a number of US dollars per million tokens") from exc
        if not number.is_finite() or number < 0 or number >= Decimal("1e8"):
            raise _bad(name, f"{name} must be between 0 and 100,000,000 US dollars per million tokens")


def model_update(*, model: Model, **changes: Any) -> Model:
    """Change the mutable settings of a version (arena membership, description, generation defaults)."""
    unknown = sorted(set(changes) - set(MODEL_MUTABLE_FIELDS))
    if unknown:
        raise _bad(unknown[0], f"{', '.join(unknown)} cannot change after registration; register a new version")
    if "temperature" in changes and not float(changes["temperature"]) >= 0:
        raise _bad("temperature", "temperature must be >= 0")
    if "top_p" in changes and not 0 < float(changes["top_p"]) <= 1:
        raise _bad("top_p", "top_p must be in (0, 1]")
    if "max_new_tokens" in changes and int(changes["max_new_tokens"]) < 1:
        raise _bad("max_new_tokens", "max_new_tokens must be at least 1")
    if "engine" in changes:
        engine_check(model.backend, changes["engine"])
    prices_check(changes)
    if changes.get("in_arena") and model.role != ModelRole.POLICY:
        raise _bad("in_arena", f"only policy models enter the arena; {model.label} is a {model.role} model")
    if changes:
        entering = bool(changes.get("in_arena")) and not model.in_arena
        if entering:  # fresh battles count from here (the leaderboard's provisional rule)
            changes = {**changes, "arena_since": timezone.now()}
        # One UPDATE of the named columns: a concurrent change of other settings is not overwritten.
        Model.objects.filter(pk=model.pk).update(**changes)
        model.refresh_from_db(fields=list(changes))
    return model


def models_arena_set(*, model_ids: list[int], in_arena: bool) -> int:
    """Put policy models into the arena or take models out of it; returns how many rows changed."""
    rows = Model.objects.filter(pk__in=model_ids).exclude(in_arena=in_arena)
    if in_arena:
        rows = rows.filter(role=ModelRole.POLICY)  # reward models and judges never battle
    return rows.update(in_arena=True, arena_since=timezone.now()) if in_arena else rows.update(in_arena=False)
