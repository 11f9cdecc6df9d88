"""Where a step's artifacts live and what lineage a model version carries. Pure string building."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_mlops.core.errors import SpecError

_SEGMENT = re.compile(r"[^A-Za-z0-9._=-]+")


def _segment(value: str) -> str:
    """A path segment safe on S3 and local disks; run ids like ``manual__2026-11-23T00:00:00+00:00`` stay readable."""
    segment = _SEGMENT.sub("_", value).strip("_") or "_"
    # "." and ".." would walk out of the run's prefix on a local disk.
    segment = segment if segment.strip(".") else segment.replace(".", "_")
    if segment != value:
        # Different ids can squash to the same text ("a:b", "a+b"): keep them apart with a short hash.
        segment = f"{segment}-{hashlib.sha256(value.encode()).hexdigest()[:6]}"
    return segment


def check_artifact_root(root: str) -> str:
    """Accept an absolute local path, ``file://`` or ``s3://bucket/prefix``; normalise away a trailing slash."""
    if root.startswith("s3://"):
        if len(root) <= len("s3://") or root[len("s3://")] == "/":
            raise SpecError("artifact_root", "s3://<bucket>[/<prefix>]", root)
        return root.rstrip("/")
    if root.startswith("file://"):
        root = root[len("file://"):]
    if not root.startswith("/"):
        raise SpecError("artifact_root", "an absolute local path, file:///path or s3://bucket/prefix", root)
    return root.rstrip("/") or "/"


def join_uri(root: str, *parts: str) -> str:
    """Join path segments under an artifact root (local path or s3:// URI)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def run_prefix(root: str, dag_id: str, task_id: str, run_id: str) -> str:
    """Artifacts of one task in one logical DAG run: shared by all its tries."""
    return join_uri(check_artifact_root(root), "runs", _segment(dag_id), _segment(run_id), _segment(task_id))


def checkpoint_uri(root: str, dag_id: str, task_id: str, run_id: str) -> str:
    """Checkpoints are per (dag, task, logical run), not per try, so a retry resumes where the last try stopped."""
    return join_uri(run_prefix(root, dag_id, task_id, run_id), "checkpoints")


def result_uri(root: str, dag_id: str, task_id: str, run_id: str, try_number: int) -> str:
    """Result JSON is per try: a stale result from an earlier try must never be read as this one's."""
    return join_uri(run_prefix(root, dag_id, task_id, run_id), f"try-{try_number}", "result.json")


def output_uri(root: str, dag_id: str, task_id: str, run_id: str) -> str:
    """Outputs (predictions, datasets) of a task in a logical run."""
    return join_uri(run_prefix(root, dag_id, task_id, run_id), "outputs")


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable short hash of hyperparameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lineage_tags(*, dag_id: str, run_id: str, task_id: str, try_number: int, data_version: str | None = None,
                 git_sha: str | None = None, image_digest: str | None = None,
                 params: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Tags every MLflow run / model version carries so it can be traced back to code, data and image."""
    tags = {
        "mlops.airflow.dag_id": dag_id,
        "mlops.airflow.run_id": run_id,
        "mlops.airflow.task_id": task_id,
        "mlops.airflow.try_number": str(try_number),
    }
    if data_version:
        tags["mlops.data_version"] = data_version
    if git_sha:
        tags["mlops.git_sha"] = git_sha
    if image_digest:
        tags["mlops.image_digest"] = image_digest
    if params is not None:
        tags["mlops.params_hash"] = params_hash(params)
    return tags


def endpoint_name(model_name: str) -> str:
    """The serving endpoint a model rolls out to by default: a DNS label (Kubernetes Service, SageMaker endpoint)."""
    label = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:63].rstrip("-")
    if not label:
        raise SpecError("model_name", "a name with at least one letter or digit", model_name)
    return label
