"""PrefArena settings: one module, driven by environment variables (see .env.example).

With no variables set the app runs on its embedded default: an SQLite file, Channels'
in-memory layer and a Celery broker on the local filesystem, so `make demo` needs no server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from prefarena.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PREFARENA_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)


def _embedded_secret_key(var_dir: Path) -> str:
    """The embedded default's own key: generated once into var/secret_key (owner-only), then read back."""
    import secrets

    path = var_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = env_str("SECRET_KEY") or ""  # unset and empty alike: see below
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105
    elif not env_str("DATABASE_URL"):
        # The embedded default (SQLite in var/, no DATABASE_URL): commands and the demo just work, with a key
        # generated once for this checkout. A deployment names its database, and must then give SECRET_KEY.
        SECRET_KEY = _embedded_secret_key(VAR_DIR)
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (a long random string), or DEBUG=1 for development."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # before staticfiles: `runserver` then serves ASGI (websockets included)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "models_hub",
    "annotations",
    "arena",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "prefarena.csp.content_security_policy",  # outermost after security: every answer gets the policy
    "prefarena.middleware.refuse_nul_in_url",
    "prefarena.body_limits.refuse_bad_bodies",  # 413 / too-deep JSON before any session or view
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost: sees what a view raised. Redis or the broker unavailable: 503 JSON (/api/) or page, not a 500.
    "prefarena.middleware.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "prefarena.urls"
WSGI_APPLICATION = "prefarena.wsgi.application"
ASGI_APPLICATION = "prefarena.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "annotations.context_processors.workspace",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_POOL", True):
        # Under ASGI every request runs its sync code in a thread of its own, and connections are per
        # thread: without a pool each request opened (and closed) a PostgreSQL connection. psycopg's
        # pool is shared by the process's threads (Django >= 5.1). DB_POOL=0 turns it off, e.g. behind
        # PgBouncer; DB_CONN_MAX_AGE (persistent connections) then applies instead.
        if DATABASES["default"]["CONN_MAX_AGE"]:
            raise ImproperlyConfigured("DB_CONN_MAX_AGE needs DB_POOL=0: pooled connections are not kept per thread")
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": env_int("DB_POOL_MAX_SIZE", 8),
            "timeout": env_int("DB_POOL_TIMEOUT", 30),
        }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_PREPARED_STATEMENTS", True):
        # Django leaves psycopg's prepare_threshold at None, which also ignores an explicit prepare=True; the
        # arena's vote statement (arena/tally.py) is prepared once per connection (planning it cost more than
        # running it). Django's own queries bind client-side and are never prepared. DB_PREPARED_STATEMENTS=0
        # behind a pooler that cannot keep them (PgBouncer < 1.21 in transaction mode).
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "prefarena.sqlite3"),
            # The demo's web server and worker share the file: wait for locks instead of failing.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, channel layer, cache --------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# Every Redis client fails within these bounds when Redis is down or hung (SIGSTOP, a dead host), so a request
# answers 503 in ~1 s (prefarena/middleware.py) instead of waiting out the outage (redis-py's default: 5 s
# per command; the channel layer's 30 s; kombu's publish: forever). Redis answers our commands in
# milliseconds: a second is generous. Connect and read time-out alike.
REDIS_TIMEOUT_SECONDS = env_int("REDIS_TIMEOUT_MS", 1000) / 1000
if REDIS_URL:
    # channels_redis blocks 5 s in BZPOPMIN waiting for messages: an idle websocket's consumer crashed after
    # ~5 s with redis-py's 5 s read timeout. Reads must outlast the block (30 s); sends are bounded apart
    # (prefarena/channel_layer.py), so a broadcast from a web request gives up after the socket timeout.
    CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "prefarena.channel_layer.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                    }
                ],
                "send_timeout": REDIS_TIMEOUT_SECONDS,
            },
        }
    }
    CACHES: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "prefarena.cache.RedisCache",  # Django's, with one client per pool
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                # One pool per process: under ASGI each request has its own cache object (prefarena/cache.py).
                # Sessions (cached_db) and rate limits (prefarena.cache.redis_client) use this pool too.
                "pool_class": "prefarena.cache.SharedConnectionPool",
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
            },
        }
    }
    # Sessions read from Redis, written through to the database: every arena request loads its
    # session, and that read was one SQL query per vote.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
CELERY_TASK_IGNORE_RESULT = True  # job rows in the database carry status and progress
CELERY_TASK_ALWAYS_EAGER = False  # long jobs never run inside a web request
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker outlives any Redis outage: it retries the broker for ever (Celery's default gives up after 100
# tries, and the worker exits); supervision (deploy/supervisord.conf) restarts whatever dies anyway.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Running tasks are not cancelled when the broker connection drops: a training run would lose hours for a
# Redis restart, and the job protocol (prefarena/jobs/protocol.py) makes a second delivery of a task harmless.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# `.delay()` inside a request: no retry, the error (503) after one socket time-out; each retry cost another
# (3 s with Redis hung). redis-py replaces a pooled connection that died with a restarted Redis before using
# it, so the first publish after a restart succeeds. Job rows are the truth: the job reaper enqueues a
# queued job again (WORKERS_JOB_REQUEUE_SECONDS); webhooks, vote sweeps and reapers run on the beat.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),  # default is ./control in the cwd
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest job, so Redis never re-delivers a task still running (acks_late).
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7 * 3600),
        # A publish to a hung Redis fails instead of hanging the request (workers wait longer: prefarena/celery.py).
        # The worker's BRPOP waits in the event loop, where no socket time-out applies; kombu drops a silent
        # BRPOP connection after brpop_timeout + health_check_interval.
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
    }
    if CELERY_BROKER_URL.startswith("redis://"):
        # kombu's Redis transport with a fix: a worker survives Redis dying under load (prefarena/broker.py).
        CELERY_BROKER_TRANSPORT = "prefarena.broker:Transport"
CELERY_BEAT_SCHEDULE = {
    "annotations-reap-expired-leases": {
        "task": "annotations.tasks.assignment_leases_reap",
        "schedule": 60.0,
    },
    "workers-reap-jobs": {"task": "workers.tasks.jobs_reap", "schedule": 30.0},
    "arena-leaderboard-recompute": {"task": "arena.tasks.leaderboard_recompute", "schedule": 60.0},
    "arena-expire-stuck-battles": {"task": "arena.tasks.battles_expire_stuck", "schedule": 60.0},
    "arena-votes-apply": {"task": "arena.tasks.votes_apply", "schedule": 5.0},
    "workers-retrain-policies": {
        "task": "workers.tasks.retrain_policies_check",
        "schedule": float(env_int("RETRAIN_POLICIES_CHECK_SECONDS", 60)),
    },
    "annotations-webhook-deliveries-due": {"task": "annotations.tasks.webhook_deliveries_due", "schedule": 30.0},
    "annotations-snapshots-reap": {"task": "annotations.tasks.snapshots_reap", "schedule": 60.0},
}
# gpu-queue tasks: ack after the work, requeue if the worker process dies, one task at a time.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True

# --- Auth, REST API -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Request bodies: Django's 2.5 MB default for every endpoint; bulk item imports (up to 10,000 items a request)
# take up to DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT (prefarena/body_limits.py). Larger bodies are refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT", 64 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "prefarena.parsers.StrictJSONParser",
        "prefarena.parsers.StrictFormParser",
        "prefarena.parsers.StrictMultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "prefarena.pagination.LimitOffsetPagination",  # limit 1..1000, else 400
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "prefarena.schema.AutoSchema",  # declares the error responses (4xx, 503)
    "EXCEPTION_HANDLER": "prefarena.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PrefArena API",
    "DESCRIPTION": "Preference feedback collection: campaigns, items, leases, judgments.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two models have a `role` field with different choices: name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "ModelRoleEnum": "models_hub.models.ModelRole",
        "ModelKindEnum": "models_hub.models.ModelKind",
        "CampaignKindEnum": "annotations.models.CampaignKind",
        "MemberRoleEnum": "annotations.models.MemberRole",
        "WebhookEventEnum": "annotations.models.WebhookEvent",
        "WebhookDeliveryStatusEnum": "annotations.models.WebhookDeliveryStatus",
        "JobStatusEnum": "prefarena.jobs.model.JobStatus",
    },
}

# --- Security (production values come from env; `check --deploy` passes with .env.example) ----
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
X_FRAME_OPTIONS = "DENY"

