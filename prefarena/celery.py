"""Celery app. Queues: `default` (CPU work) and `gpu` (models); routing is by task module."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefarena.settings")

app = Celery("prefarena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("gpu", Exchange("gpu"), routing_key="gpu"),
)
app.conf.task_default_queue = "default"
app.conf.task_default_exchange = "default"
app.conf.task_default_routing_key = "default"
# Everything under workers/ touches models on accelerators; everything else is light CPU work.
# Exact names are matched before globs: the job reaper is bookkeeping and must not wait behind training.
app.conf.task_routes = {
    "workers.tasks.jobs_reap": {"queue": "default"},
    "workers.tasks.retrain_policies_check": {"queue": "default"},
    # Routing is DB work; judge jobs pass their queue explicitly (gpu: local model, default: HTTP endpoint).
    "workers.tasks.campaign_route": {"queue": "default"},
    "workers.*": {"queue": "gpu"},
}
app.autodiscover_tasks()


@app.on_after_configure.connect
def _ensure_filesystem_broker_folders(sender: Celery, **_: object) -> None:
    """kombu's filesystem transport needs its folders to exist before the first publish."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = options.get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


WORKER_BROKER_SOCKET_TIMEOUT_SECONDS = 10.0


@worker_init.connect
def _worker_broker_socket_timeout(sender: object, **_: object) -> None:
    """Workers wait longer on Redis than web requests do (REDIS_TIMEOUT_MS, ~1 s): closing a consuming channel
    reads the reply of kombu's 1 s BRPOP, and a worker has no one waiting on it."""
    options = app.conf.broker_transport_options
    if options and "socket_timeout" in options:
        app.conf.broker_transport_options = {
            **options,
            "socket_timeout": max(options["socket_timeout"], WORKER_BROKER_SOCKET_TIMEOUT_SECONDS),
        }
