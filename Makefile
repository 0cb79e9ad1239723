# Targets shared by people and CI; each just calls bootstrap.py (which needs only Python 3.11+).
PY ?= python3

.DEFAULT_GOAL := help
.PHONY: help install dev test lint typecheck unit integration bench fuzz chaos procfile

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## Create .venv and install the project with test tools
	$(PY) bootstrap.py install

dev: ## Run receiver, worker, beat, Flower (+ simulator and embedded Redis when needed)
	$(PY) bootstrap.py dev

test: ## ruff + mypy + the whole pytest suite (what CI runs)
	$(PY) bootstrap.py test

lint: ## ruff check
	$(PY) bootstrap.py lint

typecheck: ## mypy on the packages
	$(PY) bootstrap.py typecheck

unit: ## Tests without a Celery worker
	$(PY) bootstrap.py unit

integration: ## Tests with real Redis, Celery workers and the simulator
	$(PY) bootstrap.py integration

bench: ## Benchmarks: run them all, write docs/benchmarks.md and docs/img/*.png
	$(PY) bootstrap.py bench

fuzz: ## Longer fuzz session of the endpoints and the mapping (--seconds 300), prints JSON
	$(PY) bootstrap.py fuzz

chaos: ## Chaos run on loopback (kills, Redis restart, LeadLex faults), prints JSON; --short for CI
	$(PY) bootstrap.py chaos

procfile: ## Run the Procfile with honcho, .venv/bin on PATH (no venv activation needed)
	$(PY) bootstrap.py procfile
