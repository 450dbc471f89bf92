"""python manage.py build_tiny_models --out DIR [--steps N] [--seed S] [--register] [--image-models]"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_hub import services
from models_hub.models import Model, ModelBackend, ModelKind, ModelRole
from prefarena.argtypes import non_negative_int, positive_int
from prefarena.errors import ApplicationError
from workers.management import command_error

ROLES = {"tiny-lm-small": ModelRole.POLICY, "tiny-lm-large": ModelRole.POLICY, "tiny-reward": ModelRole.REWARD}
IMAGE_MODELS = ("tiny-diffusion-a", "tiny-diffusion-b")
IMAGE_SAMPLE_SIZE = 32  # latents of 32² → 64×64-pixel pictures, each drawn in well under a second on a CPU


class Command(BaseCommand):
    help = (
        "Build the tiny test models (two causal LMs and a reward model, a few MB each, trained for a few "
        "seconds on the shipped corpus) into DIR/tiny-lm-small, DIR/tiny-lm-large and DIR/tiny-reward. "
        "With --register, register the LMs as policy models in the arena and tiny-reward as a reward model; "
        "a model already registered with the same path is not registered again. --image-models also builds two "
        "random-weight Stable Diffusion pipelines (tiny-diffusion-a, -b; the diffusers extra) for the image arena "
        "(they draw noise: they show the arena's mechanics)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="Output directory (created if missing)")
        parser.add_argument("--steps", type=positive_int, default=300, help="Training steps per LM (default 300)")
        parser.add_argument("--seed", type=non_negative_int, default=0, help="Random seed (default 0)")
        parser.add_argument("--register", action="store_true", help="Register the built models")
        parser.add_argument(
            "--image-models", action="store_true", help="Also build (and register) two tiny image pipelines"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"].resolve()
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out}: exists and is not a directory")
        # Imported here, not at module level: torch is only ever loaded by the process that needs it
        # (this command, a gpu worker), never by the web process that may import this module.
        from workers.ml.tiny import tiny_models_build

        if options["image_models"] and importlib.util.find_spec("diffusers") is None:
            raise CommandError("--image-models needs the diffusers extra: pip install -e '.[diffusers]'")
        self.stdout.write(f"Building tiny models in {out} ({options['steps']} steps, seed {options['seed']}) ...")
        try:
            paths = tiny_models_build(out, steps=options["steps"], seed=options["seed"])
        except OSError as exc:
            raise CommandError(f"--out {out}: cannot write the models: {exc}") from exc
        for name, path in paths.items():
            self.stdout.write(f"{name}: {path}")
        if options["register"]:
            for name, path in paths.items():
                self._register(
                    name,
                    Path(path).resolve(),
                    role=ROLES[name],
                    backend=ModelBackend.TRANSFORMERS,
                    description=f"Tiny test model (build_tiny_models, {options['steps']} steps, "
                    f"seed {options['seed']})",
                )
        if options["image_models"]:
            self._image_models(out, options)

    def _image_models(self, out: Path, options: dict[str, Any]) -> None:
        from workers.ml.tiny import tiny_diffusion_build

        for k, name in enumerate(IMAGE_MODELS):
            try:
                path = tiny_diffusion_build(out / name, seed=options["seed"] + k, sample_size=IMAGE_SAMPLE_SIZE)
            except OSError as exc:
                raise CommandError(f"--out {out}: cannot write {name}: {exc}") from exc
            self.stdout.write(f"{name}: {path}")
            if not options["register"]:
                continue
            self._register(
                name,
                path.resolve(),
                role=ModelRole.POLICY,
                backend=ModelBackend.DIFFUSERS,
                kind=ModelKind.IMAGE,
                dtype="float32",  # random weights in float16 may overflow to a black picture
                description=f"Tiny random-weight image pipeline (build_tiny_models, seed {options['seed'] + k}): "
                "it draws noise, to show the image arena's mechanics",
            )

    def _register(self, name: str, path: Path, *, role: str, backend: str, description: str, **fields: Any) -> None:
        existing = Model.objects.filter(name=name, backend=backend, path=str(path)).first()
        if existing is not None:
            # Its files were just rebuilt in place (same steps and seed give the same weights).
            self.stdout.write(f"{name}: already registered as {existing.label} with this path; not registered again")
            return
        try:
            model = services.model_register(
                name=name,
                role=role,
                backend=backend,
                path=str(path),
                in_arena=role == ModelRole.POLICY,
                description=description,
                **fields,
            )
        except ApplicationError as exc:
            raise command_error(exc) from exc
        arena = ", in the arena" if model.in_arena else ""
        kind = "image, " if model.kind == ModelKind.IMAGE else ""
        self.stdout.write(self.style.SUCCESS(f"{name}: registered as {model.label} ({kind}{role}{arena})"))
