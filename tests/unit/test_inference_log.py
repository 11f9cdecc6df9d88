"""The inference-log collector: router and SageMaker Data Capture formats, windows, and bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.steps import inference_log
from airflow_mlops.steps.inference_log import BadInput, collect, parse_line

FEATURES = ["a", "b"]


def router_line(ts: float, rows: list[list[float]], probas: list[list[float]], status: int = 200,
                fmt: str = "split") -> str:
    if fmt == "split":
        request = {"dataframe_split": {"columns": FEATURES, "data": rows}}
    elif fmt == "records":
        request = {"dataframe_records": [dict(zip(FEATURES, r, strict=True)) for r in rows]}
    else:
        request = {"inputs": rows}
    return json.dumps({"ts": ts, "backend": "v1", "status": status, "latency_s": 0.01, "request": request,
                       "response": {"predictions": probas} if status < 400 else None})


def capture_line(rows: list[list[float]], probas: list[list[float]], encoding: str) -> str:
    if encoding == "CSV":
        data_in = "\n".join(",".join(str(v) for v in r) for r in rows)
        content = "text/csv"
    else:
        data_in = json.dumps({"instances": rows})
        content = "application/json"
    data_out = json.dumps({"predictions": probas})
    if encoding == "BASE64":
        data_in, data_out = base64.b64encode(data_in.encode()).decode(), base64.b64encode(data_out.encode()).decode()
    return json.dumps({"captureData": {
        "endpointInput": {"observedContentType": content, "mode": "INPUT", "data": data_in, "encoding": encoding},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "data": data_out,
                           "encoding": "BASE64" if encoding == "BASE64" else "JSON"}},
        "eventMetadata": {"eventId": "e1", "inferenceTime": "2026-11-25T10:00:00Z"}, "eventVersion": "0"})


@pytest.mark.parametrize("fmt", ["split", "records", "inputs"])
def test_router_formats(fmt: str) -> None:
    ts, rows, outputs = parse_line(router_line(5.0, [[1, 2], [3, 4]], [[0.9, 0.1], [0.2, 0.8]], fmt=fmt), FEATURES)
    assert ts == 5.0 and rows == [{"a": 1, "b": 2}, {"a": 3, "b": 4}] and outputs == [[0.9, 0.1], [0.2, 0.8]]


def test_failed_requests_do_not_count() -> None:
    assert parse_line(router_line(5.0, [[1, 2]], [[0.5, 0.5]], status=503), FEATURES) is None


@pytest.mark.parametrize("encoding", ["JSON", "CSV", "BASE64"])
def test_sagemaker_data_capture(encoding: str) -> None:
    ts, rows, outputs = parse_line(capture_line([[1.0, 2.0]], [[0.3, 0.7]], encoding), FEATURES)
    assert rows == [{"a": 1.0, "b": 2.0}] and outputs == [[0.3, 0.7]]
    assert ts == pytest.approx(pd.Timestamp("2026-11-25T10:00:00Z").timestamp())


def _reference(tmp_path: Path) -> str:
    path = tmp_path / "train.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "target": [0, 1]}).to_parquet(path)
    return str(path)


def test_collect_keeps_the_window_across_files_and_writes_parquet(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.jsonl").write_text(router_line(100.0, [[9, 9]] * 5, [[0.5, 0.5]] * 5) + "\n")
    (logs / "new.jsonl").write_text("\n".join([router_line(1000.0, [[1, 2]] * 3, [[0.9, 0.1]] * 3),
                                               "not json", router_line(1001.0, [[3, 4]], [[0.1, 0.9]])]) + "\n")
    result = collect(str(logs), _reference(tmp_path), "target", since_seconds=50, min_rows=4,
                     output_uri=str(tmp_path / "out"), now=1010.0)
    assert result["rows"] == 4 and result["files"] == 2 and result["skipped"] == 2
    features = pd.read_parquet(result["features_uri"])
    predictions = pd.read_parquet(result["predictions_uri"])
    assert list(features.columns) == FEATURES and features["a"].tolist() == [1.0, 1.0, 1.0, 3.0]
    assert features.dtypes.tolist() == [float, float]  # the reference's types, not JSON's ints
    assert predictions["y_pred"].tolist() == [0, 0, 0, 1] and list(predictions.columns) == ["y_pred", "proba_0",
                                                                                           "proba_1"]


def test_collect_bad_input(tmp_path: Path) -> None:
    ref = _reference(tmp_path)
    log = tmp_path / "log.jsonl"
    log.write_text(router_line(1.0, [[1, 2]], [[0.5, 0.5]]) + "\n")
    with pytest.raises(BadInput, match="no inference logs"):
        collect(str(tmp_path / "missing"), ref, "target", None, 1, str(tmp_path / "o"))
    with pytest.raises(BadInput, match="only 1 inference rows"):
        collect(str(log), ref, "target", None, 10, str(tmp_path / "o"))
    with pytest.raises(BadInput, match="reference dataset"):
        collect(str(log), str(tmp_path / "nope.parquet"), "target", None, 1, str(tmp_path / "o"))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"ts": 1.0, "status": 200, "request": {"dataframe_records": [{"x": 1}]},
                                 "response": {"predictions": [[0.5, 0.5]]}}) + "\n")
    with pytest.raises(BadInput, match=r"do not match the reference features: .*lacks 2 column\(s\).*: a, b "):
        collect(str(other), ref, "target", None, 1, str(tmp_path / "o"))
    assert inference_log.main(["--log-uri", str(log), "--reference-uri", ref, "--min-rows", "5",
                               "--output-uri", str(tmp_path / "o")]) == 2


def test_probability_columns_take_the_reference_class_labels(tmp_path: Path) -> None:
    """Labels 1/2/3 (not 0..n-1): y_pred and proba_<class> must line up with the trainer's predictions."""
    ref_pred = tmp_path / "ref_pred.parquet"
    pd.DataFrame({"y_true": [1], "y_pred": [1], "proba_1": [0.7], "proba_2": [0.2], "proba_3": [0.1]}).to_parquet(
        ref_pred)
    log = tmp_path / "log.jsonl"
    log.write_text(router_line(1.0, [[1, 2], [3, 4]], [[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]]) + "\n")
    result = collect(str(log), _reference(tmp_path), "target", None, 1, str(tmp_path / "o"),
                     reference_predictions_uri=str(ref_pred))
    predictions = pd.read_parquet(result["predictions_uri"])
    assert list(predictions.columns) == ["y_pred", "proba_1", "proba_2", "proba_3"]
    assert predictions["y_pred"].tolist() == [3, 1]
    (tmp_path / "two.jsonl").write_text(router_line(1.0, [[1, 2]], [[0.4, 0.6]]) + "\n")
    with pytest.raises(BadInput, match="returns 2 probabilities per row but the reference predictions have 3"):
        collect(str(tmp_path / "two.jsonl"), _reference(tmp_path), "target", None, 1, str(tmp_path / "o"),
                reference_predictions_uri=str(ref_pred))
