# simplu-grpc — `make run` starts the whole local stack, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/simplu/v1/*.proto)
GEN_DIR := generated
GEN_STAMP := $(GEN_DIR)/simplu/v1/.stamp
# buf (proto lint and breaking-change checks) comes from npm, pinned by tools/buf/package-lock.json.
BUF_DIR := tools/buf
BUF := $(BUF_DIR)/node_modules/.bin/buf
BUF_STAMP := $(BUF_DIR)/node_modules/.installed
# googleapis protos the contracts may import, staged from the venv: the buf workspace's 2nd module.
PROTO_DEPS := build/proto-deps
PROTO_DEPS_STAMP := $(PROTO_DEPS)/.stamp
# The released contracts that `buf breaking` compares against (a buf image, committed).
PROTO_BASELINE := protos/simplu/v1.image.binpb

.PHONY: run test test-long check protos clean bench install client-wheel lint typecheck proto-lint proto-breaking proto-baseline k8s-validate alerts-check

# The venv is rebuilt when pyproject.toml changes; nothing is installed by hand.
$(BIN)/simplu-grpc: pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./clients/python -e '.[dev]'
	touch $@

# `npm ci` installs exactly the locked version; no install scripts run (bin/buf is a small node
# launcher for the platform binary the package ships).
$(BUF_STAMP): $(BUF_DIR)/package.json $(BUF_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 18+) is needed to install buf" >&2; exit 1; }
	npm ci --prefix $(BUF_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/simplu-grpc $(BUF_STAMP)

run: install
	$(BIN)/simplu-grpc dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long acceptance runs (minutes): a 100,000-resource location moved under load through two
# server processes, and a move resumed after its server was killed (tests/long/).
test-long: install
	SIMPLU_LONG_TESTS=1 $(BIN)/python -m pytest tests/long -s -p no:randomly --timeout=3600 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check simplu_grpc tests bench clients
	$(BIN)/ruff format --check simplu_grpc tests bench clients

typecheck: install
	$(BIN)/mypy

# The staged copy follows the venv: it is refreshed whenever the venv is rebuilt.
$(PROTO_DEPS_STAMP): $(BIN)/simplu-grpc tools/protogen.py
	$(BIN)/python tools/protogen.py --deps $(PROTO_DEPS)
	touch $@

proto-lint: $(BUF_STAMP) $(PROTO_DEPS_STAMP)
	$(BUF) lint protos

# Imports (well-known types, googleapis) are not ours: only simplu/v1 is checked.
proto-breaking: $(BUF_STAMP) $(PROTO_DEPS_STAMP)
	$(BUF) breaking protos --against $(PROTO_BASELINE) --exclude-imports

# Run ONLY when a release of the contracts is cut: it makes today's protos the baseline that every
# later change must stay compatible with. Commit the image with the release.
proto-baseline: $(BUF_STAMP) $(PROTO_DEPS_STAMP)
	$(BUF) build protos --exclude-source-info -o $(PROTO_BASELINE)

# The manifests, strictly against the Kubernetes schemas (unknown fields are errors).
k8s-validate: install
	$(BIN)/kubernetes-validate --strict --quiet deploy/k8s/*.yaml

# Alert rules and their unit tests. promtool comes with Debian's prometheus package (.ci/run installs
# it; on a laptop: apt-get install prometheus, or brew install prometheus).
alerts-check:
	@command -v promtool >/dev/null || { echo "promtool is needed: apt-get install prometheus" >&2; exit 1; }
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts.test.yaml

check: lint typecheck proto-lint proto-breaking k8s-validate alerts-check

# The light client distribution (generated stubs + channel helper) as a wheel in dist/.
client-wheel: install
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./clients/python

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
	rm -rf $(VENV) $(BUF_DIR)/node_modules build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