# --- i18n, static -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# --- stored images (annotations/images.py) ------------------------------------------------------
# Images (responses, prompt messages) go through Django's storage API, storage "default": files under
# PREFARENA_MEDIA_DIR in the embedded default; any storage backend (e.g. django-storages' S3) by naming its class
# in PREFARENA_STORAGE_BACKEND with its options as a JSON object in PREFARENA_STORAGE_OPTIONS. Images are never
# served from the storage's own URLs: /images/<sha256> reads them back and checks access.
MEDIA_ROOT = Path(env_str("PREFARENA_MEDIA_DIR") or VAR_DIR / "media")
MEDIA_URL = "media/"  # unused: nothing links to the storage directly
_STORAGE_BACKEND = env_str("PREFARENA_STORAGE_BACKEND") or "django.core.files.storage.FileSystemStorage"
try:
    _STORAGE_OPTIONS = json.loads(env_str("PREFARENA_STORAGE_OPTIONS") or "null")
except ValueError as _exc:
    raise ImproperlyConfigured(f"PREFARENA_STORAGE_OPTIONS must be a JSON object: {_exc}") from None
if _STORAGE_OPTIONS is None:
    _STORAGE_OPTIONS = {"location": str(MEDIA_ROOT)} if _STORAGE_BACKEND.endswith(".FileSystemStorage") else {}
if not isinstance(_STORAGE_OPTIONS, dict):
    raise ImproperlyConfigured("PREFARENA_STORAGE_OPTIONS must be a JSON object")
