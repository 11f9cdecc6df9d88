"""Step: turn captured inference traffic into Parquet (features + predictions) for drift checks.

Usage::

    python -m airflow_mlops.steps.inference_log --log-uri <file or prefix> --reference-uri <train.parquet> \
        [--label target] [--since-seconds 86400] [--min-rows 50]

Reads two capture formats, line by line (JSONL), from one file or every file below a prefix:

- the local router's inference log (``airflow_mlops.steps.router``): ``{"ts", "backend", "status", "request",
  "response"}`` with MLflow scoring-server bodies;
- SageMaker endpoint Data Capture: ``{"captureData": {"endpointInput": {...}, "endpointOutput": {...}},
  "eventMetadata": {"inferenceTime": ...}}`` with JSON, CSV or base64 payloads.

Request bodies may be ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``; rows without
column names take the reference dataset's feature order. The rows are read back into the reference's input
contract (its feature columns, order and dtypes: what the model's signature was logged from), so drift compares
like with like. Only successful responses count. Writes
``$MLOPS_OUTPUT_URI/inference/features.parquet`` and ``predictions.parquet`` (``y_pred``, ``proba_<i>``), the
shape the checks step reads. Never imports Airflow.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

from airflow_mlops.steps import artifacts, contract
from airflow_mlops.steps.signature import InputContract, SchemaMismatch


class BadInput(Exception):
    """No usable traffic, or traffic that does not match the reference features: exit EXIT_BAD_INPUT."""


def _rows_from_request(body: Any, features: list[str]) -> list[dict[str, Any]]:
    """Feature rows of one scoring request, whatever MLflow/SageMaker input format it used."""
    if isinstance(body, dict):
        if "dataframe_split" in body:
            split = body["dataframe_split"]
            columns = split.get("columns") or features
            return [dict(zip(columns, row, strict=True)) for row in split["data"]]
        if "dataframe_records" in body:
            return [dict(r) for r in body["dataframe_records"]]
        for key in ("instances", "inputs"):
            if key in body:
                return _rows_from_request(body[key], features)
    if isinstance(body, list):
        if all(isinstance(r, dict) for r in body):
            return [dict(r) for r in body]
        rows = body if body and isinstance(body[0], list) else [body]
        return [dict(zip(features, row, strict=True)) for row in rows]
    raise BadInput(f"unrecognised request body: {str(body)[:200]}")


def _predictions_from_response(body: Any) -> list[Any]:
    """Per-row outputs: a list of class probabilities, or one score/label per row."""
    if isinstance(body, dict):
        for key in ("predictions", "outputs"):
            if key in body:
                return _predictions_from_response(body[key])
        raise BadInput(f"unrecognised response body: {str(body)[:200]}")
    if isinstance(body, list):
        return body
    return [body]


def _sagemaker_payload(capture: dict[str, Any]) -> Any:
    data = capture.get("data", "")
    if capture.get("encoding") == "BASE64":
        data = base64.b64decode(data).decode()
    content_type = capture.get("observedContentType", "")
    if "csv" in content_type or capture.get("encoding") == "CSV":
        return [[float(v) for v in row] for row in csv.reader(io.StringIO(data)) if row]
    return json.loads(data)


def parse_line(line: str, features: list[str]) -> tuple[float, list[dict[str, Any]], list[Any]] | None:
    """(time, feature rows, outputs) of one captured request, or None when it should not count."""
    entry = json.loads(line)
    if "captureData" in entry:
        capture = entry["captureData"]
        stamp = entry.get("eventMetadata", {}).get("inferenceTime")
        ts = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else time.time()
        request = _sagemaker_payload(capture["endpointInput"])
        response = _sagemaker_payload(capture["endpointOutput"])
    else:
        if int(entry.get("status", 500)) >= 400 or entry.get("request") is None or entry.get("response") is None:
            return None
        ts, request, response = float(entry["ts"]), entry["request"], entry["response"]
    rows, outputs = _rows_from_request(request, features), _predictions_from_response(response)
    if len(rows) != len(outputs):
        return None  # a partial capture (body over the log's size limit): skip rather than misalign
    return ts, rows, outputs


def class_labels(reference_predictions_uri: str | None, width: int) -> list[Any]:
    """Class labels in probability-column order: from the trainer's ``proba_<class>`` columns when known."""
    if reference_predictions_uri:
        if not artifacts.exists(reference_predictions_uri):
            raise BadInput(f"reference predictions {reference_predictions_uri} do not exist")
        columns = [c for c in artifacts.read_parquet(reference_predictions_uri).columns if c.startswith("proba_")]
        if len(columns) != width:
            raise BadInput(f"the served model returns {width} probabilities per row but the reference predictions "
                           f"have {len(columns)} classes ({columns})")
        labels: list[Any] = [c[len("proba_"):] for c in columns]
        return [int(v) if v.lstrip("-").isdigit() else v for v in labels]
    return list(range(width))


