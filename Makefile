# modelops — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
UV          := .tools/bin/uv
PYTEST      := $(VENV)/bin/pytest
STAMP       := $(VENV)/.modelops-installed
# Python packages checked by ruff and mypy.
PACKAGES    := operator/contract/src trainer/src model-server/src loadgen/src operator/src hack/testenv/src
export MODELOPS_STATE_DIR ?= $(CURDIR)/.modelops
DURATION    ?=
PYTEST_ARGS ?=
# `make test` runs pytest in this many worker processes (pytest-xdist): every module in one
# worker, every real-node test in the same one (tests/conftest.py); 0 runs it in one process.
PYTEST_WORKERS ?= 3
XDIST       := $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder)
# mypy's incremental cache, shared by every clone (it checks each module's hash, so a cache
# written by another checkout only saves time); keyed by mypy's version.
MYPY_CACHE   = $(HOME)/.cache/modelops/mypy/$(shell $(VENV)/bin/mypy --version 2>/dev/null | cut -d' ' -f2)
MYPY         = $(VENV)/bin/mypy --cache-dir "$(MYPY_CACHE)"
PLATFORM    ?= kind
UP_TIMEOUT  ?= 900

.PHONY: help install test-tools lint format test test-unit test-integration bench demo cluster up down images clean

help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): uv.lock pyproject.toml hack/bootstrap.sh hack/apt-packages.txt $(wildcard */pyproject.toml) $(wildcard */*/pyproject.toml)
	@hack/bootstrap.sh all
	@touch $@

install: $(STAMP) ## Install what the project runs with (venv, packages, Debian tools); idempotent.

test-tools: install ## Build (or reuse from ~/.cache/modelops) test binaries: control plane, real node, Argo CD, promtool, images; the KServe SDK venv.
	@hack/build-k8s.sh
	@hack/build-argocd.sh
	@hack/build-node.sh
	@hack/build-promtool.sh
	@hack/build-images.sh
	@hack/kserve-venv.sh >/dev/null

lint: install ## Run ruff and mypy on every package; hadolint, shellcheck, actionlint.
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(MYPY) $(PACKAGES)
	@$(MYPY) --strict hack/release/release.py
	@$(VENV)/bin/hadolint hack/images/Dockerfile
	@$(VENV)/bin/shellcheck hack/*.sh hack/images/*.sh argocd/*.sh .ci/run
	@"$$(hack/tools.sh actionlint)" -shellcheck $(VENV)/bin/shellcheck .github/workflows/*.yml

format: install ## Reformat the code with ruff.
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

test: install test-tools lint ## Run every test tier (unit, integration, e2e on a real node: root) after lint; PYTEST_WORKERS=3.
	@$(PYTEST) $(XDIST) $(PYTEST_ARGS)

test-unit: install ## Run only the fast unit tests.
	@$(PYTEST) -m unit $(PYTEST_ARGS)

test-integration: install test-tools ## Run only the integration tests.
	@$(PYTEST) -m integration $(XDIST) $(PYTEST_ARGS)

bench: install test-tools ## Run the benchmarks and print figures with ratios to their baselines.
	@$(PY) bench/run.py

SAMPLE      ?= config/samples/modelops_v1alpha1_modeldeployment.yaml

demo: install ## Run the sample ModelDeployment locally: train, gate, serve, load, scrape (DURATION=s bounds it).
	@$(VENV)/bin/modelops local up -f $(SAMPLE) $(if $(DURATION),--duration $(DURATION))

cluster: install test-tools ## Start a throw-away control plane in the foreground (Ctrl-C stops it; CLUSTER_ARGS=--real-node adds a real node).
	@$(VENV)/bin/modelops-cluster $(CLUSTER_ARGS)

up: install ## Deploy to a local cluster (kind; PLATFORM=minikube|microk8s) and wait until the sample serves.
	@PLATFORM=$(PLATFORM) UP_TIMEOUT=$(UP_TIMEOUT) hack/up.sh

down: ## Remove what `make up` created.
	@hack/down.sh

images: install ## Build the four container images (needs Docker): modelops-<component>:dev.
	@hack/images.sh

clean: ## Remove the venv, tool caches and the demo state.
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .modelops
