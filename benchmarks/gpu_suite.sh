#!/usr/bin/env bash
# The GPU benchmarks of issue #15 in one go, for a lent H100/H200 (about 6-8 minutes on an H100):
#
#   benchmarks/gpu_suite.sh                     # from anywhere; it works in the repository root
#
# 1. the card (nvidia-smi) and a preflight: Python packages, CUDA, the PostgreSQL server (a throwaway one is
#    started when none answers and PostgreSQL's binaries are there), before anything slow;
# 2. the Qwen2.5-0.5B-shaped random-weight model, built once (benchmarks/realistic_model.py);
# 3. generation: raw batched `generate` against a platform generation job (and raw vLLM when installed; when
#    vLLM is installed and `Model` has an `engine` field, a second run with the platform's vLLM engine);
# 4. DPO, full fine-tune: raw TRL against a platform training run;
# 5. DPO with LoRA and gradient checkpointing (checkpointing only where TrainingConfig has the field): it must
#    finish on both sides.
# A step that fails is reported and the next one runs; the exit status is 1 when any failed.
#
# Environment: PYTHON (default: .venv/bin/python where it runs, else python3), DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; the benchmarks create their own databases on that server),
# SUITE_LOGS (default: $OUT when set, else /tmp/prefarena-gpu-suite: one log per step), STEP_TIMEOUT (seconds
# per step, 300), and the sizes below (GEN_*, TRAIN_*) to shrink or grow a run.
set -euo pipefail
cd "$(dirname "$0")/.."

GEN_PROMPTS=${GEN_PROMPTS:-128}
GEN_BATCH=${GEN_BATCH:-64}
GEN_TOKENS=${GEN_TOKENS:-128}
GEN_REPEATS=${GEN_REPEATS:-2}
TRAIN_STEPS=${TRAIN_STEPS:-20}
TRAIN_BATCH=${TRAIN_BATCH:-8}
TRAIN_REPEATS=${TRAIN_REPEATS:-2}
TRAIN_SENTENCES=${TRAIN_SENTENCES:-6}   # corpus sentences added to each answer: rows of ~150 tokens
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
LOGS=${SUITE_LOGS:-${OUT:-/tmp/prefarena-gpu-suite}}
mkdir -p "$LOGS"
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # nothing to fetch: no network there

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import sys' 2>/dev/null; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
suite_started=$SECONDS
failed=()

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "python: $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

echo "== preflight"
"$PYTHON" - <<'EOF'
import importlib, sys
needed = ["torch", "transformers", "tokenizers", "safetensors", "accelerate", "datasets", "trl", "peft",
          "django", "rest_framework", "drf_spectacular", "django_filters", "channels", "celery", "kombu",
          "redis", "psycopg", "dj_database_url", "numpy", "scipy", "sklearn", "krippendorff", "markdown",
          "nh3", "httpx"]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:  # an ImportError, or a package that fails while importing
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    sys.exit("missing Python packages (`make install`, or carry wheels): " + "; ".join(missing))
import torch, transformers, trl, peft
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
versions = {m.__name__: m.__version__ for m in (torch, transformers, trl, peft)}
try:
    import vllm
    versions["vllm"] = vllm.__version__
except Exception as error:  # not installed, or broken: the suite then skips its vLLM side
    versions["vllm"] = f"unavailable ({type(error).__name__})"
print("packages:", ", ".join(f"{k} {v}" for k, v in versions.items()), "| GPU:", torch.cuda.get_device_name(0))
EOF

