# kube-qss developer entry points. `make demo` and `make test` work on a fresh machine: both
# install what they need first (make setup).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE_DIR ?= /tmp/kube-qss

.PHONY: setup demo demo-down test lint unit bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

## setup: Redis and Graphviz from Debian if missing, the venv, and the control-plane binaries (cached).
setup: $(VENV)/.installed
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@bash tests/cluster/build-control-plane.sh >/dev/null

## demo: start a local QSS network and show it with kubectl (TOPOLOGY=file: that network).
demo: setup
	$(PY) -m tests.cluster.demo --state-dir $(STATE_DIR) $(if $(TOPOLOGY),--topology $(TOPOLOGY))

## demo-down: stop the local network that `make demo` started.
demo-down:
	$(PY) -m tests.cluster.localcluster --state-dir $(STATE_DIR) down

## lint: ruff, mypy --strict and the import contracts between components.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy controllers webhooks sidecar device-plugin/device_plugin crds/qss_api tests
	$(VENV)/bin/lint-imports

## unit: the unit tests only: no control plane, a real redis-server; about a minute.
unit: $(VENV)/.installed
	@command -v redis-server >/dev/null || { echo "redis-server is missing: run make setup" >&2; exit 1; }
	$(VENV)/bin/pytest -p no:cacheprovider tests/unit

## test: lint, then every test (unit and integration, on a real control plane and Redis).
test: setup lint
	@rc=0; $(VENV)/bin/pytest -p no:cacheprovider || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; fi; exit $$rc

## bench: the benchmarks, each beside its baseline measured in the same run (BENCH=etsi014 for one).
bench: setup
	$(PY) -m tests.benchmarks $(BENCH)

clean: demo-down
	rm -rf $(VENV) build *.egg-info
