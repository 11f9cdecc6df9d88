"""Helpers for registry tests: a real MLflow store with a registered model and a few READY versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_versions(client: Any, tmp: Path, name: str, metrics: list[dict[str, float]],
                  experiment: str = "registry-tests") -> list[str]:
    """Create one run per metrics dict (a minimal MLflow model artifact + metrics) and a version of ``name`` each.

    The artifact is a real MLflow model directory (an MLmodel file); the registry copies and serves it like any
    other. Returns the version numbers.
    """
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=str(tmp / "artifacts" / experiment))
    model_dir = tmp / "model-src"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    versions = []
    for values in metrics:
        run = client.create_run(experiment_id)
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        for key, value in values.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        versions.append(str(mv.version))
    return versions
