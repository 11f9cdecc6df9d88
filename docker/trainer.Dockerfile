# syntax=docker/dockerfile:1
# Trainer image: runs the reference steps (airflow_mlops.steps.prepare_data, airflow_mlops.steps.train) in
# Kubernetes pods, on GPU nodes or CPU. Build from the repository root (see docker/README.md):
#   docker build -f docker/trainer.Dockerfile -t airflow-mlops/trainer:0.1.0 .
# No Airflow inside: steps never import it (an import-linter contract), so the package is installed with
# --no-deps and the steps' own dependencies are pinned here (the versions `make test` runs).

# CUDA 12.6 pairs with PyTorch's cu126 wheels: torch 2.12/2.13 publish cu126 and cu130 (cu128 was dropped).
# torch wheels carry their own CUDA/cuDNN libraries; the base image brings the driver requirement
# (NVIDIA_REQUIRE_CUDA) and the NVIDIA container runtime variables. Pin it by digest in production.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's own Python 3.12. Versions unpinned on purpose: Ubuntu drops superseded package versions from
# its archive, so a pin breaks the next rebuild; the pinned base tag (or digest) fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.12 -m venv "${VIRTUAL_ENV}"

# Optional PyTorch path (`--framework torch`, DDP). Build with --build-arg TORCH_VERSION= for a
# scikit-learn-only image; TORCH_INDEX_URL picks the CUDA build (https://download.pytorch.org/whl/cu130 for CUDA 13,
# together with a 13.x CUDA_IMAGE). Its own layer: the largest and the least often changed.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
RUN if [ -n "${TORCH_VERSION}" ]; then \
        pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    fi

# What the steps import. skops: MLflow's default scikit-learn model format (a dependency of full mlflow, not of
# mlflow-skinny). boto3: MLflow clients upload straight to S3 when the tracking server does not proxy artifacts;
# the steps' own s3:// I/O goes through pyarrow.
RUN pip install --no-cache-dir \
        "scikit-learn==1.9.1" \
        "pandas==3.1.1" \
        "pyarrow==25.0.1" \
        "mlflow-skinny==3.17.2" \
        "skops==0.16.0" \
        "boto3==1.44.5" \
    && pip check

# The package itself, with --no-deps: its declared dependencies (apache-airflow, providers) are the orchestrator's.
# From here on `pip check` reports exactly those as missing, so it ran above.
COPY pyproject.toml README.md /src/
COPY airflow_mlops /src/airflow_mlops
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist /src \
    && pip install --no-cache-dir --no-deps /dist/*.whl


FROM ${CUDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# The interpreter the venv links to (/usr/bin/python3.12); unpinned for the reason given in the builder stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# uid/gid 1000 to match the pods' securityContext (runAsUser/runAsGroup/fsGroup 1000, runAsNonRoot).
# Ubuntu 24.04 images ship a user "ubuntu" with that uid: replace it.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && if getent group ubuntu >/dev/null; then groupdel ubuntu; fi \
    && groupadd --gid 1000 mlops \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlops --shell /bin/bash mlops \
    && install -d -o 1000 -g 1000 /workspace

COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fail the build, not the first pod: the steps' imports resolve, and there is no Airflow.
ARG TORCH_VERSION
RUN python -c "import sklearn, pandas, pyarrow.fs, mlflow.sklearn, skops.io, boto3" \
    && if [ -n "${TORCH_VERSION}" ]; then python -c "import torch, mlflow.pytorch"; fi \
    && python -m airflow_mlops.steps.train --help >/dev/null \
    && python -m airflow_mlops.steps.prepare_data --help >/dev/null \
    && python -c "import importlib.util as u, sys; sys.exit('apache-airflow is installed' if u.find_spec('airflow') else 0)"

ARG VERSION=0.1.0
ARG GIT_SHA
ARG CUDA_IMAGE
LABEL org.opencontainers.image.title="airflow-mlops trainer" \
      org.opencontainers.image.description="Runs airflow_mlops.steps (prepare_data, train) in Kubernetes pods; CUDA, PyTorch, scikit-learn, MLflow client; no Airflow" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="airflow-mlops maintainers" \
      org.opencontainers.image.base.name="${CUDA_IMAGE}" \
      airflow-mlops.torch-version="${TORCH_VERSION}"

WORKDIR /workspace
USER 1000:1000
CMD ["python", "-m", "airflow_mlops.steps.train", "--help"]
