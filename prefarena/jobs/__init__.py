"""The job layer, below every app: what all long-running jobs share.

- `model.py`: the abstract job row (status, attempts, lease, heartbeat, cancellation, progress);
- `kinds.py`: the registry of job kinds (name, model, who may see one), filled by the apps' `ready()`;
- `protocol.py`: claim / heartbeat / finish / reap (conditional updates: exactly one attempt owns a job);
- `events.py`: live progress broadcast to a job's page and socket.

It imports nothing from the apps, so `annotations` (dataset snapshots), `models_hub` (training runs) and
`workers` (generation, scoring, judge jobs) all build on it. ARCHITECTURE.md, "Jobs and events".
"""
