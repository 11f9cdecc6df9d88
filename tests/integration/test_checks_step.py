"""The checks step with real deepchecks in the pinned checks venv (built once, cached by the lock's hash).

Nothing is mocked: each test runs ``python -m airflow_mlops.steps.checks`` in the checks venv on Parquet files
written here, and reads the result JSON and the HTML report it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.checks import verdict
from airflow_mlops.runtime.checks_env import ensure_checks_env, step_pythonpath
from airflow_mlops.steps import contract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def checks_python() -> str:
    """The checks venv's interpreter: built on first use (about a minute), then found in the cache."""
    return ensure_checks_env()


def clean_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Independent numeric features, one categorical, a noisy label: nothing for data integrity to flag."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    frame["color"] = rng.choice(["red", "green", "blue"], size=rows)
    noisy = x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.5, size=rows)
    frame["target"] = (noisy > 0).astype(int)
    return frame


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_parquet(path, index=False)
    return str(path)


def run_step(python: str, tmp_path: Path, *args: str) -> tuple[int, str, dict | None]:
    env = {**os.environ, "PYTHONPATH": step_pythonpath(), contract.OUTPUT_URI: str(tmp_path / "out"),
           contract.RESULT_URI: str(tmp_path / "result.json")}
    proc = subprocess.run([python, "-m", "airflow_mlops.steps.checks", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    result_path = tmp_path / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    return proc.returncode, proc.stdout + proc.stderr, result


def statuses(result: dict) -> dict[str, str]:
    return {r["name"]: r["status"] for r in result["checks"]}


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1


def test_clean_dataset_passes_data_integrity_and_reports(checks_python: str, tmp_path: Path) -> None:
    train = write(clean_frame(), tmp_path / "train.parquet")
    code, out, result = run_step(checks_python, tmp_path, "--suite", "data_integrity", "--train-uri", train,
                                 "--cat-features", "color", "--fail-on-warning")
    assert code == 0, out[-3000:]
    assert result is not None and result["passed"], result and result["failed_checks"]
    assert verdict(result["checks"], fail_on_warning=True).passed
    seen = statuses(result)
    for name in ("data_duplicates", "mixed_nulls", "mixed_data_types", "is_single_value", "special_characters",
                 "string_mismatch", "conflicting_labels"):
        assert seen[name] == "passed", (name, result["checks"])
    # Reports: the HTML parses and holds the suite's output; the JSON is the same record as the result.
    report, json_uri = Path(result["report_uri"]), Path(result["json_uri"])
    assert report == tmp_path / "out" / "report.html" and report.stat().st_size > 100_000
    parser = _Counter()
    parser.feed(report.read_text(encoding="utf-8"))
    assert parser.tags.get("html") == 1 and parser.tags.get("script", 0) >= 1
    assert json.loads(json_uri.read_text())["checks"] == result["checks"]


def test_injected_duplicates_nulls_and_mixed_types_fail_exactly_those_checks(checks_python: str,
                                                                             tmp_path: Path) -> None:
    frame = clean_frame()
    frame = pd.concat([frame, frame.iloc[:60]], ignore_index=True)  # 13% duplicate rows
    color = frame["color"].astype(object)
    color.iloc[::10] = "N/A"  # a second null spelling next to None
    color.iloc[5::10] = None
    frame["color"] = color
    # A text column of numbers with 5% words: what a CSV export with "unknown" for missing values gives.
    mixed = (frame["f3"].abs() * 100).round().astype(int).astype(str).astype(object)
    mixed.iloc[::20] = "unknown"
    frame["f3"] = mixed
    train = write(frame, tmp_path / "train.parquet")
    code, out, result = run_step(checks_python, tmp_path, "--suite", "data_integrity", "--train-uri", train,
                                 "--cat-features", "color", "--fail-on-warning")
    assert code == 0, out[-3000:]
    assert result is not None and not result["passed"]
    assert result["failed_checks"] == ["data_duplicates", "mixed_data_types", "mixed_nulls"], result["checks"]
    failed = verdict(result["checks"], fail_on_warning=True).failed_conditions
    assert any(line.startswith("data_duplicates") for line in failed)


def test_shifted_feature_fails_feature_drift(checks_python: str, tmp_path: Path) -> None:
    reference = clean_frame(seed=1)
    current = clean_frame(seed=2).drop(columns=["target"])  # inference data: no label
    current["f2"] = current["f2"] + 3.0
    code, out, result = run_step(checks_python, tmp_path, "--suite", "drift",
                                 "--train-uri", write(reference, tmp_path / "ref.parquet"),
                                 "--test-uri", write(current, tmp_path / "cur.parquet"), "--cat-features", "color")
    assert code == 0, out[-3000:]
    assert result is not None
    assert statuses(result) == {"feature_drift": "failed"}
    (drift,) = result["checks"]
    assert "f2" in drift["conditions"][0]["details"]


def _predictions(proba: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"y_pred": proba.argmax(axis=1), "proba_0": proba[:, 0], "proba_1": proba[:, 1]})


@pytest.mark.parametrize("predictor", ["sklearn", "numpy"])
def test_model_evaluation_from_precomputed_predictions(checks_python: str, tmp_path: Path, predictor: str) -> None:
    from sklearn.linear_model import LogisticRegression

    train, test = clean_frame(seed=3), clean_frame(rows=200, seed=4)
    features = ["f0", "f1", "f2", "f3"]
    if predictor == "sklearn":
        model = LogisticRegression().fit(train[features], train["target"])
        proba_train, proba_test = model.predict_proba(train[features]), model.predict_proba(test[features])
    else:  # a plain numpy function: no model object anywhere, as for torch or any other framework
        def predict(x: np.ndarray) -> np.ndarray:
            p1 = 1 / (1 + np.exp(-(x[:, 0] + 0.5 * x[:, 1])))
            return np.column_stack([1 - p1, p1])
        proba_train, proba_test = predict(train[features].to_numpy()), predict(test[features].to_numpy())
    code, out, result = run_step(
        checks_python, tmp_path, "--suite", "model_evaluation", "--cat-features", "color",
        "--train-uri", write(train, tmp_path / "train.parquet"), "--test-uri", write(test, tmp_path / "test.parquet"),
        "--train-predictions-uri", write(_predictions(proba_train), tmp_path / "ptrain.parquet"),
        "--test-predictions-uri", write(_predictions(proba_test), tmp_path / "ptest.parquet"))
    assert code == 0, out[-3000:]
    assert result is not None
    seen = statuses(result)
    assert seen["roc_report"] == "passed" and seen["prediction_drift"] == "passed"
    assert seen["train_test_performance"] in ("passed", "failed")  # it ran: a verdict, not "not run"
    roc = next(r for r in result["checks"] if r["name"] == "roc_report")
    assert roc["key_values"] and all(v > 0.6 for v in roc["key_values"].values())
    assert "boosting_overfit" not in seen  # needs a model object: never run here


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, str]:
    good = clean_frame(rows=50)
    return {
        "train": write(good, tmp_path / "train.parquet"),
        "test": write(good, tmp_path / "test.parquet"),
        "nolabel": write(good.drop(columns=["target"]), tmp_path / "nolabel.parquet"),
        "empty": write(good.iloc[:0], tmp_path / "empty.parquet"),
        "othercols": write(good.rename(columns={"f1": "g1"}), tmp_path / "othercols.parquet"),
        "short_preds": write(_predictions(np.full((49, 2), 0.5)), tmp_path / "short.parquet"),
        "preds": write(_predictions(np.full((50, 2), 0.5)), tmp_path / "preds.parquet"),
    }


