# .SHELLFLAGS below came in GNU make 3.82; older ones (macOS's /usr/bin/make is 3.81) ignore it
# and would run every recipe without its fail-fast flags.
$(if $(filter 3.82,$(firstword $(sort $(MAKE_VERSION) 3.82))),,$(error GNU make $(MAKE_VERSION) is too old: this Makefile needs 3.82 or newer (on macOS: brew install make, then run gmake)))

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
MAKEFLAGS += --no-print-directory

# Any Python in pyproject.toml's requires-python, ">=3.A,<3.B"; the image has its own.
PYTHON ?= python3
PYTHON_MIN := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\),<[0-9.]*"/\1/p' pyproject.toml)
PYTHON_BELOW := $(shell sed -n 's/^requires-python = ">=[0-9.]*,<\([0-9.]*\)"/\1/p' pyproject.toml)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
# make serve's address: this machine only, unless SERVE_HOST=0.0.0.0 publishes it.
SERVE_HOST ?= 127.0.0.1
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The stored model version that make serve serves and make build packs (a version or
# iris_classifier:<version>); empty: the store's latest.
MODEL ?=

# The service must never phone home, wherever it runs.
export BENTOML_DO_NOT_TRACK := true

# make help lists each `.PHONY: name  ## text` under the `##@ Heading` above it; these steps,
# which the other targets run for themselves, come last.
HELP_PLUMBING := image-tag kind-cluster kserve-sdk mlserver cluster-commands

##@ Set up
.PHONY: help  ## Show this help
help:
	@if test -t 1; then heading=$$'\033[1m'; name=$$'\033[36m'; plain=$$'\033[0m'; \
	else heading=; name=; plain=; fi; \
	awk -v plumbing=" $(HELP_PLUMBING) " -v heading="$$heading" -v name="$$name" -v plain="$$plain" ' \
		/^##@ / { group = substr($$0, 5); next } \
		/^\.PHONY: [a-zA-Z_-]+ +## / { \
			target = $$2; text = $$0; sub(/^[^#]*## /, "", text); \
			listed = index(plumbing, " " target " ") ? "Plumbing (run by the targets above)" : group; \
			if (!(listed in lines)) order[++groups] = listed; \
			lines[listed] = lines[listed] sprintf("  %s%-16s%s %s\n", name, target, plain, text) } \
		END { for (i = 1; i <= groups; i++) if (order[i] !~ /^Plumbing/) \
				printf "%s%s%s\n%s\n", heading, order[i], plain, lines[order[i]]; \
			for (i = 1; i <= groups; i++) if (order[i] ~ /^Plumbing/) \
				printf "%s%s%s\n%s", heading, order[i], plain, lines[order[i]] }' $(MAKEFILE_LIST)

# --- Python environment and the service --------------------------------------------------------

$(BIN)/python:
	@test -n "$(PYTHON_MIN)" -a -n "$(PYTHON_BELOW)" || \
		{ echo "pyproject.toml: requires-python is not of the form \">=3.A,<3.B\"" >&2; exit 1; }
	@version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || \
		{ echo "$(PYTHON) does not run: this project needs a Python >=$(PYTHON_MIN),<$(PYTHON_BELOW); name one with PYTHON=python3.X" >&2; exit 1; }; \
	awk -v found="$$version" -v low="$(PYTHON_MIN)" -v below="$(PYTHON_BELOW)" 'function n(v, p) { split(v, p, "."); return p[1] * 1000 + p[2] } \
		BEGIN { exit !(n(found) >= n(low) && n(found) < n(below)) }' || \
		{ echo "$(PYTHON) is Python $$version; this project needs a Python >=$(PYTHON_MIN),<$(PYTHON_BELOW): name one with PYTHON=python3.X" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# One stamp per set installed: .installed (the service and its training, all `make serve`
# needs), .installed-image (adds uv, which `bentoml build` locks with) and .installed-dev (adds
# the test, lint and load-test tools, and image).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-image $(VENV)/.installed-dev: $(VENV)/.installed-%: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[$*]'
	touch $@

.PHONY: install  ## Create .venv with everything: the service, training, image and test tools (dev)
install: $(VENV)/.installed-dev

.PHONY: install-serve  ## Create .venv with the service and its training only (what make serve installs)
install-serve: $(VENV)/.installed

##@ Serve
.PHONY: train  ## Train on the bundled iris data and store the model (ARGS=... for train.py flags)
train: install-serve
	$(BIN)/python train.py $(ARGS)

.PHONY: model  ## Train only if the model store has no servable iris_classifier model yet
model: install-serve
	@$(BIN)/python train.py --if-missing

.PHONY: serve  ## Serve the classifier on SERVE_HOST:PORT (default 127.0.0.1:3000), MODEL=<version> or the latest, training first if needed
serve: model
	IRIS_MODEL=$(MODEL) $(BIN)/bentoml serve service:IrisClassifier --host $(SERVE_HOST) --port $(PORT)

##@ Test
.PHONY: lint  ## Check style and common bugs with ruff
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The Gateway API validators for the HTTPRoute schema test, pinned by their npm lock file.
# Without npm the test skips (and fails under CI=true).
GATEWAY_API_CHECK := tests/gateway_api/node_modules/.package-lock.json
$(GATEWAY_API_CHECK): tests/gateway_api/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/gateway_api --no-audit --no-fund --loglevel=error; \
	else echo "npm is not installed: the HTTPRoute schema test will skip" >&2; fi

# KServe's Python SDK for its client and InferenceService tests, in build/kserve-venv (it pins
# pandas<3 and psutil<6): built from tests/support/kserve-requirements.txt, rebuilt when it changes.
.PHONY: kserve-sdk  ## Build build/kserve-venv, KServe's Python SDK for the tests
kserve-sdk: install
	$(BIN)/python -m tests.support.kserve_sdk

# The control plane's commands for tests/cluster/, built from Go modules once per release.
# Without Go those tests skip (and fail under CI=true).
.PHONY: cluster-commands  ## Build Kubernetes, etcd and kwok from their Go modules into a cache (cluster/README.md)
cluster-commands:
	@if command -v go >/dev/null; then cluster/build.sh; \
	else echo "go is not installed: the control-plane tests will skip (cluster/README.md)" >&2; fi

# More pytest options for test and test-fast, e.g. PYTEST_ARGS="-x -k answers".
PYTEST_ARGS ?=

# The slowest tests are listed at the end of the run, so CI's log shows where the time goes.
.PHONY: test  ## Run the whole test suite; the JUnit report and screenshots go to build/test-report/
test: install $(GATEWAY_API_CHECK) kserve-sdk cluster-commands
	$(BIN)/pytest --durations=25 --junitxml=build/test-report/junit.xml $(PYTEST_ARGS)

# Every test package, without the tests that start servers or containers or train in a subprocess.
TEST_FAST_MARKERS := not integration and not slow

.PHONY: test-fast  ## Run the tests that start no server and train no model in a subprocess: a few minutes
test-fast: install $(GATEWAY_API_CHECK) kserve-sdk
	$(BIN)/pytest -m "$(TEST_FAST_MARKERS)" --durations=10 $(PYTEST_ARGS)

# --- Container image (bentofile.yaml) -----------------------------------------------------------

IMAGE := iris-classifier:$(VERSION)
# `make image` also tags each build <version>-<image ID> (IMAGE_REF_FILE holds that reference):
# a rebuild that changed anything gets a tag of its own, so the pods Kubernetes runs for a tag
# never change under it, and deploying a new build changes the pod template and rolls it out.
IMAGE_REF_FILE := build/image-ref
# auto: the bentofile's python:3.11-slim when it can be pulled, else the local debootstrapped
# base; or "default", "local", or any image reference.
BASE_IMAGE ?= auto
LOCAL_BASE_IMAGE ?= iris-python-runtime:3.11-bookworm
REVISION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
IMAGE_ENV = BENTOML=$(BIN)/bentoml BASE_IMAGE=$(BASE_IMAGE) \
	LOCAL_BASE_IMAGE=$(LOCAL_BASE_IMAGE) VERSION=$(VERSION) REVISION=$(REVISION)

##@ Image
.PHONY: base-image  ## Build the Python base image from Debian packages (skipped if it exists)
base-image:
	@$(IMAGE_ENV) image/build-base-image.sh $(LOCAL_BASE_IMAGE)

.PHONY: build  ## Build the Bento (bentoml build), training the model first if none is stored
build: model $(VENV)/.installed-image
	@mkdir -p build
	@IRIS_MODEL=$(MODEL) $(BIN)/bentoml build -o tag --label version=$(VERSION) --label revision=$(REVISION) | \
		sed -n 's/^__tag__://p' > build/bento-tag
	@test -s build/bento-tag
	@cat build/bento-tag

.PHONY: image  ## Build the Bento and its image, tagged <version> and <version>-<image ID>; prints the latter last
image: build
	@$(IMAGE_ENV) image/containerize.sh "$$(cat build/bento-tag)" $(IMAGE) >/dev/null
	@$(MAKE) image-tag

.PHONY: image-tag  ## Tag the image iris-classifier:<version> by its content and write the reference to build/image-ref
image-tag:
	@id=$$(docker image inspect --format '{{.Id}}' $(IMAGE)); id=$${id#sha256:}; \
		test -n "$$id"; ref=$(IMAGE)-$${id:0:12}; \
		docker tag $(IMAGE) "$$ref"; mkdir -p $(dir $(IMAGE_REF_FILE)); \
		echo "$$ref" > $(IMAGE_REF_FILE); echo "$$ref"

.PHONY: run-image  ## Run the image on PORT hardened as the Deployment's pod spec says (read-only, its uid, no capabilities)
run-image: install-serve
	$(BIN)/python -m harness.containers $(IMAGE) --port $(PORT)

.PHONY: image-stats  ## Print the image's size and its cold start (container start to /readyz 200)
image-stats:
	@$(BIN)/python -m image.stats $(IMAGE)

# --- Kubernetes (kustomize/) --------------------------------------------------------------------

# Standalone kustomize when installed, else the one built into kubectl.
KUSTOMIZE ?= $(if $(shell command -v kustomize),kustomize build,kubectl kustomize)
OVERLAYS := kind production kserve
KIND_CLUSTER ?= iris-classifier
# Empty: the kind release's default node image. Pin one from its release notes to choose the
# Kubernetes version, e.g. KIND_NODE_IMAGE=kindest/node:v1.36.4@sha256:... "local": the node
# image cluster/kind/ assembles here, for machines that reach no registry (built on first use).
KIND_NODE_IMAGE ?=
KIND_LOCAL_NODE_IMAGE = iris-kind-node:$(shell sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$$/\1/p' cluster/modules/kubernetes/go.mod 2>/dev/null)
KIND_IMAGE = $(if $(filter local,$(KIND_NODE_IMAGE)),$(KIND_LOCAL_NODE_IMAGE),$(KIND_NODE_IMAGE))
# kind on PATH, else built from its Go module; its nodes start near-privileged where this
# Docker engine cannot start privileged containers (cluster/kind/README.md).
KIND ?= cluster/kind/kind
KIND_CONFIG := kustomize/overlays/kind/kind-config.yaml
# Every kubectl call names the kind cluster's context: never the production cluster by accident.
KIND_CONTEXT_KUBECTL = kubectl --context kind-$(KIND_CLUSTER)
KIND_KUBECTL = $(KIND_CONTEXT_KUBECTL) --namespace iris-classifier
# kind's config file takes no variables: kind-up creates the cluster from this copy of
# kind-config.yaml with KIND_HOST_PORT as its hostPort, and kind-down removes it.
KIND_CLUSTER_DIR = build/kind/$(KIND_CLUSTER)
KIND_CLUSTER_CONFIG = $(KIND_CLUSTER_DIR)/config.yaml
host_port_of = $(shell sed -n 's/^ *hostPort: *\([0-9][0-9]*\).*/\1/p' $(1))
# The host port kind maps to the Service's node port: the one the cluster was created with, else
# kind-config.yaml's. `make kind-up KIND_HOST_PORT=18080` chooses another.
KIND_HOST_PORT ?= $(call host_port_of,$(firstword $(wildcard $(KIND_CLUSTER_CONFIG)) $(KIND_CONFIG)))
# 127.0.0.1, as kind-config.yaml binds it: "localhost" may resolve to ::1 first.
KIND_URL = http://127.0.0.1:$(KIND_HOST_PORT)
# What deploy-kind applies: the kind overlay with the image tag of the last `make image`.
KIND_DEPLOY_DIR = $(KIND_CLUSTER_DIR)/deploy

# Non-empty when the node image is one cluster/kind/ built: it has no CNI daemon, so its cluster
# is created without kind's and gets routes between the nodes' pod ranges instead.
node_image_routes = $(if $(KIND_IMAGE),docker image inspect --format '{{index .Config.Labels "io.iris-classifier.kind-node"}}' $(KIND_IMAGE) 2>/dev/null | grep -x routes)

define require_tools
	@for tool in $(1); do command -v $$tool >/dev/null || { echo "$$tool is not installed: see kustomize/README.md" >&2; exit 1; }; done
endef

##@ Kubernetes (kind)
.PHONY: render  ## Render every kustomize overlay to build/manifests/<overlay>.yaml
render:
	@mkdir -p build/manifests
	@for overlay in $(OVERLAYS); do \
		$(KUSTOMIZE) kustomize/overlays/$$overlay > build/manifests/$$overlay.yaml; \
		echo "build/manifests/$$overlay.yaml"; \
	done

.PHONY: kind-up  ## Create the local kind cluster (1 control plane, 2 workers) and wait for every node
kind-up:
	$(call require_tools,kubectl docker)
	@[[ "$(KIND_HOST_PORT)" =~ ^[0-9]+$$ ]] || \
		{ echo "KIND_HOST_PORT is \"$(KIND_HOST_PORT)\": give a port number (kind-config.yaml's hostPort is the default)" >&2; exit 1; }
	@$(if $(filter local,$(KIND_NODE_IMAGE)),cluster/kind/build-node-image.sh $(KIND_LOCAL_NODE_IMAGE))
	@if $(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'; then echo "kind cluster $(KIND_CLUSTER) exists"; \
	else \
		if (exec 3<>/dev/tcp/127.0.0.1/$(KIND_HOST_PORT)) 2>/dev/null; then \
			echo "127.0.0.1:$(KIND_HOST_PORT) is taken: stop what listens there or choose another port, e.g. make kind-up KIND_HOST_PORT=$$(( $(KIND_HOST_PORT) > 55535 ? $(KIND_HOST_PORT) - 10000 : $(KIND_HOST_PORT) + 10000 ))" >&2; \
			exit 1; fi; \
		mkdir -p $(dir $(KIND_CLUSTER_CONFIG)); \
		sed 's/^\( *hostPort:\) *[0-9][0-9]*/\1 $(KIND_HOST_PORT)/' $(KIND_CONFIG) > $(KIND_CLUSTER_CONFIG); \
		if [ -n "$$($(node_image_routes))" ]; then \
			printf 'networking:\n  disableDefaultCNI: true\n' >> $(KIND_CLUSTER_CONFIG); fi; \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CLUSTER_CONFIG) \
			$(if $(KIND_IMAGE),--image $(KIND_IMAGE)) --wait 180s; \
	fi
	@# kind's --wait covers the control plane only; pods applied before the workers are Ready
	@# all land on the first Ready one, and stay there.
	$(KIND_CONTEXT_KUBECTL) wait --for=condition=Ready nodes --all --timeout=180s
	@if [ -n "$$($(node_image_routes))" ]; then cluster/kind/routes.sh kind-$(KIND_CLUSTER); fi
	@client=$$(kubectl version --client -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1); \
	server=$$($(KIND_CONTEXT_KUBECTL) version -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -n 1); \
	if [ -n "$$client" ] && [ -n "$$server" ] && [ $$(( client > server ? client - server : server - client )) -gt 1 ]; then \
		echo "warning: kubectl 1.$$client is more than one minor version away from the cluster's 1.$$server (see kustomize/README.md)" >&2; fi
	@echo "kind cluster $(KIND_CLUSTER): every node Ready; $(KIND_URL) reaches the Service's node port"

.PHONY: kind-cluster  ## Check that the kind cluster exists (make kind-up creates it)
kind-cluster:
	$(call require_tools,kubectl docker)
	@clusters=$$($(KIND) get clusters 2>&1) || { echo "kind get clusters failed: $$clusters" >&2; exit 1; }; \
	grep -qx '$(KIND_CLUSTER)' <<<"$$clusters" || \
		{ echo "there is no kind cluster $(KIND_CLUSTER): run make kind-up" >&2; exit 1; }

# Both tags go onto the nodes: <version>-<image ID> for make deploy-kind, and <version>, which
# the kind overlay names, for `kubectl apply -k kustomize/overlays/kind` typed by hand.
.PHONY: kind-load  ## Check the cluster, build the image, load it onto every kind node as <version> and <version>-<image ID>
kind-load: kind-cluster image
	@ref=$$(cat $(IMAGE_REF_FILE)); images="$(IMAGE) $$ref"; \
	errors=$$(mktemp); trap 'rm -f "$$errors"' EXIT; \
	if ! $(KIND) load docker-image $$images --name $(KIND_CLUSTER) 2>"$$errors"; then \
		cat "$$errors" >&2; \
		cause=$$(grep -v '^[[:space:]]*$$' "$$errors" | tail -n 1); \
		platform=""; if docker save --help 2>/dev/null | grep -q -- '--platform'; then \
			platform=$$(docker version --format '{{.Server.Os}}/{{.Server.Arch}}'); fi; \
		echo "kind load docker-image failed ($${cause:-no error message}): loading $$images from a docker save$${platform:+ --platform $$platform} archive instead" >&2; \
		archive_dir=$$(mktemp -d); trap 'rm -rf "$$archive_dir" "$$errors"' EXIT; \
		docker save $${platform:+--platform "$$platform"} --output "$$archive_dir/image.tar" $$images; \
		$(KIND) load image-archive "$$archive_dir/image.tar" --name $(KIND_CLUSTER); \
	fi

# Every make image builds a new Bento (a new version, so a new image ID and tag): applying it
# changes the pod template, and Kubernetes rolls the pods.
.PHONY: deploy-kind  ## Check the cluster, build and load the image, apply the kind overlay with its tag, wait for the rollout
deploy-kind: kind-load
	$(call require_tools,kubectl curl)
	@ref=$$(cat $(IMAGE_REF_FILE)); mkdir -p $(KIND_DEPLOY_DIR); \
	printf '%s\n' "# Written by make deploy-kind: the kind overlay running $$ref." \
		"apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
		"resources:" "  - ../../../../kustomize/overlays/kind" \
		"images:" "  - name: iris-classifier" "    newTag: \"$${ref#*:}\"" \
		> $(KIND_DEPLOY_DIR)/kustomization.yaml; \
	running=$$($(KIND_KUBECTL) get deployment/iris-classifier --ignore-not-found \
		-o jsonpath='{.spec.template.spec.containers[0].image}'); \
	echo "deploying $$ref (running before: $${running:-nothing})"
	$(KIND_CONTEXT_KUBECTL) apply -k $(KIND_DEPLOY_DIR)
	$(KIND_KUBECTL) rollout status deployment/iris-classifier --timeout=300s
	@# kube-proxy programs the node port a moment after the pods turn ready: until then the
	@# connection is refused or reset, which curl's --retry does not retry, so wait here.
	@deadline=$$(( $$(date +%s) + 60 )); \
	until answer=$$(curl -fsS --max-time 5 $(KIND_URL)/healthcheck 2>&1); do \
		if [ "$$(date +%s)" -ge "$$deadline" ]; then \
			echo "$(KIND_URL)/healthcheck did not answer within 60 s of the rollout: $$answer" >&2; exit 1; fi; \
		sleep 1; \
	done; \
	echo "$(KIND_URL)/healthcheck answers: $$answer"

.PHONY: loadtest-kind  ## Load-test the kind deployment through the node port (3 replicas expected)
loadtest-kind:
	@curl -fsS -o /dev/null $(KIND_URL)/healthcheck || \
		{ echo "nothing answers on $(KIND_URL): run make kind-up deploy-kind first" >&2; exit 1; }
	$(MAKE) loadtest HOST=$(KIND_URL) REPLICAS=3

.PHONY: kind-down  ## Delete the local kind cluster
kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)
	rm -rf $(KIND_CLUSTER_DIR)

# --- Load test (loadtest/) ----------------------------------------------------------------------

# HAProxy's port in loadtest-local (python -m loadtest.run's $LOADTEST_LB_PORT, else 8080);
# with a kind cluster up, pick one other than KIND_HOST_PORT.
LB_PORT ?= $(or $(LOADTEST_LB_PORT),8080)
HOST ?= http://127.0.0.1:$(LB_PORT)
# Replicas the load is spread over; empty: locust.conf's expected-replicas.
REPLICAS ?=
# More loadtest-local flags, e.g. LOADTEST_ARGS="--run-time 5m --no-faults" (see --help).
LOADTEST_ARGS ?=

##@ Load test
.PHONY: loadtest  ## Run locust headless against HOST; the gates expect REPLICAS replicas to share the load
loadtest: install
	$(BIN)/locust --config loadtest/locust.conf --host $(HOST) \
		$(if $(REPLICAS),--expected-replicas $(REPLICAS))

.PHONY: loadtest-local  ## REPLICAS replicas behind HAProxy on LB_PORT, watched by Prometheus: gated load, then SIGTERM/SIGKILL
loadtest-local: model install
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		{ echo "haproxy is not installed: apt-get install haproxy" >&2; exit 1; }
	$(if $(filter --no-prometheus,$(LOADTEST_ARGS)),,@command -v prometheus >/dev/null || \
		{ echo "prometheus is not installed: apt-get install prometheus (or LOADTEST_ARGS=--no-prometheus)" >&2; exit 1; })
	$(BIN)/python -m loadtest.run $(if $(REPLICAS),--replicas $(REPLICAS)) --lb-port $(LB_PORT) \
		--image $(IMAGE) $(LOADTEST_ARGS)

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

##@ Benchmarks
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

.PHONY: request-cost  ## What a single-flower request costs per layer, beside a minimal ASGI app (benchmarks/README.md)
request-cost: model
	$(BIN)/python -m benchmarks.cpu_by_layer $(BENCH_ARGS)

.PHONY: measure-memory  ## Measure one serving replica's memory (sizes the pods); ARGS=--pod for the image
measure-memory: model
	$(BIN)/python -m benchmarks.replica_memory $(ARGS)

.PHONY: bench-smoke  ## Run every server of the benchmarks, MLServer included, for a few seconds (no figures)
bench-smoke: install mlserver
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
	rm -rf $(BENCH_HOME) $(BENCH_RF_HOME)
	BENTOML_HOME=$(BENCH_HOME) $(BIN)/python train.py --report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_RF_HOME) $(BIN)/python train.py --model random-forest \
		--report-dir build/benchmarks/reports
	BENTOML_HOME=$(BENCH_HOME) BENCH_RANDOM_FOREST_HOME=$(BENCH_RF_HOME) \
		$(BIN)/python -m benchmarks.run --smoke --output build/benchmarks/smoke
	$(BENCH_V2_ENV) $(BIN)/python -m benchmarks.v2 --smoke --output build/benchmarks/smoke

##@ Set up
.PHONY: clean  ## Remove the virtual environment and build outputs
clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
