"""python manage.py register_model NAME --role ROLE --backend BACKEND [...]: register a model version
after proving, in this process, that it loads and runs."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_hub import services
from models_hub.models import GenerationEngine, ModelBackend, ModelKind, ModelRole
from prefarena.argtypes import non_negative_float, non_negative_int, positive_int, unit_interval
from prefarena.errors import ApplicationError
from workers.management import command_error, model_from_label

DTYPES = ["auto", "float32", "bfloat16", "float16"]
LOAD_CHECK_PROMPT = "Hello! What is two plus two?"
LOAD_CHECK_ANSWER = "Two plus two is four."


class Command(BaseCommand):
    help = (
        "Register a model version. The checkpoint's files (transformers) or the endpoint's model list (openai) "
        "are checked, then - unless --no-load-check - the model is really loaded in this process: a policy or "
        "judge generates a few greedy tokens, a reward model scores one pair, an endpoint is pinged. Nothing is "
        "stored unless every check passes. The version defaults to one more than the newest of NAME."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # `--version` is the model version here; "resolve" lets it replace Django's own --version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Model name (no spaces, no '@'); versions are NAME@v1, NAME@v2, ...")
        parser.add_argument("--role", required=True, choices=ModelRole.values, help="What the model does")
        parser.add_argument("--backend", required=True, choices=ModelBackend.values, help="Where it runs")
        parser.add_argument(
            "--kind",
            choices=ModelKind.values,
            default=ModelKind.TEXT,
            help="text (default) or image: a text-to-image model for the image arena (openai: an endpoint serving "
            "/v1/images/generations; diffusers: a pipeline folder)",
        )
        local = parser.add_argument_group("transformers and diffusers backends")
        local.add_argument("--path", help="Checkpoint directory (save_pretrained output; diffusers: the pipeline's)")
        local.add_argument("--dtype", choices=DTYPES, default="auto", help="Weights dtype on load (default: auto)")
        local.add_argument(
            "--engine",
            choices=GenerationEngine.values,
            default=GenerationEngine.DEFAULT,
            help="Generation engine: default (the worker's PREFARENA_GENERATION_ENGINE), auto (vLLM when installed "
            "and a GPU is present), hf, vllm (falls back to transformers, with a warning, where it cannot run)",
        )
        remote = parser.add_argument_group("openai backend")
        remote.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8001/v1")
        remote.add_argument("--remote-model", help="Model name the endpoint expects")
        remote.add_argument("--api-key-env", default="", help="Environment variable holding the key (never the key)")
        remote.add_argument("--timeout-s", type=non_negative_float, default=60.0, help="Per-request time-out")
        remote.add_argument("--max-concurrency", type=positive_int, default=4, help="Requests in flight at once")
        defaults = parser.add_argument_group("generation defaults")
        defaults.add_argument("--max-new-tokens", type=positive_int, default=256)
        defaults.add_argument("--temperature", type=non_negative_float, default=0.7, help="0 = greedy")
        defaults.add_argument("--top-p", type=unit_interval, default=1.0)
        defaults.add_argument("--seed", type=non_negative_int, default=0)
        parser.add_argument("--version", type=positive_int, help="Version number (default: newest + 1)")
        parser.add_argument("--parent", metavar="LABEL", help="The version this one derives from (name or name@vN)")
        parser.add_argument("--description", default="")
        parser.add_argument("--in-arena", action="store_true", help="Enter the arena at once (policy models only)")
        prices = parser.add_argument_group("list prices (optional; shown on the arena leaderboard)")
        prices.add_argument("--price-input", type=non_negative_float, help="US dollars per million prompt tokens")
        prices.add_argument("--price-output", type=non_negative_float, help="US dollars per million generated tokens")
        parser.add_argument(
            "--no-load-check", action="store_true", help="Skip loading the model (structural checks still run)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name, role, backend = options["name"], options["role"], options["backend"]
        if not name.strip() or "@" in name or any(c.isspace() for c in name):
            raise CommandError(f"{name!r}: a model name has no spaces and no '@'")
        if options["in_arena"] and role != ModelRole.POLICY:
            raise CommandError(f"--in-arena: only policy models enter the arena, not a {role} model")
        fields: dict[str, Any] = {
            "max_new_tokens": options["max_new_tokens"],
            "temperature": options["temperature"],
            "top_p": options["top_p"],
            "seed": options["seed"],
            "in_arena": options["in_arena"],
            "description": options["description"],
            "timeout_s": options["timeout_s"],
            "max_concurrency": options["max_concurrency"],
            "kind": options["kind"],
        }
        for option, field in (("price_input", "price_input_per_million"), ("price_output", "price_output_per_million")):
            if options.get(option) is not None:
                fields[field] = Decimal(str(options[option]))
        if options["timeout_s"] <= 0:
            raise CommandError("--timeout-s must be positive")
        if options["parent"]:
            fields["parent"] = model_from_label(options["parent"], option="--parent")
        if backend == ModelBackend.DIFFUSERS:
            if not options["path"]:
                raise CommandError("--path is required with --backend diffusers")
            fields.update(path=options["path"], dtype=options["dtype"])
        elif backend == ModelBackend.TRANSFORMERS:
            if not options["path"]:
                raise CommandError("--path is required with --backend transformers")
            fields.update(path=options["path"], dtype=options["dtype"], engine=options["engine"])
            try:
                # Files and config first: a clear message for a directory that is no checkpoint at all.
                services.checkpoint_check(options["path"], role)
            except ApplicationError as exc:
                raise command_error(exc, suffix="; nothing was registered") from exc
        else:
            if not options["base_url"] or not options["remote_model"]:
                raise CommandError("--base-url and --remote-model are required with --backend openai")
            if options["engine"] != GenerationEngine.DEFAULT:
                raise CommandError("--engine applies to --backend transformers; an endpoint's server picks its engine")
            fields.update(
                base_url=options["base_url"], remote_model=options["remote_model"], api_key_env=options["api_key_env"]
            )
        if options["kind"] == ModelKind.IMAGE:
            # No generation here: the registry checks the pipeline folder or that the endpoint answers /models.
            self.stdout.write("Load check: image models are checked by the registry (folder or endpoint)")
        elif not options["no_load_check"]:
            self.stdout.write(f"Load check: loading {name} ({role}, {backend}) ...")
            self.stdout.write(f"Load check passed: {self._load_check(role, backend, fields)}")
        try:
            model = services.model_register(
                name=name, role=role, backend=backend, version=options["version"], check=True, **fields
            )
        except ApplicationError as exc:
            raise command_error(exc, suffix="; nothing was registered") from exc
        self.stdout.write(self.style.SUCCESS(f"Registered {model.label} (id {model.pk}, {role}, {backend})"))
        if model.in_arena:
            self.stdout.write(f"{model.label} is in the arena.")

    def _load_check(self, role: str, backend: str, fields: dict[str, Any]) -> str:
        """Load and run the model in this process; CommandError saying why when it does not work."""
        if backend == ModelBackend.OPENAI:
            return self._endpoint_check(fields)
        # Imported here, not at module level: torch and transformers cost seconds and hundreds of MiB, and
        # only the process running this command (or a gpu worker) may load them. Importing this module, as
        # tests and tools that list commands do, must stay cheap and torch-free.
        path, dtype = fields["path"], fields["dtype"]
        try:
            if role == ModelRole.REWARD:
                from workers.ml.reward import RewardModel

                scores = RewardModel(path, dtype=dtype).score([(LOAD_CHECK_PROMPT, LOAD_CHECK_ANSWER)])
                if len(scores) != 1 or not math.isfinite(scores[0]):
                    raise ValueError(f"the reward model returned {scores} for one pair")
                return f"scored one pair: {scores[0]:.4f}"
            from workers.ml.generation import CausalLM
            from workers.ml.types import SamplingParams

            completion = CausalLM(path, dtype=dtype).generate(
                [LOAD_CHECK_PROMPT], [0], SamplingParams(max_new_tokens=8, temperature=0.0)
            )[0]
            return f"generated {completion.completion_tokens} token(s) greedily: {completion.text!r}"
        except Exception as exc:  # any failure to load or run means "not usable": report which one
            raise CommandError(
                f"{path} does not load as a {role} model: {exc.__class__.__name__}: {exc}; nothing was registered"
            ) from exc

    def _endpoint_check(self, fields: dict[str, Any]) -> str:
        # torch-free, but imported here too: this module imports nothing of workers.ml.
        from workers.ml.errors import BackendError
        from workers.ml.openai_backend import OpenAIChat

        try:
            key = services.api_key_from_env(fields["api_key_env"])
        except ApplicationError as exc:
            raise command_error(exc, suffix="; nothing was registered") from exc
        try:
            with OpenAIChat(
                base_url=fields["base_url"],
                model=fields["remote_model"],
                api_key=key,
                timeout_s=fields["timeout_s"],
                max_concurrency=1,
            ) as chat:
                served = chat.ping(timeout_s=min(fields["timeout_s"], 10.0))
        except BackendError as exc:
            raise CommandError(f"load check failed: {exc}; nothing was registered") from exc
        if served and fields["remote_model"] not in served:
            raise CommandError(
                f"{fields['base_url']} does not serve {fields['remote_model']!r}; it serves "
                f"{', '.join(served[:10])}; nothing was registered"
            )
        return f"{fields['base_url']} answers and serves {fields['remote_model']!r}"