BAD = {
    "missing label": (["--suite", "data_integrity", "--train-uri", "{nolabel}"],
                      "label column 'target' is missing from the train dataset"),
    "uri not found": (["--suite", "data_integrity", "--train-uri", "{missing}"], "train dataset URI not found"),
    "empty dataset": (["--suite", "data_integrity", "--train-uri", "{empty}"], "is empty (0 rows)"),
    "predictions length": (["--suite", "model_evaluation", "--train-uri", "{train}", "--test-uri", "{test}",
                            "--train-predictions-uri", "{short_preds}", "--test-predictions-uri", "{preds}"],
                           "train predictions have 49 rows but the train dataset has 50"),
    "column mismatch": (["--suite", "train_test_validation", "--train-uri", "{train}", "--test-uri", "{othercols}"],
                        "mismatched columns (only in train: ['f1'], only in test: ['g1'])"),
    "unknown suite": (["--suite", "data_integrety", "--train-uri", "{train}"], "unknown suite 'data_integrety'"),
    "unknown check": (["--checks", '[{"name": "data_duplicate"}]', "--train-uri", "{train}"],
                      "unknown check 'data_duplicate'"),
    "unknown condition": (["--checks", '[{"name": "data_duplicates", "conditions": {"ratio_below": {}}}]',
                           "--train-uri", "{train}"], "unknown condition 'ratio_below' of check data_duplicates"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_a_clear_error_before_any_suite(checks_python: str, tmp_path: Path,
                                                               bad_inputs: dict[str, str], case: str) -> None:
    args, message = BAD[case]
    paths = {**bad_inputs, "missing": str(tmp_path / "nowhere.parquet")}
    code, out, result = run_step(checks_python, tmp_path, *[a.format(**paths) if a.startswith("{") else a
                                                             for a in args])
    assert code == contract.EXIT_BAD_INPUT, out[-2000:]
    assert message in out, out[-2000:]
    assert "running" not in out and result is None  # rejected before any suite ran


CATALOG_PROBE = """
import inspect, json
from deepchecks.tabular import checks
from airflow_mlops.steps.checks import snake
out = {}
for name, cls in vars(checks).items():
    if inspect.isclass(cls) and hasattr(cls, "run"):
        out[snake(name)] = sorted(m[len("add_condition_"):] for m in dir(cls) if m.startswith("add_condition_"))
print(json.dumps(out))
"""


def test_core_catalog_matches_deepchecks_in_the_checks_venv(checks_python: str) -> None:
    from airflow_mlops.core.checks import CHECKS

    proc = subprocess.run([checks_python, "-c", CATALOG_PROBE], env={**os.environ, "PYTHONPATH": step_pythonpath()},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, conditions in CHECKS.items():
        assert name in real, f"{name} is not a deepchecks check"
        assert sorted(conditions) == real[name], name
