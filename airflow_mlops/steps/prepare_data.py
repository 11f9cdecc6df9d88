"""Step: write a dataset bundled with scikit-learn to the artifact store as Parquet, versioned by content hash.

Usage: ``python -m airflow_mlops.steps.prepare_data --dataset breast_cancer [--test-size 0.25] [--seed 42]``.
Output lands under ``$MLOPS_ARTIFACT_ROOT/datasets/<dataset>/<data_version>/{train,test}.parquet``.
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


def prepare(dataset: str, artifact_root: str, test_size: float, seed: int) -> dict[str, Any]:
    """Load, split (stratified, seeded) and write the dataset; return the result record."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame[LABEL])
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    version = content_hash(frame) + "-" + hashlib.sha256(f"{test_size}/{seed}".encode()).hexdigest()[:6]
    prefix = f"{artifact_root.rstrip('/')}/datasets/{dataset}/{version}"
    train_uri, test_uri = f"{prefix}/train.parquet", f"{prefix}/test.parquet"
    # Content-addressed: an identical dataset is already there, so a rerun writes nothing.
    if not (artifacts.exists(train_uri) and artifacts.exists(test_uri)):
        artifacts.write_parquet(train, train_uri)
        artifacts.write_parquet(test, test_uri)
    print(f"dataset {dataset}: {len(train)} train / {len(test)} test rows, {frame.shape[1] - 1} features, "
          f"data_version {version}")
    print(f"  train: {train_uri}\n  test:  {test_uri}")
    return {
        "dataset": dataset,
        "data_version": version,
        "train_uri": train_uri,
        "test_uri": test_uri,
        "label": LABEL,
        "rows": {"train": len(train), "test": len(test)},
        "features": [c for c in frame.columns if c != LABEL],
        "classes": sorted(int(c) for c in frame[LABEL].unique()),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; writes the result JSON to $MLOPS_RESULT_URI when set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="breast_cancer")
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
    result = prepare(args.dataset, args.artifact_root, args.test_size, args.seed)
    if os.environ.get(contract.RESULT_URI):
        artifacts.write_json(os.environ[contract.RESULT_URI], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
