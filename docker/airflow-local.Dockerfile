# syntax=docker/dockerfile:1
# Airflow image with airflow-mlops, its reference DAG and plugin: a single-container trial (`standalone`) and an
# MWAA-parity smoke (same Airflow version, Python and constraints file as the MWAA environment). Build from the
# repository root (see docker/README.md):
#   docker build -f docker/airflow-local.Dockerfile -t airflow-mlops/airflow-local:0.1.0 .
ARG AIRFLOW_VERSION=3.3.1
ARG PYTHON_VERSION=3.12

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS wheel
COPY --chown=airflow:0 pyproject.toml README.md /tmp/src/
COPY --chown=airflow:0 airflow_mlops /tmp/src/airflow_mlops
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist /tmp/src


FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG AIRFLOW_VERSION
ARG PYTHON_VERSION
# The constraints file the MWAA bundle ships (vendored in the package, see its header), so this image resolves
# exactly what `airflow-mlops deploy bundle` tells MWAA to install. A URL (e.g. the official constraints file) or
# an empty value (no constraints) can be given instead.
ARG CONSTRAINTS=/tmp/constraints/constraints-${AIRFLOW_VERSION}-py${PYTHON_VERSION}.txt
# "local": full MLflow (SQLite store) and the steps' libraries, for `mlops_runtime=local`. Empty: the package's
# core dependencies only, which is what an MWAA environment that runs steps on Kubernetes needs.
ARG EXTRAS=local

# The wheel is bind-mounted from the stage above (no layer). apache-airflow is pinned in the same command, so no
# dependency can move Airflow itself. DL3013: the other target is that wheel; what it pulls in, the constraints pin.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheel,source=/tmp/dist,target=/tmp/dist \
    --mount=type=bind,source=airflow_mlops/deploy/constraints,target=/tmp/constraints \
    whl="$(echo /tmp/dist/airflow_mlops-*-py3-none-any.whl)" \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "${whl}${EXTRAS:+[${EXTRAS}]}" \
        ${CONSTRAINTS:+--constraint "${CONSTRAINTS}"} \
    && pip check \
    && AIRFLOW_HOME=/tmp/airflow-check airflow providers list -o plain | grep '^airflow-mlops' >/dev/null \
    && rm -rf /tmp/airflow-check

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    MLOPS_HOME=/opt/airflow/mlops-local

ARG VERSION=0.1.0
ARG GIT_SHA
LABEL org.opencontainers.image.title="airflow-mlops airflow-local" \
      org.opencontainers.image.description="Apache Airflow ${AIRFLOW_VERSION} (Python ${PYTHON_VERSION}) with airflow-mlops, its DAGs and plugin: local trial and MWAA-parity smoke" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="airflow-mlops maintainers" \
      org.opencontainers.image.base.name="apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"