STORAGES = {
    "default": {"BACKEND": _STORAGE_BACKEND, "OPTIONS": _STORAGE_OPTIONS},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Largest image accepted (bytes, as sent) and largest decoded size (pixels: width x height); larger ones are
# refused before they are decoded, so a small file claiming a huge canvas (a decompression bomb) is refused too.
PREFARENA_IMAGE_MAX_BYTES = env_int("PREFARENA_IMAGE_MAX_BYTES", 10 * 1024 * 1024)
PREFARENA_IMAGE_MAX_PIXELS = env_int("PREFARENA_IMAGE_MAX_PIXELS", 40_000_000)

# --- PrefArena ----------------------------------------------------------------------------------
PREFARENA_IMPORT_MAX_ITEMS = env_int("PREFARENA_IMPORT_MAX_ITEMS", 100_000)
# Training runs write into <PREFARENA_TRAINING_DIR>/run-<id> (a folder fixed by the run id).
PREFARENA_TRAINING_DIR = Path(env_str("PREFARENA_TRAINING_DIR") or VAR_DIR / "training")
# Dataset snapshots are written once into <PREFARENA_SNAPSHOT_DIR>/<id> (a folder fixed by the snapshot id).
PREFARENA_SNAPSHOT_DIR = Path(env_str("PREFARENA_SNAPSHOT_DIR") or VAR_DIR / "snapshots")
# Webhooks: attempts per delivery, first back-off (doubles each attempt, at most 1 h), request time-out.
PREFARENA_WEBHOOK_MAX_ATTEMPTS = env_int("PREFARENA_WEBHOOK_MAX_ATTEMPTS", 6)
PREFARENA_WEBHOOK_BACKOFF_SECONDS = env_int("PREFARENA_WEBHOOK_BACKOFF_SECONDS", 30)
PREFARENA_WEBHOOK_TIMEOUT_SECONDS = env_int("PREFARENA_WEBHOOK_TIMEOUT_SECONDS", 10)
# Jobs: an attempt renews its lease every batch; a lease this old means the worker died.
WORKERS_JOB_LEASE_SECONDS = env_int("WORKERS_JOB_LEASE_SECONDS", 120)
# A queued job not picked up for this long is enqueued again (a lost broker message).
WORKERS_JOB_REQUEUE_SECONDS = env_int("WORKERS_JOB_REQUEUE_SECONDS", 600)
# Hard time limit of one gpu task (seconds); the soft limit comes WORKERS_TASK_SOFT_MARGIN seconds earlier: a
# training attempt then saves a checkpoint and stops, and the next attempt resumes from it. Leave enough margin
# to write one checkpoint of your largest model (weights + optimizer state: ~16 bytes per trained parameter).
WORKERS_TASK_TIME_LIMIT = env_int("WORKERS_TASK_TIME_LIMIT", 6 * 3600)
WORKERS_TASK_SOFT_MARGIN = env_int("WORKERS_TASK_SOFT_MARGIN", 300)
# Training across processes (workers/training/launcher.py): processes per run when the run does not say
# (0: one per visible GPU; 1 = inside the worker), and an accelerate config file (DDP, FSDP, DeepSpeed, several
# machines) used for every launched run whose `distributed` is auto.
PREFARENA_TRAINING_PROCESSES = env_int("PREFARENA_TRAINING_PROCESSES", 0)
PREFARENA_ACCELERATE_CONFIG = env_str("PREFARENA_ACCELERATE_CONFIG") or ""
# Engine of local checkpoints whose registered `engine` is "default" (workers/ml/vllm_engine.py): auto (vLLM when
# installed and a GPU is present, else transformers), hf, or vllm (falls back to transformers, with a warning).
PREFARENA_GENERATION_ENGINE = env_choice("PREFARENA_GENERATION_ENGINE", "auto", ("auto", "hf", "vllm"))
# Denoising steps of a local diffusers pipeline (image arena models, backend "diffusers").
PREFARENA_DIFFUSERS_STEPS = env_int("PREFARENA_DIFFUSERS_STEPS", 25)

# Arena (anonymous battles). Voter IPs are read from X-Forwarded-For only behind these proxies.
ARENA_TRUSTED_PROXIES = env_list("ARENA_TRUSTED_PROXIES", [])
ARENA_MAX_PROMPT_CHARS = env_int("ARENA_MAX_PROMPT_CHARS", 4000)
ARENA_TOKEN_MAX_AGE = env_int("ARENA_TOKEN_MAX_AGE", 3600)  # seconds a battle token stays valid
ARENA_VOTES_PER_MINUTE_SESSION = env_int("ARENA_VOTES_PER_MINUTE_SESSION", 10)
ARENA_VOTES_PER_MINUTE_IP = env_int("ARENA_VOTES_PER_MINUTE_IP", 30)
ARENA_DAILY_VOTE_CAP = env_int("ARENA_DAILY_VOTE_CAP", 200)  # per session and per IP
ARENA_BATTLES_PER_MINUTE_SESSION = env_int("ARENA_BATTLES_PER_MINUTE_SESSION", 10)
# Per client IP too: a script that drops its session cookie starts a new session at every request, and a
# live battle is a GPU generation. Limits are sliding windows (arena/ratelimit.py).
ARENA_BATTLES_PER_MINUTE_IP = env_int("ARENA_BATTLES_PER_MINUTE_IP", 10)
# Votes are counted write-behind in batches (arena/tally.py): a vote request applies the pending votes
# when none were applied in the last this-many milliseconds; 0 = every vote applies at once. Counts and the
# online Elo lag by at most this much under load; a batch's fixed cost (~10 statements) is then shared by
# more votes (1000 vs 100: +2-4 points of the ceiling share in benchmarks/votes.py).
ARENA_VOTE_APPLY_INTERVAL_MS = env_int("ARENA_VOTE_APPLY_INTERVAL_MS", 1000)
# Campaigns (names) whose prompts anonymous visitors may draw for pre-generated battles; empty: every
# active campaign. Set it in production: a drawn prompt and its stored answers become public.
ARENA_POOL_CAMPAIGNS = env_list("ARENA_POOL_CAMPAIGNS", [])
# A live battle still generating after this long is ended as an error (a worker died or the queue is stuck).
ARENA_GENERATION_TIMEOUT_SECONDS = env_int("ARENA_GENERATION_TIMEOUT_SECONDS", 300)
# Leaderboard intervals (arena/intervals.py): closed-form sandwich (default, as LMArena) or bootstrap; with
# ARENA_REWEIGHT, battles are inverse-frequency reweighted per pair (sandwich only).
ARENA_INTERVALS = env_choice("ARENA_INTERVALS", "sandwich", ("sandwich", "bootstrap"))
ARENA_REWEIGHT = env_bool("ARENA_REWEIGHT", False)
# A model stays provisional (shown, left out of the ranking) until it has this many counted battles and a
# 95% interval no wider than this many Elo points (0: no width condition).
ARENA_PROVISIONAL_MIN_BATTLES = env_int("ARENA_PROVISIONAL_MIN_BATTLES", 0)
ARENA_PROVISIONAL_MAX_CI_WIDTH = env_int("ARENA_PROVISIONAL_MAX_CI_WIDTH", 0)
# A model version that enters the arena (promoted, or put there; `Model.arena_since`) stays provisional until it
# has this many counted battles since it entered, whatever it played before (0: off).
ARENA_PROVISIONAL_FRESH_BATTLES = env_int("ARENA_PROVISIONAL_FRESH_BATTLES", 0)
# Controlled leaderboards (arena/controlled.py) fitted at each recompute and served as ?control=…: covariate
# groups joined by "+" among style, position and the names of ARENA_BATTLE_FEATURES (numeric features a
# deployment stores on battles as <name>_a / <name>_b).
ARENA_CONTROLS = env_list("ARENA_CONTROLS", ["style", "position", "style+position"])
ARENA_BATTLE_FEATURES = env_list("ARENA_BATTLE_FEATURES", [])
# Which two models battle (arena/pairing.py): "active" draws pairs by the expected shrinking of the intervals of
# the top ARENA_PAIRING_TOP_K (and of models that may enter it), mixed with ARENA_PAIRING_FLOOR of the weighted
# draw; "weighted" draws by each model's arena_weight alone. Pair probabilities are recomputed at most every
# ARENA_PAIRING_REFRESH_SECONDS per process. Either way each battle stores its pair's probability.
ARENA_PAIRING = env_choice("ARENA_PAIRING", "active", ("active", "weighted"))
ARENA_PAIRING_FLOOR = env_float("ARENA_PAIRING_FLOOR", 0.1)
if not 0 < ARENA_PAIRING_FLOOR <= 1:
    raise ImproperlyConfigured(f"ARENA_PAIRING_FLOOR must be in (0, 1], got {ARENA_PAIRING_FLOOR}")
ARENA_PAIRING_TOP_K = env_int("ARENA_PAIRING_TOP_K", 5)
if ARENA_PAIRING_TOP_K < 1:
    raise ImproperlyConfigured(f"ARENA_PAIRING_TOP_K must be at least 1, got {ARENA_PAIRING_TOP_K}")
ARENA_PAIRING_REFRESH_SECONDS = env_int("ARENA_PAIRING_REFRESH_SECONDS", 30)
# Weighted fits count at most this many votes per near-duplicate prompt cluster (arena/hygiene.py): a cluster
# with n > cap counted votes weighs each cap / n.
ARENA_PROMPT_CLUSTER_CAP = env_int("ARENA_PROMPT_CLUSTER_CAP", 20)
if ARENA_PROMPT_CLUSTER_CAP < 1:
    raise ImproperlyConfigured(f"ARENA_PROMPT_CLUSTER_CAP must be at least 1, got {ARENA_PROMPT_CLUSTER_CAP}")
# The live leaderboard's fits (plain and controlled) weight each counted vote by its inverse-propensity weight
# (active pairing) times its prompt-cluster cap; off: every vote weighs 1, as imported battles always do.
ARENA_FIT_WEIGHTS = env_bool("ARENA_FIT_WEIGHTS", True)
# Live ratings (plain, controlled, per source) less the maximum-likelihood fit's first-order bias (Cox–Snell; what
# active pairing's weighted battles otherwise carry: arena/intervals.py). Off: the plain MLE, as arena-rank's.
ARENA_BIAS_CORRECTION = env_bool("ARENA_BIAS_CORRECTION", True)
# The fused leaderboard (arena/sources.py): each source's weight, "source=number" or "source=auto" (learned from
# its agreement with human judgments on shared items; humans themselves weigh 1). A learned weight needs at least
# ARENA_SOURCE_MIN_SHARED shared decisive items, else the source is left out of the fused fit.
ARENA_SOURCE_WEIGHTS: dict[str, float | str] = {}
for _part in env_list("ARENA_SOURCE_WEIGHTS", ["arena=1", "human=1", "llm=auto"]):
    _source, _, _value = _part.partition("=")
    if _source.strip() not in ("arena", "human", "llm"):
        raise ImproperlyConfigured(f"ARENA_SOURCE_WEIGHTS: unknown source {_source.strip()!r} (arena, human, llm)")
    if _value.strip() == "auto":
        ARENA_SOURCE_WEIGHTS[_source.strip()] = "auto"
        continue
    try:
        _weight = float(_value)
    except ValueError:
        _weight = -1.0
    if not 0 <= _weight < float("inf"):
        raise ImproperlyConfigured(f"ARENA_SOURCE_WEIGHTS: {_part!r} needs a number >= 0 or auto")
    ARENA_SOURCE_WEIGHTS[_source.strip()] = _weight
ARENA_SOURCE_MIN_SHARED = env_int("ARENA_SOURCE_MIN_SHARED", 20)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
