# TrackOPZ. `make run` serves the embedded default; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export FLASK_APP := wsgi

.PHONY: run test test-fast lint format migrate check-migrations seed bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed: no '$(PYTHON)' on PATH (set PYTHON=...)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask seed-demo
	@echo ""
	@echo "  TrackOPZ is starting on http://127.0.0.1:$(PORT)"
	@echo "  Pages: /workpanel  /dispatch  /dashboard     API docs: /api/docs"
	@echo ""
	PORT=$(PORT) WEB_CONCURRENCY=1 $(BIN)/gunicorn -c gunicorn.conf.py

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow and not browser"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(VENV)/.installed
	$(BIN)/flask db upgrade

check-migrations: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask db check

seed: $(VENV)/.installed
	$(BIN)/flask seed-demo

# Benchmarks (issue 7): needs Postgres and Redis on 127.0.0.1; BENCH_ARGS="--quick" for a smoke run.
bench: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
