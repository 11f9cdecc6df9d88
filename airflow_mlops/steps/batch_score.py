"""Step: score a Parquet batch with a registered model (and optionally a candidate), write scores as Parquet.

Usage::

    python -m airflow_mlops.steps.batch_score --model-uri models:/clf@champion --input-uri s3://.../batch.parquet \
        [--candidate-uri models:/clf@challenger] [--label target] [--id-column id] [--chunk-rows 100000]

An alias is resolved to its version once, before scoring, and that pinned version scores every chunk: an
alias moved by a promotion in the middle of a batch cannot mix two models' scores into one output.
With a candidate, both score the same rows and the step reports how far their outputs agree; the
orchestrator decides (``airflow_mlops.core.batch``) which output consumers read.

Each model is given the batch as its logged signature declares it (``airflow_mlops.steps.signature``): the
signature's columns in its order and dtypes; a batch that lacks one of them is refused, naming every missing column.

Outputs go under ``$MLOPS_OUTPUT_URI/scores/<model>-v<version>.parquet``: the id column (if any), one
``proba_<class>`` column per class and ``prediction``. Never imports Airflow.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from airflow_mlops.steps import artifacts, contract
from airflow_mlops.steps.signature import InputContract, SchemaMismatch

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class BadInput(Exception):
    """Unreadable or unsuitable input, or an unknown model/alias: exit EXIT_BAD_INPUT, never retried."""


@dataclass(frozen=True)
class ResolvedModel:
    """A ``models:/`` URI pinned to one version."""

    requested: str
    name: str
    version: str
    alias: str | None

    @property
    def pinned_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(uri: str) -> ResolvedModel:
    """Pin ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` to a version that exists."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = _MODELS_URI.match(uri)
    if not match:
        raise BadInput(f"model URI {uri!r} must be models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = match["name"], match["alias"], match["version"]
    client = MlflowClient()
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise BadInput(f"registered model {name!r} has no {what} in {client.tracking_uri}: {err.message}") from None
    return ResolvedModel(uri, name, str(found.version), alias)


def read_batch(input_uri: str, sample_dataset: str | None, label: str | None) -> Any:
    """The batch to score; the label column (if present) is dropped: a batch arrives without ground truth."""
    if input_uri:
        if not artifacts.exists(input_uri):
            raise BadInput(f"input {input_uri} does not exist")
        frame = artifacts.read_parquet(input_uri)
    elif sample_dataset:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{sample_dataset}")(as_frame=True).frame
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    else:
        raise BadInput("give --input-uri (a Parquet batch) or --sample-dataset")
    if frame.empty:
        raise BadInput(f"input {input_uri or sample_dataset} has no rows")
    if label and label in frame.columns:
        frame = frame.drop(columns=[label])
    return frame


def input_contract(model: Any) -> InputContract | None:
    """The loaded model's input contract, from its logged signature (None: it logged none)."""
    try:
        return InputContract.from_schema(model.metadata.get_input_schema())
    except SchemaMismatch as err:
        raise BadInput(f"the model's signature cannot be scored from a frame: {err}") from None


def score(model: Any, frame: Any, id_column: str | None, chunk_rows: int, classes: list[str] | None,
          model_input: InputContract | None = None) -> Any:
    """Probabilities and predicted class for every row, scored chunk by chunk to bound memory.

    :param model_input: the model's input contract: each chunk is conformed to it (columns, order, dtypes)
        before ``predict``; None passes the batch's columns as they are.
    """
    import numpy as np
    import pandas as pd
    from mlflow.exceptions import MlflowException

    features = frame.drop(columns=[id_column]) if id_column else frame
    parts = []
    for start in range(0, len(features), chunk_rows):
        chunk = features.iloc[start:start + chunk_rows]
        try:
            out = model.predict(model_input.conform(chunk) if model_input is not None else chunk)
        except SchemaMismatch as err:
            raise BadInput(f"the batch does not match the model's input schema: {err}") from None
        except MlflowException as err:  # schema enforcement: missing/mistyped columns
            raise BadInput(f"the batch does not match the model's input schema: {err.message}") from None
        parts.append(np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out, dtype="float64"))
    proba = np.concatenate(parts)
    if proba.ndim == 1:  # one score per row: only a binary model's positive-class probability makes sense
        if (classes and len(classes) != 2) or not ((proba >= 0) & (proba <= 1)).all():
            raise BadInput("the model returns one value per row that is not a probability in [0, 1] (labels?): "
                           "log it with class probabilities (e.g. pyfunc_predict_fn='predict_proba')")
        proba = np.column_stack([1 - proba, proba])
    names = classes or [str(i) for i in range(proba.shape[1])]
    if len(names) != proba.shape[1]:
        raise BadInput(f"--classes names {len(names)} classes but the model returns {proba.shape[1]} columns")
    result = pd.DataFrame({f"proba_{c}": proba[:, i] for i, c in enumerate(names)})
    result.insert(0, "prediction", [names[i] for i in np.argmax(proba, axis=1)])
    if id_column:
        result.insert(0, id_column, frame[id_column].to_numpy())
    return result


def compare(current: Any, candidate: Any) -> dict[str, float]:
    """Row-by-row agreement of two score frames over the same rows (keys of ``core.batch.STAT_KEYS``)."""
    import numpy as np

    proba_cols = [c for c in current.columns if c.startswith("proba_")]
    if proba_cols != [c for c in candidate.columns if c.startswith("proba_")] or len(current) != len(candidate):
        raise BadInput("current and candidate outputs differ in classes or rows: they cannot be compared")
    rows = len(current)
    agreement = float((current["prediction"].to_numpy() == candidate["prediction"].to_numpy()).mean())
    diff = float(np.abs(current[proba_cols].to_numpy() - candidate[proba_cols].to_numpy()).mean())
    labels = sorted(set(current["prediction"]) | set(candidate["prediction"]))
    cur_rate = current["prediction"].value_counts(normalize=True)
    cand_rate = candidate["prediction"].value_counts(normalize=True)
    shift = max(abs(float(cur_rate.get(k, 0.0)) - float(cand_rate.get(k, 0.0))) for k in labels)
    return {"rows": rows, "agreement": agreement, "mean_abs_proba_diff": diff, "max_class_rate_shift": shift}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve, score, write; return the result record."""
    import mlflow.pyfunc

    if not args.output_uri:
        raise BadInput(f"--output-uri or ${contract.OUTPUT_URI} is required")
    frame = read_batch(args.input_uri, args.sample_dataset, args.label)
    if args.id_column and args.id_column not in frame.columns:
        raise BadInput(f"--id-column {args.id_column!r} is not a column of the batch ({sorted(frame.columns)[:10]}...)")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    outputs: dict[str, Any] = {}
    frames: dict[str, Any] = {}
    for role, uri in (("current", args.model_uri), ("candidate", args.candidate_uri)):
        if not uri:
            continue
        model_ref = resolve(uri)
        print(f"{role}: {uri} -> version {model_ref.version} (scoring {model_ref.pinned_uri})")
        model = mlflow.pyfunc.load_model(model_ref.pinned_uri)
        model_input = input_contract(model)
        print(f"  input: {model_input.describe() if model_input else 'no signature: the batch columns as they are'}")
        scores = score(model, frame, args.id_column, args.chunk_rows, classes, model_input)
        out_uri = f"{args.output_uri.rstrip('/')}/scores/{model_ref.name}-v{model_ref.version}.parquet"
        artifacts.write_parquet(scores, out_uri)
        counts = {str(k): int(v) for k, v in scores["prediction"].value_counts().sort_index().items()}
        print(f"  {len(scores)} rows scored -> {out_uri}; predicted classes {counts}")
        frames[role] = scores
        outputs[role] = {"model_uri": uri, "pinned_uri": model_ref.pinned_uri, "model_name": model_ref.name,
                         "version": model_ref.version, "alias": model_ref.alias, "output_uri": out_uri,
                         "rows": len(scores), "prediction_counts": counts,
                         "input": model_input.describe() if model_input else None}
    result: dict[str, Any] = {"input_uri": args.input_uri or f"sample:{args.sample_dataset}", "rows": len(frame),
                              **outputs}
    if "candidate" in frames:
        stats = compare(frames["current"], frames["candidate"])
        result["comparison"] = stats
        print("comparison: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in stats.items()))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments, falling back to the orchestrator's env contract."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("--candidate-uri", default="", help="a second model scoring the same rows (blue-green)")
    parser.add_argument("--input-uri", default="", help="Parquet batch (local path or s3://)")
    parser.add_argument("--sample-dataset", default=None, choices=("breast_cancer", "wine", "iris", "digits"),
                        help="score a scikit-learn bundled dataset when no --input-uri is given (laptop demo)")
    parser.add_argument("--label", default=os.environ.get(contract.LABEL_COLUMN, ""),
                        help="label column to drop if the batch carries one")
    parser.add_argument("--id-column", default="", help="column copied through to the output to join scores back")
    parser.add_argument("--classes", default="", help="comma-separated class names, in the model's column order")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--output-uri", default=os.environ.get(contract.OUTPUT_URI, ""))
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        raise BadInput(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, EXIT_BAD_INPUT on bad input (never retried)."""
    try:
        result = run(parse_args(argv))
    except BadInput as err:
        print(f"error: bad input: {err}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if os.environ.get(contract.RESULT_URI):
        artifacts.write_json(os.environ[contract.RESULT_URI], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
