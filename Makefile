# kube-qss developer entry points. `make demo` and `make test` work on a fresh machine: both
# install what they need first (make setup).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE_DIR ?= /tmp/kube-qss

# Debian packages the real-node clusters need: a container runtime and CNI plugins for the
# kubelets, and the tools that build images with no registry.
NODE_PACKAGES := containerd runc containernetworking-plugins iptables buildah mmdebstrap \
  busybox-static util-linux

.PHONY: setup demo demo-down demo-processes demo-relay test lint unit bench image clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

## setup: Redis, Graphviz and the node runtime from Debian if missing, the venv, the
## control-plane and node binaries, and the images (all cached outside the repository).
setup: $(VENV)/.installed
	@missing=$$(for p in redis-server graphviz $(NODE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing from Debian:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	@bash tests/cluster/build-control-plane.sh >/dev/null
	@bash tests/cluster/build-control-plane.sh node >/dev/null
	@$(PY) -m tests.cluster.images build >/dev/null

## demo: start a local QSS network (kube-qss as pods on real nodes) and show it with kubectl
## (TOPOLOGY=file: the network that file describes, as local processes, with a relayed KeyRequest).
demo: setup
	$(PY) -m tests.cluster.demo --state-dir $(STATE_DIR) $(if $(TOPOLOGY),--topology $(TOPOLOGY))

## demo-processes: the demo's network as local processes (no kubelet, no images).
demo-processes: setup
	$(PY) -m tests.cluster.demo --processes --state-dir $(STATE_DIR)

## demo-relay: three nodes in a line as local processes, a KeyRequest relayed across the middle one.
demo-relay: setup
	$(PY) -m tests.cluster.demo --state-dir $(STATE_DIR) --topology examples/topologies/line3.yaml

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

## image: build the kube-qss image from the Containerfile with the builder this machine has:
## buildah (here: on a Debian base made from Debian's packages, no registry needed), else podman
## or docker (on the official python:3.11-slim-bookworm base).
image:
	@if command -v buildah >/dev/null; then $(MAKE) --no-print-directory $(VENV)/.installed && \
	  $(PY) -m tests.cluster.images build kube-qss; \
	elif command -v podman >/dev/null; then podman build -t kube-qss:0.1.0 .; \
	elif command -v docker >/dev/null; then docker build -t kube-qss:0.1.0 .; \
	else echo "make image: no buildah, podman or docker on this machine" >&2; exit 1; fi

clean: demo-down
	rm -rf $(VENV) build *.egg-info
