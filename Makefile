# simplu-grpc — `make run` starts the whole local stack, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/simplu/v1/*.proto)
GEN_DIR := generated
GEN_STAMP := $(GEN_DIR)/simplu/v1/.stamp

.PHONY: run test check protos clean bench install lint typecheck

# The venv is rebuilt when pyproject.toml changes; nothing is installed by hand.
$(BIN)/simplu-grpc: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/simplu-grpc

run: install
	$(BIN)/simplu-grpc dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check simplu_grpc tests bench
	$(BIN)/ruff format --check simplu_grpc tests bench

typecheck: install
	$(BIN)/mypy

check: lint typecheck

# Latency and warm-path counters, then capacity next to a bare echo server (bench/README.md).
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.capacity $(CAPACITY_ARGS)

# Generated code is a file target: rebuilt only when a .proto changes (or by `make protos`).
$(GEN_STAMP): $(PROTOS) | install
	$(BIN)/python tools/protogen.py $(GEN_DIR)
	touch $@

# `make protos` always rebuilds; the stamp rule rebuilds only when a .proto is newer.
protos: install
	$(BIN)/python tools/protogen.py $(GEN_DIR)
	touch $(GEN_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
