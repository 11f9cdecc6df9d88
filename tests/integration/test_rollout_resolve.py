"""The rollout DAG is scheduled on the promotion the training pipeline emits, and resolves its candidate from it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.dagfiles import load_dag

MODEL = "breast_cancer_classifier"


def _event(asset: Any, extra: dict, minutes: int) -> Any:
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset={"name": asset.name, "uri": asset.uri, "extra": {}}, extra=extra, source_task_id="promote",
        source_dag_id="mlops_training_pipeline", source_run_id="r", source_map_index=-1, source_aliases=[],
        timestamp=datetime(2026, 11, 30, tzinfo=timezone.utc) + timedelta(minutes=minutes))


def _uris(condition: Any) -> set[str]:
    """The asset URIs of a schedule condition (an Asset, or AssetAll/AssetAny of them)."""
    if hasattr(condition, "uri"):
        return {condition.uri}
    return set().union(*(_uris(c) for c in condition.objects))


def test_the_rollout_dag_is_scheduled_on_what_the_pipeline_emits() -> None:
    training, rollout = load_dag("mlops_training_pipeline"), load_dag("mlops_progressive_rollout")
    emitted = {o.uri for o in training.get_task("promote").outlets}
    scheduled = _uris(rollout.timetable.asset_condition)
    assert emitted == scheduled == {f"x-mlflow://{MODEL}@challenger"}


def test_the_candidate_comes_from_the_newest_promotion_event(airflow_db: Path, mlops_home: Path) -> None:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.operators.registry import model_alias_asset
    from airflow_mlops.operators.resolve import ResolveRolloutOperator

    client = MlflowHook().get_client()
    client.create_registered_model(MODEL)
    versions = [str(client.create_model_version(MODEL, f"file:///m/{i}").version) for i in range(4)]
    client.set_registered_model_alias(MODEL, "champion", versions[0])
    client.set_registered_model_alias(MODEL, "challenger", versions[3])  # moved again since the events
    promoted = model_alias_asset(MODEL, "challenger")
    events = TriggeringAssetEventsAccessor.build([
        _event(promoted, {"model_name": MODEL, "alias": "challenger", "version": versions[1]}, 0),
        _event(promoted, {"model_name": MODEL, "alias": "challenger", "version": versions[2]}, 5),
        _event(promoted, {"model_name": "another_model", "version": "7"}, 9),
    ])
    op = ResolveRolloutOperator(task_id="resolve", model_name=MODEL)
    assert op.execute({"triggering_asset_events": events}) == {  # type: ignore[arg-type]
        "model_name": MODEL, "candidate_version": versions[2], "stable_version": versions[0],
        "source": "asset event"}
    # A manual run: the alias; an explicit param wins over both.
    by_alias = op.execute({"triggering_asset_events": TriggeringAssetEventsAccessor.build([])})  # type: ignore
    assert (by_alias["candidate_version"], by_alias["source"]) == (versions[3], "alias challenger")
    explicit = ResolveRolloutOperator(task_id="r2", model_name=MODEL, candidate_version=versions[1])
    assert explicit.execute({"triggering_asset_events": events})["source"] == "param"  # type: ignore[arg-type]
    # The champion itself: nothing to roll out.
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="already is @champion"):
        ResolveRolloutOperator(task_id="r3", model_name=MODEL, candidate_version=versions[0]).execute({})  # type: ignore
