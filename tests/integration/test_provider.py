"""The package is a real Airflow provider: entry point, ProvidersManager, `airflow providers list`."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import airflow_mlops


def test_entry_point_loads_provider_info() -> None:
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_mlops")]
    assert len(eps) == 1
    info = eps[0].load()()
    assert info["package-name"] == "airflow-mlops"
    assert info["versions"] == [airflow_mlops.__version__]
    assert [c["hook-class-name"] for c in info["connection-types"] if c["connection-type"] == "mlflow"] == \
        ["airflow_mlops.hooks.mlflow.MlflowHook"]
    assert "airflow_mlops.links.mlflow.MlflowRunLink" in info["extra-links"]


def test_providers_manager_registers_package_hook_and_links() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-mlops" in manager.providers
    assert manager.providers["airflow-mlops"].version == airflow_mlops.__version__
    assert manager.hooks["mlflow"].hook_class_name == "airflow_mlops.hooks.mlflow.MlflowHook"
    assert "airflow_mlops.links.mlflow.MlflowRunLink" in manager.extra_links_class_names


def test_airflow_providers_list_shows_the_package() -> None:
    proc = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "-o", "plain"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "airflow-mlops" in proc.stdout
