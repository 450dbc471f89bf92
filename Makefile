# PrefArena — the two commands a new user needs are `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: install demo test lint format migrate worker clean

install: $(STAMP)

# torch first and pinned: the on-disk CPU wheel; anything else would pull the CUDA stack (GBs).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "PrefArena needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[ml,dev,diffusers]"
	touch $(STAMP)

# Embedded default: SQLite file under var/, in-memory channel layer, filesystem Celery broker.
demo: install
	env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL DEBUG=1 $(PY) manage.py demo

test: install
	$(PY) -m ruff check .
	DEBUG=1 $(PY) -m mypy
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PY) scripts/check_services.py
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} DEBUG=1 \
		$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

worker: install
	DEBUG=1 $(VENV)/bin/celery -A prefarena worker -Q default,gpu --concurrency 1 --prefetch-multiplier 1 -l info

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
