.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
MAKEFLAGS += --no-print-directory

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

# The service must never phone home, wherever it runs.
export BENTOML_DO_NOT_TRACK := true

.PHONY: help  ## Show this help
help:
	@grep -E '^\.PHONY: [a-zA-Z_-]+ +## ' $(MAKEFILE_LIST) | \
		sed -E 's/^\.PHONY: ([a-zA-Z_-]+) +## (.*)/\1\t\2/' | \
		awk -F'\t' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# --- Python environment and the service --------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install  ## Create .venv and install the pinned dependencies
install: $(VENV)/.installed

.PHONY: train  ## Train on the bundled iris data and store the model (ARGS=... for train.py flags)
train: install
	$(BIN)/python train.py $(ARGS)

.PHONY: model  ## Train only if the model store has no servable iris_classifier model yet
model: install
	@$(BIN)/python train.py --if-missing

.PHONY: serve  ## Serve the classifier on PORT (default 3000), training first if needed
serve: model
	$(BIN)/bentoml serve service:IrisClassifier --port $(PORT)

.PHONY: lint  ## Check style and common bugs with ruff
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: test  ## Run the whole test suite
test: install
	$(BIN)/pytest

# --- Container image (bentofile.yaml) -----------------------------------------------------------

IMAGE := iris-classifier:$(VERSION)
# auto: the bentofile's python:3.11-slim when it can be pulled, else the local debootstrapped
# base; or "default", "local", or any image reference.
BASE_IMAGE ?= auto
LOCAL_BASE_IMAGE ?= iris-python-runtime:3.11-bookworm
REVISION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
IMAGE_ENV = BENTOML=$(BIN)/bentoml UV_BINARY=$(BIN)/uv BASE_IMAGE=$(BASE_IMAGE) \
	LOCAL_BASE_IMAGE=$(LOCAL_BASE_IMAGE) VERSION=$(VERSION) REVISION=$(REVISION)

.PHONY: base-image  ## Build the Python base image from Debian packages (skipped if it exists)
base-image: install
	@$(IMAGE_ENV) image/build-base-image.sh $(LOCAL_BASE_IMAGE)

.PHONY: build  ## Build the Bento (bentoml build), training the model first if none is stored
build: model
	@mkdir -p build
	@$(BIN)/bentoml build -o tag --label version=$(VERSION) --label revision=$(REVISION) | \
		sed -n 's/^__tag__://p' > build/bento-tag
	@test -s build/bento-tag
	@cat build/bento-tag

.PHONY: image  ## Build the Bento and its image iris-classifier:<version>; prints the image reference last
image: build
	@$(IMAGE_ENV) image/containerize.sh "$$(cat build/bento-tag)" $(IMAGE)

.PHONY: run-image  ## Run the image hardened as in Kubernetes (read-only, uid 1034, no capabilities) on PORT
run-image:
	docker run --rm --read-only --tmpfs /tmp --user 1034:1034 --cap-drop ALL \
		--security-opt no-new-privileges --network host -e POD_NAME=local \
		$(IMAGE) --host 127.0.0.1 --port $(PORT)

.PHONY: image-stats  ## Print the image's size and its cold start (container start to /readyz 200)
image-stats:
	@$(BIN)/python image/stats.py $(IMAGE)

# --- Kubernetes (kustomize/) --------------------------------------------------------------------

# Standalone kustomize when installed, else the one built into kubectl.
KUSTOMIZE ?= $(if $(shell command -v kustomize),kustomize build,kubectl kustomize)
OVERLAYS := kind production
KIND_CLUSTER ?= iris-classifier
# Empty: the kind release's default node image. Pin one from its release notes to choose the
# Kubernetes version, e.g. KIND_NODE_IMAGE=kindest/node:v1.33.1
KIND_NODE_IMAGE ?=
# Every kubectl call names the kind cluster's context: never the production cluster by accident.
KIND_KUBECTL = kubectl --context kind-$(KIND_CLUSTER) --namespace iris-classifier
# localhost port that kind-config.yaml maps to the Service's node port.
KIND_HOST_PORT := 8080

define require_tools
	@for tool in $(1); do command -v $$tool >/dev/null || { echo "$$tool is not installed: see README, Kubernetes" >&2; exit 1; }; done
endef

.PHONY: render  ## Render every kustomize overlay to build/manifests/<overlay>.yaml
render:
	@mkdir -p build/manifests
	@for overlay in $(OVERLAYS); do \
		$(KUSTOMIZE) kustomize/overlays/$$overlay > build/manifests/$$overlay.yaml; \
		echo "build/manifests/$$overlay.yaml"; \
	done

.PHONY: measure-memory  ## Measure one serving replica's memory (sizes the pods); ARGS=--pod for the image
measure-memory: model
	$(BIN)/python -m harness.replica_memory $(ARGS)

.PHONY: kind-up  ## Create the local kind cluster (1 control plane, 2 workers, localhost:8080)
kind-up:
	$(call require_tools,kind kubectl docker)
	@if kind get clusters | grep -qx '$(KIND_CLUSTER)'; then echo "kind cluster $(KIND_CLUSTER) exists"; \
	else kind create cluster --name $(KIND_CLUSTER) --config kustomize/overlays/kind/kind-config.yaml \
		$(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE)) --wait 180s; fi

.PHONY: kind-load  ## Build the image and load it onto every kind node
kind-load: image
	$(call require_tools,kind)
	kind load docker-image iris-classifier:$(VERSION) --name $(KIND_CLUSTER)

