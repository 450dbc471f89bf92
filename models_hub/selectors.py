"""Reads and access checks for the model registry.

Every authenticated user may read the registry; where a checkpoint or endpoint lives (`path`,
`base_url`, `api_key_env`) is shown to staff only. Registering needs staff or `models_hub.add_model`,
changing the few mutable settings of a version needs staff or `models_hub.change_model`.

A model is named in requests and commands by a *reference*: its integer id, or a label: "name@vN" (that
exact version), "name@latest" (the newest version) or "name" (the name's champion, `model_champion`).

The champion of a name is its version marked `is_current` (promoted by the closed loop's gate, or registered
by hand: a person's registration is a decision); a name none of whose versions is marked has as champion its
newest version registered by hand. A version a training run produced is therefore never reached by the bare
name until it was promoted: a challenger that failed its gate stays out of everything that says "name".
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from models_hub.models import Model
from prefarena.errors import NotFound

LABEL_PATTERN = re.compile(r"^(?P<name>.+)@v(?P<version>[0-9]+)$")
LATEST_SUFFIX = "@latest"
MAX_DATABASE_ID = 2**63 - 1  # bigint; larger ids cannot exist and must not reach the query


def model_list() -> QuerySet[Model]:
    """Every registered version, newest version first within a name."""
    return Model.objects.select_related("parent", "created_by").order_by("name", "-version")


def model_get(model_id: Any) -> Model:
    """One model by id; NotFound for ids that do not exist or are not ids."""
    try:
        number = int(model_id)
    except (TypeError, ValueError) as exc:
        raise NotFound("Model not found") from exc
    if not 1 <= number <= MAX_DATABASE_ID:
        raise NotFound("Model not found")
    try:
        return model_list().get(pk=number)
    except Model.DoesNotExist as exc:
        raise NotFound("Model not found") from exc


def model_label_parse(label: str) -> tuple[str, int | None]:
    """'name@v3' -> ('name', 3); 'name' -> ('name', None), meaning the champion ('name@latest' is not parsed here)."""
    label = label.strip()
    match = LABEL_PATTERN.match(label)
    if match:
        return match["name"], int(match["version"])
    return label, None


def model_champion(name: str) -> Model | None:
    """The champion of a name: its current version, else its newest version registered by hand (module docstring)."""
    versions = model_list().filter(name=name)
    return versions.filter(is_current=True).first() or versions.filter(training_run_id__isnull=True).first()


def model_get_by_label(label: str) -> Model:
    """The model a label names: 'name@vN' exactly, 'name@latest' the newest version, 'name' the champion."""
    label = label.strip()
    latest = label.endswith(LATEST_SUFFIX)
    name, version = (label.removesuffix(LATEST_SUFFIX), None) if latest else model_label_parse(label)
    if not name:
        raise NotFound("A model label is 'name', 'name@vN' or 'name@latest'; this one is empty")
    versions = model_list().filter(name=name)
    if version is None:
        model = versions.first() if latest else model_champion(name)  # model_list orders by -version
        if model is None:
            if versions.exists():
                raise NotFound(
                    f"{name} has no champion yet (its versions were trained and none was promoted); "
                    f"name one: {name}@latest or {name}@vN"
                )
            raise NotFound(f"No model named {name!r}")
        return model
    if version > MAX_DATABASE_ID:
        raise NotFound(f"No model {name}@v{version}")
    model = versions.filter(version=version).first()
    if model is None:
        known = ", ".join(f"v{v}" for v in versions.values_list("version", flat=True)[:10])
        raise NotFound(f"No model {name}@v{version}" + (f" (known versions: {known})" if known else ""))
    return model


def model_get_by_reference(reference: int | str) -> Model:
    """A model by id (int) or label (str): see the module docstring."""
    if isinstance(reference, bool):  # bool is an int subclass; `true` is not an id
        raise NotFound("A model reference is an integer id or a 'name' / 'name@vN' label")
    if isinstance(reference, int):
        try:
            return model_get(reference)
        except NotFound as exc:
            raise NotFound(f"No model with id {reference}") from exc
    if isinstance(reference, str):
        return model_get_by_label(reference)
    raise NotFound("A model reference is an integer id or a 'name' / 'name@vN' label")


def model_user_sees_locations(user: User | AnonymousUser) -> bool:
    """Whether `user` may see where checkpoints and endpoints live (path, base_url, api_key_env)."""
    return bool(user.is_staff)


def model_user_can_register(user: User | AnonymousUser) -> bool:
    return bool(user.is_staff or user.has_perm("models_hub.add_model"))


def model_user_can_change(user: User | AnonymousUser) -> bool:
    return bool(user.is_staff or user.has_perm("models_hub.change_model"))
