"""prepare_data on data that landed in the artifact store (Parquet/CSV), and the data Asset event that names it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.assets import RETRAINING_REQUESTED, TRAINING_DATA, training_data_uri
from airflow_mlops.steps import contract, prepare_data
from airflow_mlops.steps.artifacts import read_json, read_parquet


def _landed(tmp_path: Path, rows: int = 60) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"tenure months": rng.integers(1, 72, rows), "spend": rng.normal(50, 10, rows),
                          "plan": rng.choice(["basic", "pro"], rows)})
    frame["churned"] = (frame["tenure months"] < 12).astype(int)
    return frame


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_landed_data_is_split_stratified_and_versioned(tmp_path: Path, fmt: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _landed(tmp_path)
    source = tmp_path / "landing" / f"churn-2026-11.{fmt}"
    source.parent.mkdir()
    frame.to_parquet(source) if fmt == "parquet" else frame.to_csv(source, index=False)
    root, result_uri = tmp_path / "artifacts", tmp_path / "result.json"
    monkeypatch.setenv(contract.RESULT_URI, str(result_uri))
    argv = ["--artifact-root", str(root), "--source-uri", str(source), "--label", "churned"]
    assert prepare_data.main(argv) == 0
    result = read_json(str(result_uri))
    assert result["dataset"] == "churn-2026-11" and result["source_uri"] == str(source)
    assert result["label"] == "churned" and result["classes"] == [0, 1]
    assert result["features"] == ["tenure_months", "spend", "plan"]
    train, test = read_parquet(result["train_uri"]), read_parquet(result["test_uri"])
    assert len(train) + len(test) == len(frame) == sum(result["rows"].values())
    assert abs(train["churned"].mean() - test["churned"].mean()) < 0.1, "stratified by the label"
    # Content-addressed: the same data gives the same version, changed data a new one.
    assert prepare_data.main(argv) == 0
    assert read_json(str(result_uri))["data_version"] == result["data_version"]


def test_bad_landed_data_is_bad_input_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = _landed(tmp_path)
    good = tmp_path / "d.parquet"
    frame.to_parquet(good)
    tiny = tmp_path / "tiny.parquet"
    frame.head(3).to_parquet(tiny)
    unlabeled = tmp_path / "unlabeled.parquet"
    frame.assign(churned=[None, *list(frame["churned"][1:])]).to_parquet(unlabeled)
    (tmp_path / "d.json").write_text("{}")
    cases = [(good, "label column 'label' missing"), (tmp_path / "absent.parquet", "not found"),
             (tmp_path / "d.json", "unsupported format"), (tiny, "3 rows"), (unlabeled, "1 rows have no label")]
    for source, why in cases:
        label = "label" if source == good else "churned"
        code = prepare_data.main(["--artifact-root", str(tmp_path / "a"), "--source-uri", str(source),
                                  "--label", label])
        assert code == contract.EXIT_BAD_INPUT, source
        assert why in capsys.readouterr().err
    assert not (tmp_path / "a").exists(), "nothing written for bad input"


def test_the_training_data_event_names_the_data() -> None:
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    def event(asset: Any, extra: dict, minutes: int) -> AssetEventDagRunReferenceResult:
        return AssetEventDagRunReferenceResult(
            asset={"name": asset.name, "uri": asset.uri, "extra": {}}, extra=extra, source_task_id=None,
            source_dag_id=None, source_run_id=None, source_map_index=None, source_aliases=[],
            timestamp=datetime(2026, 11, 30, tzinfo=timezone.utc) + timedelta(minutes=minutes))

    events = TriggeringAssetEventsAccessor.build([
        event(TRAINING_DATA, {"uri": "s3://b/landing/old.parquet"}, 0),
        event(TRAINING_DATA, {"uri": "s3://b/landing/new.parquet"}, 5),
        event(RETRAINING_REQUESTED, {"reason": "drift"}, 9),
    ])
    assert training_data_uri(events) == "s3://b/landing/new.parquet"
    assert training_data_uri(TriggeringAssetEventsAccessor.build([event(RETRAINING_REQUESTED, {}, 0)])) == ""
    assert training_data_uri(TriggeringAssetEventsAccessor.build([])) == ""
    assert training_data_uri(None) == ""