def collect(log_uri: str, reference_uri: str, label: str | None, since_seconds: float | None, min_rows: int,
            output_uri: str, now: float | None = None,
            reference_predictions_uri: str | None = None) -> dict[str, Any]:
    """Read captures, keep the window, write features and predictions Parquet; return the result record.

    With ``reference_predictions_uri`` (the trainer's predictions) probability columns and ``y_pred`` use its class
    labels, so they line up with the reference for prediction drift; otherwise classes are 0..n-1.
    """
    import numpy as np
    import pandas as pd

    if not artifacts.exists(reference_uri):
        raise BadInput(f"reference dataset {reference_uri} does not exist")
    reference = artifacts.read_parquet(reference_uri)
    features = [c for c in reference.columns if c != label]
    files = artifacts.list_files(log_uri)
    if not files:
        raise BadInput(f"no inference logs at {log_uri}")
    cutoff = (now or time.time()) - since_seconds if since_seconds else None
    rows: list[dict[str, Any]] = []
    outputs: list[Any] = []
    skipped = lines = 0
    for uri in files:
        for line in artifacts.read_bytes(uri).decode().splitlines():
            if not line.strip():
                continue
            lines += 1
            try:
                parsed = parse_line(line, features)
            except (ValueError, KeyError, TypeError, BadInput):
                parsed = None
            if parsed is None or (cutoff is not None and parsed[0] < cutoff):
                skipped += 1
                continue
            rows.extend(parsed[1])
            outputs.extend(parsed[2])
    print(f"read {lines} captured requests from {len(files)} file(s) under {log_uri}: {len(rows)} rows kept, "
          f"{skipped} requests skipped (errors, outside the window, unparseable)")
    if len(rows) < min_rows:
        raise BadInput(f"only {len(rows)} inference rows in the window (min_rows={min_rows}): too few for drift")
    try:
        frame = InputContract.from_frame(reference[features]).conform(pd.DataFrame(rows))
    except SchemaMismatch as err:
        raise BadInput(f"captured requests do not match the reference features: {err}") from None
    proba = np.asarray(outputs, dtype="float64")
    if proba.ndim == 1:
        predictions = pd.DataFrame({"y_pred": proba})
    else:
        labels = class_labels(reference_predictions_uri, proba.shape[1])
        predictions = pd.DataFrame({"y_pred": [labels[i] for i in np.argmax(proba, axis=1)]})
        for i, cls in enumerate(labels):
            predictions[f"proba_{cls}"] = proba[:, i]
    base = f"{output_uri.rstrip('/')}/inference"
    features_uri, predictions_uri = f"{base}/features.parquet", f"{base}/predictions.parquet"
    artifacts.write_parquet(frame, features_uri)
    artifacts.write_parquet(predictions, predictions_uri)
    print(f"features -> {features_uri}\npredictions -> {predictions_uri}")
    return {"log_uri": log_uri, "files": len(files), "requests": lines, "skipped": skipped, "rows": len(frame),
            "features_uri": features_uri, "predictions_uri": predictions_uri, "reference_uri": reference_uri,
            "since_seconds": since_seconds}


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, EXIT_BAD_INPUT when there is no usable traffic."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-uri", required=True, help="a JSONL capture file or a prefix holding them")
    parser.add_argument("--reference-uri", required=True, help="training Parquet: feature names, order and types")
    parser.add_argument("--label", default=os.environ.get(contract.LABEL_COLUMN, "target"))
    parser.add_argument("--since-seconds", type=float, default=0, help="only traffic this recent (0: all)")
    parser.add_argument("--min-rows", type=int, default=50)
    parser.add_argument("--reference-predictions-uri", default="",
                        help="the trainer's predictions on the reference data: class labels of the proba columns")
    parser.add_argument("--output-uri", default=os.environ.get(contract.OUTPUT_URI, ""))
    args = parser.parse_args(argv)
    try:
        if not args.output_uri:
            raise BadInput(f"--output-uri or ${contract.OUTPUT_URI} is required")
        result = collect(args.log_uri, args.reference_uri, args.label or None, args.since_seconds or None,
                         args.min_rows, args.output_uri,
                         reference_predictions_uri=args.reference_predictions_uri or None)
    except BadInput as err:
        print(f"error: bad input: {err}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if os.environ.get(contract.RESULT_URI):
        artifacts.write_json(os.environ[contract.RESULT_URI], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
