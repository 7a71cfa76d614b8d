# MinhOS: every target runs inside .venv, which `setup` creates idempotently.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/minhos/v1/*.proto protos/minhos/oip/v2/*.proto)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: study setup browser postgres cluster protos protos-check train evaluate serve replay dashboard demo screenshot test test-fast lint bench reliability clean

setup: $(STAMP)

# torch first, pinned to the CPU wheel on disk, so the project's torch range installs nothing more.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=protos --mypy_out=protos \
	  --grpc_python_out=protos --mypy_grpc_out=protos $(PROTO_SRC)

# Regenerates into a scratch directory and fails if the committed code differs from the .proto files.
protos-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I protos --python_out=$$tmp --mypy_out=$$tmp \
	  --grpc_python_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_SRC) >/dev/null && \
	for f in $$tmp/minhos/v1/* $$tmp/minhos/oip/v2/*; do \
	  diff -q $$f protos/$${f#$$tmp/} || { echo "generated code is stale: run make protos"; exit 1; }; \
	done && rm -rf $$tmp && echo "generated code matches the .proto files"

train: $(STAMP)
	$(BIN)/minhos-train

# The deployed models on built-in series they were never trained on (needs `make train` first).
evaluate: $(STAMP)
	$(PY) -m export.instruments

serve: $(STAMP)
	$(BIN)/minhos-server

replay: $(STAMP)
	$(BIN)/minhos-replay

dashboard: $(STAMP)
	$(BIN)/minhos-dashboard

demo: $(STAMP)
	$(PY) -m clients.demo

# docs/dashboard.png, shown in the README: the demo's replay, then the dashboard in Chromium.
screenshot: $(STAMP) browser
	$(PY) -m clients.demo --screenshot docs/dashboard.png

# The dashboard tests drive Debian's Chromium (a browser download from a test tool is not possible
# here); installed once if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard tests"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null \
	  || echo "warning: could not install chromium; the browser tests will fail"; }

# The PostgreSQL tests and `make cluster` run Debian's PostgreSQL server in a throwaway cluster
# (clients/throwaway_postgres.py); installed once if missing. In CI (CI=true) those tests fail
# rather than skip without it.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the PostgreSQL tests and make cluster"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql) >/dev/null \
	  || echo "warning: could not install postgresql; the PostgreSQL tests will fail or skip"; }

test: $(STAMP) protos-check browser postgres
	$(PY) -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(PY) -m clients.bench

# 16 clients mixing Predict, PredictStream and RecordOutcome for 60 s on a real server process, then
# the fault, bad-input (10,000 generated cases) and auth suites; prints one table (README
# "Reliability"). Serves the models of `make train` if deployed, else trains them once.
reliability: $(STAMP) postgres
	$(PY) -m clients.reliability

# On loopback: a throwaway PostgreSQL, three replicas (each its own cache directory), one
# minhos-worker and the dashboard on all three; prints what runs where. Ctrl-C stops everything.
# Serves the models of `make train` if deployed, else trains them once.
cluster: $(STAMP) postgres
	$(PY) -m clients.cluster

# Degradation detector on the real models: false alarms on the healthy test span, detection delay
# when degraded (needs `make train` first).
study: $(STAMP)
	$(PY) -m clients.study

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