.PHONY: deploy-kind  ## Apply the kind overlay and wait until all replicas answer through the node port
deploy-kind: kind-load
	$(call require_tools,kubectl curl)
	kubectl --context kind-$(KIND_CLUSTER) apply -k kustomize/overlays/kind
	$(KIND_KUBECTL) rollout status deployment/iris-classifier --timeout=300s
	curl -fsS --retry 10 --retry-connrefused --retry-delay 2 http://localhost:$(KIND_HOST_PORT)/healthcheck
	@echo

.PHONY: loadtest-kind  ## Load-test the kind deployment through the node port (3 replicas expected)
loadtest-kind:
	@curl -fsS -o /dev/null http://localhost:$(KIND_HOST_PORT)/healthcheck || \
		{ echo "nothing answers on localhost:$(KIND_HOST_PORT): run make kind-up deploy-kind first" >&2; exit 1; }
	$(MAKE) loadtest HOST=http://localhost:$(KIND_HOST_PORT) REPLICAS=3

.PHONY: kind-down  ## Delete the local kind cluster
kind-down:
	$(call require_tools,kind)
	kind delete cluster --name $(KIND_CLUSTER)

# --- Load test (loadtest/) ----------------------------------------------------------------------

# HAProxy's port in loadtest-local; kind's node port mapping takes localhost:8080 too.
LB_PORT ?= 8080
HOST ?= http://127.0.0.1:$(LB_PORT)
REPLICAS ?= 3
# More loadtest-local flags, e.g. LOADTEST_ARGS="--run-time 5m --no-faults" (see --help).
LOADTEST_ARGS ?=

.PHONY: loadtest  ## Run locust headless against HOST; the gates expect REPLICAS replicas to share the load
loadtest: install
	$(BIN)/locust --config loadtest/locust.conf --host $(HOST) --expected-replicas $(REPLICAS)

.PHONY: loadtest-local  ## REPLICAS replicas behind HAProxy on LB_PORT, watched by Prometheus: gated load, then SIGTERM/SIGKILL
loadtest-local: model
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		{ echo "haproxy is not installed: apt-get install haproxy" >&2; exit 1; }
	@command -v prometheus >/dev/null || \
		{ echo "prometheus is not installed: apt-get install prometheus (or LOADTEST_ARGS=--no-prometheus)" >&2; exit 1; }
	$(BIN)/python -m loadtest.run --replicas $(REPLICAS) --lb-port $(LB_PORT) \
		--image iris-classifier:$(VERSION) $(LOADTEST_ARGS)

# --- Benchmarks (benchmarks/) -------------------------------------------------------------------

BENCH_ARGS ?=
# A model store of its own, trained afresh, so figures never depend on an older stored model.
BENCH_HOME := $(CURDIR)/build/benchmarks/bentoml-home
BENCH_RF_HOME := $(CURDIR)/build/benchmarks/bentoml-home-random-forest
# MLServer, the Open Inference Protocol peer, in an environment of its own (it pins other
# versions of FastAPI and friends than the service does).
MLSERVER_VENV := build/mlserver-venv
MLSERVER_REPOSITORY := $(CURDIR)/build/benchmarks/mlserver
BENCH_V2_ENV = BENTOML_HOME=$(BENCH_HOME) BENCH_MLSERVER_VENV=$(CURDIR)/$(MLSERVER_VENV) \
	BENCH_MLSERVER_REPOSITORY=$(MLSERVER_REPOSITORY)

$(MLSERVER_VENV)/.installed: benchmarks/peers/mlserver-requirements.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet -r $<
	touch $@

.PHONY: mlserver  ## MLServer 1.7.1 in build/mlserver-venv, with a model repository for make bench
mlserver: $(MLSERVER_VENV)/.installed
	rm -rf $(MLSERVER_REPOSITORY)
	$(MLSERVER_VENV)/bin/python benchmarks/peers/mlserver_repository.py $(MLSERVER_REPOSITORY)

.PHONY: bench  ## Benchmark the service against the baselines and MLServer (BENCH_ARGS=... for run.py)
bench: install mlserver
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
	rm -rf $(BENCH_HOME) $(BENCH_RF_HOME)
	BENTOML_HOME=$(BENCH_HOME) $(BIN)/python train.py --report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_RF_HOME) $(BIN)/python train.py --model random-forest \
		--report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_HOME) BENCH_RANDOM_FOREST_HOME=$(BENCH_RF_HOME) \
		BENCH_COMMAND="make bench $(BENCH_ARGS)" $(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BENCH_V2_ENV) BENCH_COMMAND="make bench" $(BIN)/python -m benchmarks.v2

.PHONY: bench-smoke  ## Run the benchmark harness for a few seconds to check it works (no figures)
bench-smoke: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
	rm -rf $(BENCH_HOME) $(BENCH_RF_HOME)
	BENTOML_HOME=$(BENCH_HOME) $(BIN)/python train.py --report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_RF_HOME) $(BIN)/python train.py --model random-forest \
		--report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_HOME) BENCH_RANDOM_FOREST_HOME=$(BENCH_RF_HOME) \
		$(BIN)/python -m benchmarks.run --smoke --output build/benchmarks/smoke
	$(BENCH_V2_ENV) $(BIN)/python -m benchmarks.v2 --smoke --servers bentoml \
		--output build/benchmarks/smoke

.PHONY: clean  ## Remove the virtual environment and build outputs
clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
