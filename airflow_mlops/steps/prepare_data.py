"""Step: split a dataset into train/test Parquet in the artifact store, versioned by content hash.

Usage: ``python -m airflow_mlops.steps.prepare_data --dataset breast_cancer [--test-size 0.25] [--seed 42]``, or
``--source-uri s3://bucket/landing/churn.parquet --label churned`` for data that landed in the artifact store
(Parquet or CSV, local path or ``s3://``). Output lands under
``$MLOPS_ARTIFACT_ROOT/datasets/<dataset>/<data_version>/{train,test}.parquet``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any

from airflow_mlops.steps import artifacts, contract

DATASETS = ("breast_cancer", "wine", "iris", "digits")
LABEL = "target"


def content_hash(df: Any) -> str:
    """Hash of the table's values, column names and dtypes: independent of the Parquet writer's version."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(",".join(f"{c}:{t}" for c, t in df.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


class BadInput(ValueError):
    """The source data cannot be trained on (the message says why)."""


def dataset_name(source_uri: str) -> str:
    """``s3://b/landing/churn-2026-11.parquet`` -> ``churn-2026-11`` (a path segment of the output prefix)."""
    stem = source_uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem).strip("-_")
    return name or "dataset"


def load_source(source_uri: str, label: str) -> Any:
    """Read landed data (Parquet or CSV) and check it can be split and trained on."""
    import io

    import pandas as pd

    if not artifacts.exists(source_uri):
        raise BadInput(f"source data {source_uri} not found")
    lower = source_uri.lower()
    if lower.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(io.BytesIO(artifacts.read_bytes(source_uri)),
                            compression="gzip" if lower.endswith(".gz") else None)
    elif lower.endswith(".parquet") or lower.endswith(".pq"):
        frame = artifacts.read_parquet(source_uri)
    else:
        raise BadInput(f"source data {source_uri}: unsupported format (allowed: .parquet, .pq, .csv, .csv.gz)")
    if label not in frame.columns:
        raise BadInput(f"source data {source_uri}: label column {label!r} missing (columns: "
                       f"{', '.join(map(str, frame.columns[:20]))})")
    if len(frame) < 4:
        raise BadInput(f"source data {source_uri}: {len(frame)} rows, need at least 4 to split train/test")
    if frame[label].isna().any():
        raise BadInput(f"source data {source_uri}: {int(frame[label].isna().sum())} rows have no label {label!r}")
    return frame


def prepare(dataset: str, artifact_root: str, test_size: float, seed: int, source_uri: str | None = None,
            label: str = LABEL) -> dict[str, Any]:
    """Load, split (stratified when every class has 2+ rows, seeded) and write the dataset; return the record."""
    from sklearn.model_selection import train_test_split

    if source_uri:
        frame = load_source(source_uri, label)
        dataset = dataset_name(source_uri)
    else:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
        label = LABEL
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    label = label.replace(" ", "_")
    counts = frame[label].value_counts()
    stratify = frame[label] if len(counts) > 1 and counts.min() >= 2 else None
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=stratify)
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    version = content_hash(frame) + "-" + hashlib.sha256(f"{test_size}/{seed}".encode()).hexdigest()[:6]
    prefix = f"{artifact_root.rstrip('/')}/datasets/{dataset}/{version}"
    train_uri, test_uri = f"{prefix}/train.parquet", f"{prefix}/test.parquet"
    # Content-addressed: an identical dataset is already there, so a rerun writes nothing.
    if not (artifacts.exists(train_uri) and artifacts.exists(test_uri)):
        artifacts.write_parquet(train, train_uri)
        artifacts.write_parquet(test, test_uri)
    print(f"dataset {dataset}{f' (from {source_uri})' if source_uri else ''}: {len(train)} train / {len(test)} "
          f"test rows, {frame.shape[1] - 1} features, data_version {version}")
    print(f"  train: {train_uri}\n  test:  {test_uri}")
    return {
        "dataset": dataset,
        "data_version": version,
        "train_uri": train_uri,
        "test_uri": test_uri,
        "source_uri": source_uri,
        "label": label,
        "rows": {"train": len(train), "test": len(test)},
        "features": [c for c in frame.columns if c != label],
        "classes": sorted(_plain(c) for c in frame[label].unique()),
    }


def _plain(value: Any) -> Any:
    """A class label as JSON has it (numpy ints become ints)."""
    return value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; writes the result JSON to $MLOPS_RESULT_URI when set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="breast_cancer",
                        help="bundled dataset, used when no --source-uri is given")
    parser.add_argument("--source-uri", default="", help="landed data (Parquet or CSV; empty: --dataset)")
    parser.add_argument("--label", default=LABEL, help="label column of --source-uri")
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--artifact-root", default=os.environ.get(contract.ARTIFACT_ROOT))
    args = parser.parse_args(argv)
    if not args.artifact_root:
        print("error: --artifact-root or $MLOPS_ARTIFACT_ROOT is required", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if not 0 < args.test_size < 1:
        print(f"error: --test-size must be in (0, 1), got {args.test_size}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    try:
        result = prepare(args.dataset, args.artifact_root, args.test_size, args.seed,
                         source_uri=args.source_uri.strip() or None, label=args.label)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if os.environ.get(contract.RESULT_URI):
        artifacts.write_json(os.environ[contract.RESULT_URI], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
