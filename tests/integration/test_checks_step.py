"""The checks step with real deepchecks in the pinned checks venv (built once, cached by the lock's hash).

Nothing is mocked: each test runs ``python -m airflow_mlops.steps.checks`` in the checks venv on Parquet files
written here, and reads the result JSON and the HTML report it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.checks import verdict
from airflow_mlops.runtime import checks_env
from airflow_mlops.runtime.checks_env import PACKAGE_DIR, ensure_checks_env, step_env
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
    env = {**os.environ, **step_env(), contract.OUTPUT_URI: str(tmp_path / "out"),
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


def test_drift_thresholds_decide_on_the_same_data(checks_python: str, tmp_path: Path) -> None:
    """A moderate shift (KS about 0.4 on f2 and on the predictions): a low threshold flags it, a high one passes."""
    reference = clean_frame(rows=200, seed=1)
    current = clean_frame(rows=200, seed=2).drop(columns=["target"])
    current["f2"] = current["f2"] + 1.0
    args = ["--suite", "drift", "--cat-features", "color", "--train-uri", write(reference, tmp_path / "ref.parquet"),
            "--test-uri", write(current, tmp_path / "cur.parquet")]
    for role, frame in (("train", reference), ("test", current)):
        p1 = 1 / (1 + np.exp(-frame["f2"].to_numpy()))
        args += [f"--{role}-predictions-uri", write(_predictions(np.column_stack([1 - p1, p1])),
                                                    tmp_path / f"{role}-pred.parquet")]
    found = {}
    for name, threshold in (("low", 0.25), ("high", 0.7)):
        conditions = {"feature_drift": {"max_allowed_numeric_score": threshold,
                                        "max_allowed_categorical_score": threshold},
                      "prediction_drift": {"max_allowed_drift_score": threshold}}
        out_dir = tmp_path / name
        out_dir.mkdir()
        code, out, result = run_step(checks_python, out_dir, *args, "--drift-conditions", json.dumps(conditions))
        assert code == 0 and result is not None, out[-3000:]
        assert result["drift_conditions"] == conditions
        found[name] = result
    assert statuses(found["low"]) == {"feature_drift": "failed", "prediction_drift": "failed"}, found["low"]["checks"]
    assert statuses(found["high"]) == {"feature_drift": "passed", "prediction_drift": "passed"}, \
        found["high"]["checks"]
    drift = next(r for r in found["low"]["checks"] if r["name"] == "feature_drift")
    assert "f2" in drift["conditions"][0]["details"] and "0.25" in drift["conditions"][0]["name"]


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
    "unknown drift check": (["--suite", "drift", "--train-uri", "{train}", "--test-uri", "{test}",
                             "--drift-conditions", '{"label_drift": {"max_allowed_drift_score": 0.1}}'],
                            "unknown drift check 'label_drift' in --drift-conditions"),
    "unknown drift argument": (["--suite", "drift", "--train-uri", "{train}", "--test-uri", "{test}",
                                "--drift-conditions", '{"feature_drift": {"max_score": 0.1}}'],
                               "unknown argument 'max_score' of feature_drift's drift_score_less_than condition"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_a_clear_error_before_any_suite(checks_python: str, tmp_path: Path,
                                                               bad_inputs: dict[str, str], case: str) -> None:
    args, message = BAD[case]
    paths = {**bad_inputs, "missing": str(tmp_path / "nowhere.parquet")}
    code, out, result = run_step(checks_python, tmp_path, *[paths.get(a[1:-1], a) if a.startswith("{")
                                                             and a.endswith("}") else a for a in args])
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

    proc = subprocess.run([checks_python, "-c", CATALOG_PROBE], env={**os.environ, **step_env()},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, conditions in CHECKS.items():
        assert name in real, f"{name} is not a deepchecks check"
        assert sorted(conditions) == real[name], name


IMPORT_PROBE = """
import json, airflow_mlops, airflow_mlops.steps.checks, deepchecks.tabular, numpy, pandas, sklearn
print(json.dumps({"airflow_mlops": airflow_mlops.__file__, "sklearn": sklearn.__version__,
                  "numpy": numpy.__version__, "pandas": pandas.__version__, "sklearn_file": sklearn.__file__}))
"""


def test_a_wheel_install_site_packages_does_not_shadow_the_pinned_libraries(
        checks_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed from a wheel, the package lives in the Airflow env's site-packages, next to its own scikit-learn,
    numpy and pandas. The step must import the package from there and every library from the checks venv.

    No wheel install can be made in this editable checkout, so ``checks_env.PACKAGE_DIR`` (where the runtime finds
    the package) is pointed at a copy of it in a fake site-packages; the checks venv and deepchecks are real."""
    from airflow_mlops.operators.checks import ChecksOperator

    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE_DIR, site / "airflow_mlops", ignore=shutil.ignore_patterns("__pycache__"))
    for decoy in ("sklearn", "numpy", "pandas"):  # the Airflow env's versions: deepchecks fails with them
        (site / decoy).mkdir()
        (site / decoy / "__init__.py").write_text(f"raise ImportError('decoy {decoy} from the Airflow env')\n")
    monkeypatch.setattr(checks_env, "PACKAGE_DIR", site / "airflow_mlops")  # where a wheel install puts it
    monkeypatch.setenv("AIRFLOW_MLOPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(site))  # a worker PYTHONPATH with libraries must not leak through either

    # The env the local runtime gives the step: the worker's env, then the operator's step env on top.
    operator = ChecksOperator(task_id="checks", checks=["data_duplicates"], train_data_uri="unused")
    plan = SimpleNamespace(config=SimpleNamespace(artifact_root=str(tmp_path)), result_uri="r", output_uri="o")
    step_vars, _ = operator.step_env({}, plan, "local")  # type: ignore[arg-type]
    env = {**os.environ, **step_vars}
    assert [p.name for p in Path(env["PYTHONPATH"]).iterdir()] == ["airflow_mlops"]

    # Control: the folder above the package (the old PYTHONPATH) picks up the decoys.
    old = subprocess.run([checks_python, "-c", "import sklearn"], env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=60)
    assert old.returncode != 0 and "decoy sklearn" in old.stderr

    # The working directory is site-packages too: `python -m`/`-c` must not put it on sys.path.
    proc = subprocess.run([checks_python, "-c", IMPORT_PROBE], env=env, cwd=site, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(seen["airflow_mlops"]).resolve().parent == site / "airflow_mlops"
    assert seen["sklearn"] == "1.4.2" and seen["numpy"].startswith("1.26.") and seen["pandas"].startswith("2.2.")
    assert Path(seen["sklearn_file"]).resolve().is_relative_to(Path(checks_python).parent.parent.resolve())
