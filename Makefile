# promptprof developer tasks (GNU make). `make test` installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
# apt-get runs as is for root (CI, these machines); through sudo for anyone else.
SUDO := $(shell if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)
QUICK ?=
BENCH_FLAGS := $(if $(filter 1,$(QUICK)),--quick,)

.PHONY: deps system-deps test lint stack-up stack-down stack-status demo bench chaos clean

## deps: the venv with promptprof[dev] (redone when pyproject.toml changes) and influxd
deps: $(STAMP) system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

# influxd for the local stack; chromium for the report's browser tests.
system-deps:
	@missing=""; \
	command -v influxd >/dev/null 2>&1 || missing="$$missing influxdb"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

## test: the whole test suite (starts its own Tansu and influxd on free ports)
test: deps
	$(BIN)/python -m pytest -q

## lint: ruff and mypy --strict
lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy

## stack-up / stack-down / stack-status: the local Tansu + InfluxDB in the background
stack-up: deps
	$(BIN)/promptprof stack up

stack-down: deps
	$(BIN)/promptprof stack down

stack-status: deps
	$(BIN)/promptprof stack status

## demo: the local stack plus demo traffic
demo: deps stack-up
	$(BIN)/promptprof demo

## bench: every bench/*.py (QUICK=1 for the short runs)
bench: deps
	@set -e; for script in bench/[!_]*.py; do \
		echo "== $$script $(BENCH_FLAGS)"; \
		$(BIN)/python "$$script" $(BENCH_FLAGS); \
	done

## chaos: fault and load scenario on a private stack, one JSON summary line (~7 min; QUICK=1: 200k label values, 20 s InfluxDB outage)
chaos: deps
	$(BIN)/python chaos/run.py $(BENCH_FLAGS)

## clean: caches, build output and the deps stamp (keeps .venv and the stack's state)
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