database_answers() {
    "$PYTHON" -c 'import os, psycopg; psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=3).close()' 2>/dev/null
}
if ! database_answers; then
    # No server at DATABASE_URL: start a throwaway one (initdb refuses root, so it runs as a user of its own).
    pg_bin=${PG_BIN:-$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1 || echo /nonexistent/initdb)")}
    if [[ ! -x "$pg_bin/initdb" ]]; then
        echo "no PostgreSQL server at $DATABASE_URL and no initdb (set PG_BIN or DATABASE_URL)" >&2
        exit 2
    fi
    pg_dir=/tmp/prefarena-suite-pg
    run_as=()
    if [[ $(id -u) == 0 ]]; then
        id prefarena-pg >/dev/null 2>&1 || useradd --system --no-create-home prefarena-pg
        run_as=(runuser -u prefarena-pg --)
    fi
    rm -rf "$pg_dir" && mkdir -p "$pg_dir" && chmod 700 "$pg_dir"
    if [[ $(id -u) == 0 ]]; then chown prefarena-pg "$pg_dir"; fi
    "${run_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust >"$LOGS/postgres-init.log"
    "${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
        -o "-p 54329 -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    # pg_ctl detaches the server: stop it with the suite, whatever way the suite ends.
    trap '"${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" stop -m fast >/dev/null 2>&1 || true' EXIT
    export DATABASE_URL=postgres://postgres@127.0.0.1:54329/postgres
    database_answers || { echo "the throwaway PostgreSQL server did not answer ($pg_dir/server.log)" >&2; exit 2; }
    echo "database: throwaway PostgreSQL at $DATABASE_URL"
else
    echo "database: $DATABASE_URL answers"
fi

# step NAME COMMAND...: runs COMMAND under the step time-out, output to the screen and to $LOGS/NAME.log.
step() {
    local name=$1
    shift
    local started=$SECONDS
    echo
    echo "== $name: $*"
    if timeout --kill-after=15 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$LOGS/$name.log"; then
        echo "-- $name: done in $((SECONDS - started)) s"
    else
        echo "-- $name: FAILED (status ${PIPESTATUS[0]}) after $((SECONDS - started)) s; log $LOGS/$name.log"
        failed+=("$name")
    fi
}

step model "$PYTHON" benchmarks/realistic_model.py --size 0.5b

step generation "$PYTHON" benchmarks/generation.py --size 0.5b --device cuda --prompts "$GEN_PROMPTS" \
    --batch-size "$GEN_BATCH" --max-new-tokens "$GEN_TOKENS" --repeats "$GEN_REPEATS" --db-name prefarena_bench_gen_gpu

has_vllm=$("$PYTHON" -c 'import importlib.util; print(int(importlib.util.find_spec("vllm") is not None))')
if [[ $has_vllm == 1 ]] && grep -Eq '^\s+engine = models\.' models_hub/models.py; then
    step generation-vllm-engine "$PYTHON" benchmarks/generation.py --size 0.5b --device cuda --engine vllm --no-vllm \
        --prompts "$GEN_PROMPTS" --batch-size "$GEN_BATCH" --max-new-tokens "$GEN_TOKENS" --repeats "$GEN_REPEATS" \
        --db-name prefarena_bench_gen_gpu
else
    echo "(no run with the platform's vLLM engine: vllm installed=$has_vllm, Model.engine present=$(grep -Ec '^\s+engine = models\.' models_hub/models.py || true))"
fi

training=("$PYTHON" benchmarks/training.py --size 0.5b --device cuda --steps "$TRAIN_STEPS" --batch-size "$TRAIN_BATCH"
    --max-length 512 --answer-sentences "$TRAIN_SENTENCES" --db-name prefarena_bench_train_gpu)
step training-full "${training[@]}" --learning-rate 5e-6 --repeats "$TRAIN_REPEATS"

checkpointing=()
if "$PYTHON" -c 'import dataclasses, sys; from workers.ml.training_config import TrainingConfig as C; sys.exit("gradient_checkpointing" not in {f.name for f in dataclasses.fields(C)})'; then
    checkpointing=(--gradient-checkpointing)
else
    echo "(TrainingConfig has no gradient_checkpointing field: the LoRA run trains without checkpointing)"
fi
step training-lora "${training[@]}" --learning-rate 1e-4 --repeats 1 --lora "${checkpointing[@]}"

echo
echo "== summary ($((SECONDS - suite_started)) s in all; logs in $LOGS)"
nvidia-smi --query-gpu=name --format=csv,noheader
for name in generation generation-vllm-engine training-full training-lora; do
    if [[ -f "$LOGS/$name.log" ]]; then
        grep -E '^(median|memory|raw vLLM)' "$LOGS/$name.log" | sed "s/^/$name: /" || true
    fi
done
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all steps finished"
