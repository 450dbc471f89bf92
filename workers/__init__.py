"""GPU-queue Celery tasks (task modules) and `workers.ml`: pure torch code with no Django import."""
