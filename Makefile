# The two set-up commands (README): `make demo` and `make test`.
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the suite is built to run in parallel; 0 runs it in one.
# worksteal: an idle process takes queued tests from a busy one (the long end-to-end tests otherwise leave one process working alone at the end).
PYTEST_WORKERS ?= 2
export HPO_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup setup-test test test-all demo lint

## The Python environment (.venv with every extra).
setup:
	bash scripts/setup.sh

## Also the Debian packages only the tests need (chromium, docker-compose, slurm-wlm, shellcheck).
setup-test:
	bash scripts/setup.sh --system

## Run the test suite (fast: no full-size training); installs everything first.
test: setup-test
	.venv/bin/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## Everything, including the full-MNIST equivalence run.
test-all: setup-test
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## Server + workers + a quick study on the embedded SQLite default (no system packages).
demo: setup
	bash scripts/demo.sh $(DEMO_ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
	.venv/bin/python scripts/mypy_ratchet.py
