# syntax=docker/dockerfile:1
# Checks image: runs the data/model checks step (python -m airflow_mlops.steps.checks) in Kubernetes pods, with
# deepchecks 0.19.1 and every dependency pinned by the same lock the local checks venv uses
# (airflow_mlops/runtime/checks.lock.txt). Build from the repository root:
#   docker build -f docker/checks.Dockerfile -t airflow-mlops/checks:0.1.0 .
# No Airflow, no MLflow inside: the operator attaches reports to MLflow from the Airflow side.

# Python 3.12 (the lock is valid for 3.11 and 3.12); pin the digest in production.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "${VIRTUAL_ENV}"

# Exactly the lock (--no-deps: nothing resolved at build time), then `pip check` proves it is complete.
COPY airflow_mlops/runtime/checks.lock.txt /tmp/checks.lock.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/checks.lock.txt \
    && pip check

# The package itself, --no-deps: its declared dependencies (apache-airflow, providers) are the orchestrator's.
COPY pyproject.toml README.md /src/
COPY airflow_mlops /src/airflow_mlops
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist /src \
    && pip install --no-cache-dir --no-deps /dist/*.whl


FROM ${PYTHON_IMAGE}

# uid/gid 1000 to match the pods' securityContext (runAsUser/runAsGroup/fsGroup 1000, runAsNonRoot).
RUN groupadd --gid 1000 mlops \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlops --shell /bin/bash mlops \
    && install -d -o 1000 -g 1000 /workspace

COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

# Fail the build, not the first pod: deepchecks imports with this set, the step parses, and there is no Airflow.
RUN python -c "import deepchecks.tabular, plotly, pyarrow.fs, sklearn; assert deepchecks.__version__ == '0.19.1'" \
    && python -m airflow_mlops.steps.checks --help >/dev/null \
    && python -c "import importlib.util as u, sys; sys.exit('apache-airflow is installed' if u.find_spec('airflow') else 0)"

ARG VERSION=0.1.0
ARG GIT_SHA
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="airflow-mlops checks" \
      org.opencontainers.image.description="Runs airflow_mlops.steps.checks (deepchecks 0.19.1, pinned) in Kubernetes pods; no Airflow" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="airflow-mlops maintainers" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

WORKDIR /workspace
USER 1000:1000
CMD ["python", "-m", "airflow_mlops.steps.checks", "--help"]
