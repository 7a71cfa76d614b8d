# MinhOS: every target runs inside .venv, which `setup` creates idempotently.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/minhos/v1/*.proto protos/minhos/oip/v2/*.proto)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: study setup browser postgres podman docker image cluster protos protos-check train evaluate serve replay dashboard demo screenshot test test-fast lint bench reliability clean

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

# $(call check_protos,BIN): regenerates into a scratch directory with BIN's python and protoc
# plugins, and fails if the committed code differs from the .proto files.
define check_protos
@tmp=$$(mktemp -d) && \
PATH=$(CURDIR)/$(1):$$PATH $(1)/python -m grpc_tools.protoc -I protos --python_out=$$tmp \
  --mypy_out=$$tmp --grpc_python_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_SRC) >/dev/null && \
for f in $$tmp/minhos/v1/* $$tmp/minhos/oip/v2/*; do \
  diff -q $$f protos/$${f#$$tmp/} || { echo "generated code is stale: run make protos"; exit 1; }; \
done && rm -rf $$tmp && echo "generated code matches the .proto files ($$($(1)/python -V))"
endef

protos-check: $(STAMP)
	$(call check_protos,$(BIN))

# The serving and contract tests on another Python, found by name: `make test-py3.13` (or 3.12).
# Its own venv, .venv-3.13, holds the package with the test and postgres extras and no training
# stack; .venv trains the tiny model set (tests/tiny_models.py) unless MINHOS_TEST_MODELS names
# one already written. Runs the generated-code check and the tests marked `serving`.
SERVING_TESTS = $(shell grep -l 'pytest.mark.serving' tests/test_*.py)
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)

test-py%: .venv-%/.installed $(STAMP) postgres
	$(call check_protos,.venv-$*/bin)
	@models="$${MINHOS_TEST_MODELS:-}"; \
	if [ -z "$$models" ]; then \
	  models=$$(mktemp -d) && trap 'rm -rf "$$models"' EXIT && \
	  $(PY) -m tests.tiny_models "$$models" || exit 1; \
	fi; \
	MINHOS_TEST_MODELS="$$models" PATH="$(CURDIR)/.venv-$*/bin:$$PATH" \
	  .venv-$*/bin/python -m pytest -q -m serving $(SERVING_TESTS)

# python3.13 (for .venv-3.13) on PATH if it runs (a pyenv shim of a version pyenv has not
# selected does not), else the newest pyenv build of that version.
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: pyproject.toml
	@py=; for c in $$(command -v python$*) \
	  $$(ls -d $(PYENV_ROOT)/versions/$*.*/bin/python$* 2>/dev/null | sort -rV); do \
	  v=$$($$c -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue; \
	  [ "$$v" = "$*" ] && { py=$$c; break; }; \
	done; \
	test -n "$$py" || { echo "python$* not on PATH nor under $(PYENV_ROOT)/versions/"; exit 1; }; \
	echo "python$*: $$py"; test -x .venv-$*/bin/python || $$py -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e ".[test,postgres]"
	touch $@

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

# The pod test (tests/test_podman.py) runs the serving Deployment's pod with Debian's podman;
# installed once if missing. /etc/containers/containers.conf is written when absent: ulimits
# podman can set here (else every run fails with "error setting rlimit"), and runc, because crun
# refuses this machine's hybrid cgroups ("cgroups in hybrid mode not supported"). In CI the test
# fails rather than skips without them.
podman:
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 || { \
	  echo "installing Debian's podman and runc for the pod test"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc) \
	  >/dev/null || echo "warning: could not install podman; the pod test will fail or skip"; }
	@test -e /etc/containers/containers.conf || { \
	  mkdir -p /etc/containers && \
	  printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' \
	    '' '[engine]' 'runtime = "runc"' > /etc/containers/containers.conf && \
	  echo "wrote /etc/containers/containers.conf (podman: default_ulimits, runc)"; }

# The image tests (tests/test_image.py) and `make image` need a docker daemon: Debian's docker.io
# (with iptables, and debootstrap for the local base image) installed once if missing, and dockerd
# started in the background if it is not running (clients/image.py). In CI those tests fail rather
# than skip without it.
docker: $(STAMP)
	@$(PY) -m clients.image docker \
	  || echo "warning: docker is unavailable; the image tests will fail or skip"

# minhos-serving, minhos-worker and minhos-dashboard (deploy/Dockerfile), tagged with the package's
# version and latest, from the local Debian base (debootstrapped once if missing, as root) and
# wheels downloaded on the host; prints each image's size and build time.
# One image, another base: .venv/bin/python -m clients.image build serving --base python:3.11-slim-bookworm
image: $(STAMP) docker
	$(PY) -m clients.image build

test: $(STAMP) protos-check browser postgres podman docker
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
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache
