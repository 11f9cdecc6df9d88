"""The plugin's macros resolve the configuration surface at render time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_plugin():
    spec = importlib.util.spec_from_file_location("airflow_mlops_plugin", ROOT / "plugins" / "airflow_mlops_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_macros_follow_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plugin = load_plugin()
    assert plugin.AirflowMlopsPlugin.name == "airflow_mlops"
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    assert plugin.artifact_uri("datasets", "x") == f"{tmp_path}/artifacts/datasets/x"
    assert plugin.runtime() == "local"
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ARTIFACT_ROOT", "s3://ml-bucket/prod/")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_RUNTIME", "kubernetes")
    assert plugin.artifact_uri("datasets", "x") == "s3://ml-bucket/prod/datasets/x"
    assert plugin.runtime() == "kubernetes"
    assert plugin.model_uri("m", "champion") == "models:/m@champion"
    assert plugin.model_uri("m", 3) == "models:/m/3"


def test_serving_macros_follow_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plugin = load_plugin()
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    assert plugin.endpoint_name("Breast_Cancer_Classifier") == "breast-cancer-classifier"
    assert plugin.inference_log_uri("churn_v2") == f"{tmp_path}/rollout/churn-v2/inference.jsonl"
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_INFERENCE_LOG_URI", "s3://capture/{endpoint}/{model}/")
    assert plugin.inference_log_uri("churn_v2") == "s3://capture/churn-v2/churn_v2/"
    with pytest.raises(ValueError, match="model_name"):
        plugin.endpoint_name("___")
