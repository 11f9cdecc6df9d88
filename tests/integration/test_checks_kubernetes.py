"""The checks operator on the Kubernetes runtime, against kmock's emulator over HTTP (tests/kube).

The real cncf KubernetesPodOperator creates the pod; the test kubelet runs its command as a local process.
The one stand-in: the kubelet maps a container's ``python`` to ``sys.executable``, so for this test that is the
checks venv's interpreter with the package on ``PYTHONPATH`` - what the checks image holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions, major_minor

from airflow_mlops.runtime.checks_env import step_pythonpath
from tests.dagfiles import load_dag
from tests.integration.test_checks_step import checks_python, clean_frame
from tests.kube.cluster import FakeCluster

pytestmark = pytest.mark.slow
__all__ = ["checks_python"]
CHECKS_IMAGE = "registry.example/ml/checks:0.19.1"
K8S_VERSION = max((v for v in all_versions() if v.startswith("1.3")), key=major_minor).rsplit(".", 1)[0]


def test_checks_pod_uses_the_checks_image_and_declared_resources(
        airflow_db: Path, airflow_kubernetes_conn: FakeCluster, mlops_home: Path, tmp_path: Path,
        checks_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = airflow_kubernetes_conn
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_RUNTIME", "kubernetes")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_DEFERRABLE", "false")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_CHECKS_IMAGE", CHECKS_IMAGE)
    monkeypatch.setenv("PYTHONPATH", step_pythonpath())
    monkeypatch.setattr(sys, "executable", checks_python)
    data = tmp_path / "clean.parquet"
    clean_frame().to_parquet(data, index=False)

    run = load_dag("checks_gate_test").test(run_conf={"gate": "fail", "data_uri": str(data)})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"checks": "success", "after": "success", "last": "success"}
    (pod,) = [p for p in cluster.pods_created if p["metadata"]["labels"].get("app.kubernetes.io/name") == "checks"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == CHECKS_IMAGE
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    argv = [*container["command"], *container["args"]]
    assert argv[:3] == ["python", "-m", "airflow_mlops.steps.checks"] and "--fail-on-warning" in argv
    manifest = {"apiVersion": "v1", "kind": "Pod", "spec": pod["spec"],
                "metadata": {k: v for k, v in pod["metadata"].items() if k in ("name", "namespace", "labels",
                                                                              "annotations")}}
    kubernetes_validate.validate(json.loads(json.dumps(manifest)), K8S_VERSION, strict=True)
    xcom = next(t for t in run.get_task_instances() if t.task_id == "checks").xcom_pull(task_ids="checks")
    assert xcom["passed"] is True and xcom["image_digest"].startswith("registry.example/ml/checks@sha256:")
