# syntax=docker/dockerfile:1
# Serving image: the MLflow pyfunc scoring server (POST /invocations, GET /ping, GET /health) for a registered
# model, as the rollout targets (Kubernetes Deployment, KServe custom predictor) run it. Build from the repository
# root (see docker/README.md):
#   docker build -f docker/serving.Dockerfile -t airflow-mlops/serving:0.1.0 .
# The model is fetched at start from MODEL_URI (models:/<name>@<alias> or /<version>) through MLFLOW_TRACKING_URI;
# credentials come from the pod (MLFLOW_TRACKING_TOKEN from a Secret, S3 through IRSA), never from the image.
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same library pins as the trainer image (what `make test` runs), so a model logged by the trainer loads here:
# pyfunc refuses nothing, but a scikit-learn major mismatch changes predictions. --env-manager local below serves
# in this environment instead of building one per model at start (no network needed at start).
RUN python -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir \
        "mlflow==3.17.2" \
        "scikit-learn==1.9.1" \
        "pandas==3.1.1" \
        "pyarrow==25.0.1" \
        "skops==0.16.0" \
        "boto3==1.44.5" \
    && pip check \
    && groupadd --gid 1000 mlops \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlops --shell /usr/sbin/nologin mlops

ARG VERSION=0.1.0
ARG GIT_SHA
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="airflow-mlops serving" \
      org.opencontainers.image.description="MLflow pyfunc scoring server for airflow-mlops registered models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="airflow-mlops maintainers" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV MODEL_URI="" \
    PORT=8080 \
    WORKERS=2
WORKDIR /home/mlops
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/ping\", timeout=2)"]
# Shell form through exec so MODEL_URI/PORT/WORKERS expand and the server is PID 1 (gets SIGTERM on rollout).
CMD ["bash", "-c", "test -n \"${MODEL_URI}\" || { echo 'set MODEL_URI, e.g. models:/breast_cancer_classifier@champion' >&2; exit 2; }; exec mlflow models serve -m \"${MODEL_URI}\" --env-manager local --host 0.0.0.0 --port \"${PORT}\" --workers \"${WORKERS}\""]
