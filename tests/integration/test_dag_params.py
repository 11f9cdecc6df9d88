"""Every reference DAG's trigger-form params reject bad values with a message naming the param."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.dagfiles import load_dag

BAD: list[tuple[str, str, Any]] = [
    ("mlops_training_pipeline", "framework", "jax"),
    ("mlops_training_pipeline", "epochs", 0),
    ("mlops_training_pipeline", "gpus", 9),
    ("mlops_training_pipeline", "checks_gate", "ignore"),
    ("mlops_training_pipeline", "automation_level", "yolo"),
    ("mlops_training_pipeline", "hp_grid", [{"learnin_rate": 0.1}]),
    ("mlops_training_pipeline", "hp_grid", [{"epochs": 0}]),
    ("mlops_training_pipeline", "fault_percent", 101),
    ("mlops_training_pipeline", "dataset_uri", "s3://bucket/landing/data.xlsx"),
    ("mlops_training_pipeline", "dataset_uri", "relative/data.parquet"),
    ("mlops_training_pipeline", "label_column", ""),
    ("mlops_progressive_rollout", "strategy", "big_bang"),
    ("mlops_progressive_rollout", "canary_steps", [0, 100]),
    ("mlops_progressive_rollout", "canary_steps", []),
    ("mlops_progressive_rollout", "candidate_version", "latest"),
    ("mlops_progressive_rollout", "pause_seconds", 0),
    ("mlops_progressive_rollout", "endpoint", "Not_A_DNS_Label"),
    ("mlops_progressive_rollout", "model_name", "another_model"),
    ("mlops_progressive_rollout", "switch_approval", "yes"),
    ("mlops_drift_monitor", "window_hours", 0),
    ("mlops_drift_monitor", "min_rows", 1),
    ("mlops_drift_monitor", "alias", "has space"),
    ("mlops_batch_inference", "mode", "canary"),
    ("mlops_batch_inference", "min_agreement", 1.5),
]


@pytest.mark.parametrize(("dag_id", "param", "value"), BAD, ids=[f"{d}-{p}-{v}" for d, p, v in BAD])
def test_bad_param_is_rejected_naming_it(airflow_db: Path, dag_id: str, param: str, value: Any) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(load_dag(dag_id).params)
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {param}"):
        params[param] = value


@pytest.mark.parametrize("dag_id", ["mlops_training_pipeline", "mlops_progressive_rollout", "mlops_drift_monitor",
                                    "mlops_batch_inference"])
def test_defaults_are_valid_and_described(airflow_db: Path, dag_id: str) -> None:
    dag = load_dag(dag_id)
    copy.deepcopy(dag.params).validate()
    for name in dag.params:
        assert dag.params.get_param(name).description, f"{dag_id}.{name} has no description for the trigger form"


@pytest.mark.parametrize("kind", ["local", "kubernetes", "kserve", "sagemaker"])
@pytest.mark.parametrize("strategy", ["canary", "blue_green"])
def test_rollout_defaults_render_a_valid_strategy_for_every_target(airflow_db: Path, kind: str,
                                                                   strategy: str) -> None:
    """The rollout DAG's own template, rendered with its default params, is a valid strategy on each target."""
    from airflow_mlops.core.rollout import strategy_from_dict

    dag = load_dag("mlops_progressive_rollout")
    task = dag.get_task("rollout")
    params = {**copy.deepcopy(dag.params).validate(), "strategy": strategy}
    rendered = task.render_template(task.strategy, {"params": params, "var": {"value": {"mlops_rollout_target": kind}}})
    spec = strategy_from_dict(json.loads(rendered))
    assert spec.kind == strategy
