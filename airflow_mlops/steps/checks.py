"""Checks step: deepchecks suites or named checks on Parquet datasets and precomputed predictions.

Runs inside the pinned checks environment (a cached venv locally, the checks image on Kubernetes), never imports
Airflow, never loads a model: model checks read the predictions and probabilities the trainer wrote, so they work
for any framework. Every input problem is reported (exit ``EXIT_BAD_INPUT``) before any suite runs.

Usage::

    python -m airflow_mlops.steps.checks --suite data_integrity --suite train_test_validation \\
        --train-uri s3://…/train.parquet --test-uri s3://…/test.parquet --label target

Writes ``report.html`` and ``result.json`` under ``$MLOPS_OUTPUT_URI`` and the result record to
``$MLOPS_RESULT_URI``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.steps import artifacts, contract

#: Suites this step knows (``core.checks.SUITES`` holds what each needs; a unit test keeps the two equal).
SUITE_NAMES = ("data_integrity", "train_test_validation", "model_evaluation", "drift")
#: Checks that need a model object: never run here (the step consumes predictions, not models).
MODEL_ONLY = ("BoostingOverfit", "ModelInferenceTime")
PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
MAX_KEY_VALUES = 8
#: The drift suite's checks (deepchecks class names), each with a ``drift_score_less_than`` condition.
DRIFT_CHECKS = {"feature_drift": "FeatureDrift", "prediction_drift": "PredictionDrift"}


class BadInput(Exception):
    """The step's input is wrong: exit EXIT_BAD_INPUT, never retried."""


@dataclass
class ChecksConfig:
    """What to check and on which data."""

    suites: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    train_uri: str = ""
    test_uri: str = ""
    label: str | None = "target"
    cat_features: list[str] | None = None
    index_column: str | None = None
    datetime_column: str | None = None
    train_predictions_uri: str = ""
    test_predictions_uri: str = ""
    feature_importance_uri: str = ""
    #: drift check -> arguments of its ``drift_score_less_than`` condition (the drift suite's thresholds).
    drift_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_samples: int | None = None
    seed: int = 42
    fail_on_warning: bool = False
    output_uri: str | None = None
    result_uri: str | None = None


@dataclass
class Inputs:
    """Loaded and validated data."""

    train: Any
    test: Any = None
    pred_train: Any = None
    pred_test: Any = None
    proba_train: Any = None
    proba_test: Any = None
    model_classes: list[Any] | None = None
    feature_importance: Any = None
    rows: dict[str, int] = field(default_factory=dict)


def snake(name: str) -> str:
    """``DataDuplicates`` -> ``data_duplicates``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel(name: str) -> str:
    """``data_duplicates`` -> ``DataDuplicates``."""
    return "".join(part.capitalize() for part in name.split("_"))


# -- validation ---------------------------------------------------------------------------------------


def check_names(cfg: ChecksConfig) -> None:
    """Suite, check and condition names against deepchecks itself; BadInput names the unknown one."""
    if not cfg.suites and not cfg.checks:
        raise BadInput(f"nothing to run: give --suite (one of {list(SUITE_NAMES)}) or --checks")
    for suite in cfg.suites:
        if suite not in SUITE_NAMES:
            raise BadInput(f"unknown suite {suite!r}: allowed {list(SUITE_NAMES)}")
    check_drift_conditions(cfg)
    if not cfg.checks:
        return
    from deepchecks.tabular import checks as dchecks

    for spec in cfg.checks:
        name = spec.get("name")
        cls = getattr(dchecks, camel(str(name)), None)
        if not isinstance(name, str) or cls is None or camel(name) in MODEL_ONLY:
            raise BadInput(f"unknown check {name!r}: see deepchecks.tabular.checks (snake case, e.g. data_duplicates)")
        allowed = sorted(m[len("add_condition_"):] for m in dir(cls) if m.startswith("add_condition_"))
        for cond in spec.get("conditions") or {}:
            if cond not in allowed:
                raise BadInput(f"unknown condition {cond!r} of check {name}: allowed {allowed}")


def check_drift_conditions(cfg: ChecksConfig) -> None:
    """The drift suite's condition arguments against deepchecks' own signatures; BadInput names the bad one."""
    if not cfg.drift_conditions:
        return
    if "drift" not in cfg.suites:
        raise BadInput("--drift-conditions applies to the drift suite only: add --suite drift")
    import inspect

    from deepchecks.tabular import checks as dchecks

    for name, kwargs in cfg.drift_conditions.items():
        if name not in DRIFT_CHECKS:
            raise BadInput(f"unknown drift check {name!r} in --drift-conditions: allowed {sorted(DRIFT_CHECKS)}")
        if not isinstance(kwargs, dict):
            raise BadInput(f"--drift-conditions[{name}] must be an object of condition arguments, got {kwargs!r}")
        method = getattr(dchecks, DRIFT_CHECKS[name]).add_condition_drift_score_less_than
        allowed = sorted(p for p in inspect.signature(method).parameters if p != "self")
        for arg, value in kwargs.items():
            if arg not in allowed:
                raise BadInput(f"unknown argument {arg!r} of {name}'s drift_score_less_than condition: allowed "
                               f"{allowed}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise BadInput(f"--drift-conditions[{name}][{arg}] must be a finite number >= 0, got {value!r}")


def _read(role: str, uri: str) -> Any:
    if not uri:
        raise BadInput(f"no {role} URI given")
    try:
        found = artifacts.exists(uri)
    except OSError as err:
        raise BadInput(f"{role} URI {uri} cannot be reached: {err}") from err
    if not found:
        raise BadInput(f"{role} URI not found: {uri}")
    try:
        frame = artifacts.read_parquet(uri)
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read the {role} {uri} as Parquet: {err}") from err
    if len(frame) == 0:
        raise BadInput(f"the {role} {uri} is empty (0 rows)")
    return frame


def _predictions(role: str, uri: str, rows: int) -> tuple[Any, Any, list[str]]:
    frame = _read(f"{role} predictions", uri)
    if len(frame) != rows:
        raise BadInput(f"{role} predictions have {len(frame)} rows but the {role} dataset has {rows}: "
                       f"predictions must be row-aligned with the dataset ({uri})")
    if "y_pred" not in frame.columns:
        raise BadInput(f"{role} predictions {uri} lack the column 'y_pred' (columns: {list(frame.columns)[:10]})")
    proba_cols = [c for c in frame.columns if str(c).startswith("proba_")]
    proba = frame[proba_cols].to_numpy("float64") if proba_cols else None
    return frame["y_pred"].to_numpy(), proba, [str(c)[len("proba_"):] for c in proba_cols]


def load_inputs(cfg: ChecksConfig, needs_test: bool, needs_predictions: bool, label_optional_in_test: bool) -> Inputs:
    """Read and validate everything before any suite runs; BadInput names the first problem."""
    import numpy as np
    import pandas as pd

    train = _read("train dataset", cfg.train_uri)
    test = _read("test dataset", cfg.test_uri) if (cfg.test_uri or needs_test) else None
    if cfg.label is not None and cfg.label not in train.columns:
        raise BadInput(f"label column {cfg.label!r} is missing from the train dataset "
                       f"(columns: {', '.join(map(str, list(train.columns)[:12]))})")
    if test is not None:
        test_has_label = cfg.label is None or cfg.label in test.columns
        if not test_has_label and not label_optional_in_test:
            raise BadInput(f"label column {cfg.label!r} is missing from the test dataset "
                           f"(columns: {', '.join(map(str, list(test.columns)[:12]))})")
        features_train = [c for c in train.columns if c != cfg.label]
        features_test = [c for c in test.columns if c != cfg.label]
        if features_train != features_test:
            only_train = [c for c in features_train if c not in set(features_test)]
            only_test = [c for c in features_test if c not in set(features_train)]
            detail = (f"only in train: {only_train}, only in test: {only_test}" if only_train or only_test
                      else "same columns in a different order")
            raise BadInput(f"train and test datasets have mismatched columns ({detail})")
    for what, cols in (("categorical feature", cfg.cat_features or []),
                       ("index column", [cfg.index_column] if cfg.index_column else []),
                       ("datetime column", [cfg.datetime_column] if cfg.datetime_column else [])):
        for col in cols:
            if col not in train.columns:
                raise BadInput(f"{what} {col!r} is not a column of the train dataset")
    inputs = Inputs(train=train, test=test, rows={"train": len(train), **({"test": len(test)} if test is not None
                                                                          else {})})
    if cfg.train_predictions_uri or cfg.test_predictions_uri or needs_predictions:
        inputs.pred_train, inputs.proba_train, classes = _predictions("train", cfg.train_predictions_uri, len(train))
        if test is not None:
            inputs.pred_test, inputs.proba_test, test_classes = _predictions("test", cfg.test_predictions_uri,
                                                                               len(test))
            if test_classes != classes:
                raise BadInput(f"train and test predictions have different probability columns: {classes} vs "
                               f"{test_classes}")
        if classes:
            labels = train[cfg.label] if cfg.label is not None else pd.Series(inputs.pred_train)
            try:
                inputs.model_classes = list(np.asarray(classes).astype(labels.dtype))
            except (TypeError, ValueError):
                inputs.model_classes = classes
    if cfg.feature_importance_uri:
        raw = artifacts.read_json(cfg.feature_importance_uri) if artifacts.exists(cfg.feature_importance_uri) \
            else None
        if not isinstance(raw, dict):
            raise BadInput(f"feature importance {cfg.feature_importance_uri} not found or not a JSON object "
                           "{feature: importance}")
        features = [c for c in train.columns if c not in (cfg.label, cfg.index_column, cfg.datetime_column)]
        unknown = sorted(set(raw) - set(features))
        if unknown:
            raise BadInput(f"feature importance names columns that are not features: {unknown}")
        inputs.feature_importance = pd.Series({f: float(raw.get(f, 0.0)) for f in features})
    return inputs


def sample(inputs: Inputs, n_samples: int | None, seed: int) -> dict[str, int]:
    """Down-sample each dataset (and its predictions, row-aligned) to ``n_samples`` rows with a fixed seed."""
    import numpy as np

    sampled: dict[str, int] = {}
    if not n_samples:
        return sampled
    rng = np.random.default_rng(seed)
    for role in ("train", "test"):
        frame = getattr(inputs, role)
        if frame is None or len(frame) <= n_samples:
            continue
        idx = np.sort(rng.choice(len(frame), size=n_samples, replace=False))
        setattr(inputs, role, frame.iloc[idx].reset_index(drop=True))
        for attr in (f"pred_{role}", f"proba_{role}"):
            value = getattr(inputs, attr)
            if value is not None:
                setattr(inputs, attr, value[idx])
        sampled[role] = n_samples
    return sampled


# -- running ------------------------------------------------------------------------------------------


def build_suite(cfg: ChecksConfig, with_predictions: bool) -> Any:
    """One deepchecks Suite holding the named suites' checks and the named checks (with their conditions)."""
    from deepchecks.tabular import Suite
    from deepchecks.tabular import checks as dchecks
    from deepchecks.tabular import suites as dsuites

    members: list[Any] = []
    for name in cfg.suites:
        if name == "drift":
            # deepchecks' default thresholds unless the caller set them (--drift-conditions).
            members.append(dchecks.FeatureDrift().add_condition_drift_score_less_than(
                **cfg.drift_conditions.get("feature_drift", {})))
            if with_predictions:
                members.append(dchecks.PredictionDrift().add_condition_drift_score_less_than(
                    **cfg.drift_conditions.get("prediction_drift", {})))
            elif "prediction_drift" in cfg.drift_conditions:
                print("no predictions given: prediction drift (and its threshold) does not apply")
        else:
            members.extend(getattr(dsuites, name)().checks.values())
    defaults = {type(c).__name__: c for s in ("data_integrity", "train_test_validation", "model_evaluation")
                for c in getattr(dsuites, s)().checks.values()}
    for spec in cfg.checks:
        cls_name = camel(spec["name"])
        check = getattr(dchecks, cls_name)(**(spec.get("params") or {}))
        conditions = spec.get("conditions")
        if conditions is not None:  # explicit: these conditions only ({} = none, the check just reports)
            for cond, kwargs in conditions.items():
                getattr(check, f"add_condition_{cond}")(**(kwargs or {}))
        elif cls_name in defaults:
            # The default suites' conditions for this check: deepchecks keeps them as (name, partial) records
            # independent of the check's parameters, so they carry over to an instance with other params.
            check._conditions = dict(defaults[cls_name]._conditions)
            check._conditions_index = defaults[cls_name]._conditions_index
        members = [m for m in members if type(m).__name__ != cls_name]
        members.append(check)
    unique: dict[str, Any] = {}
    for member in members:  # two suites may share a check (prediction_drift): run it once
        unique.setdefault(type(member).__name__, member)
    members = list(unique.values())
    dropped = [type(m).__name__ for m in members if type(m).__name__ in MODEL_ONLY]
    if dropped:
        print(f"skipping checks that need a model object (this step consumes predictions): {', '.join(dropped)}")
    members = [m for m in members if type(m).__name__ not in MODEL_ONLY]
    title = " + ".join(cfg.suites + [c["name"] for c in cfg.checks])
    return Suite(f"airflow-mlops checks: {title}", *members)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)[:80]
    return None if math.isnan(number) or math.isinf(number) else round(number, 6)


def key_values(result: Any) -> dict[str, Any]:
    """A few scalar values that say what the check measured (deepchecks' reduce_output, else a flat value)."""
    reduced: Any = None
    try:
        reduced = result.reduce_output()
    except Exception:  # checks without a reduction raise NotImplementedError or a data-specific error
        reduced = None
    value = result.value
    if reduced is None and hasattr(value, "columns") and {"Metric", "Value"} <= set(value.columns):
        # Performance tables (train_test_performance, single_dataset_performance): mean per dataset and metric.
        keys = [c for c in ("Dataset", "Metric") if c in value.columns]
        reduced = {" ".join(map(str, k if isinstance(k, tuple) else (k,))): v
                   for k, v in value.groupby(keys)["Value"].mean().items()}
    if reduced is None:
        reduced = value if isinstance(value, dict) else {"value": value}
    out: dict[str, Any] = {}
    for key, value in dict(reduced).items():
        if isinstance(value, (dict, list, tuple)) or getattr(value, "shape", ()) != ():
            continue
        out[str(key)] = _jsonable(value)
        if len(out) >= MAX_KEY_VALUES:
            break
    return out


def record(result: Any, fail_categories: tuple[str, ...] = ("FAIL", "ERROR")) -> dict[str, Any]:
    """The JSON record of one deepchecks CheckResult or CheckFailure."""
    from deepchecks.core.check_result import CheckFailure

    check = result.check
    header = str(result.get_header())
    dataset = "test" if header.endswith("- Test Dataset") else "train" if header.endswith("- Train Dataset") else None
    base: dict[str, Any] = {"name": snake(type(check).__name__), "header": header, "dataset": dataset}
    if isinstance(result, CheckFailure):
        return {**base, "status": NOT_RUN, "error": str(result.exception).splitlines()[0][:300],
                "conditions": [], "key_values": {}}
    conditions = [{"name": c.name, "category": c.category.name, "details": str(c.details)}
                  for c in result.conditions_results]
    failed = any(c["category"] in fail_categories for c in conditions)
    return {**base, "status": FAILED if failed else PASSED, "conditions": conditions, "key_values": key_values(result)}


def run_checks(cfg: ChecksConfig) -> dict[str, Any]:
    """Validate, sample, run one suite, write the HTML report and the JSON result; return the result."""
    began = time.perf_counter()
    check_names(cfg)
    needs_test = any(s != "data_integrity" for s in cfg.suites)
    needs_predictions = "model_evaluation" in cfg.suites
    inputs = load_inputs(cfg, needs_test, needs_predictions, label_optional_in_test="drift" in cfg.suites)
    sampled = sample(inputs, cfg.n_samples, cfg.seed)
    loaded = time.perf_counter()
    import logging

    from deepchecks import set_verbosity
    from deepchecks.tabular import Dataset

    # Progress bars (tqdm, carriage returns) are off at WARNING; the step prints its own progress lines.
    set_verbosity(logging.WARNING)

    def dataset(frame: Any) -> Any:
        label = cfg.label if cfg.label is not None and cfg.label in frame.columns else None
        return Dataset(frame, label=label, cat_features=cfg.cat_features, index_name=cfg.index_column,
                       datetime_name=cfg.datetime_column)

    train_ds = dataset(inputs.train)
    test_ds = dataset(inputs.test) if inputs.test is not None else None
    suite = build_suite(cfg, with_predictions=inputs.pred_train is not None)
    shown = ", ".join(f"{k} {v} rows" for k, v in inputs.rows.items())
    print(f"running {len(suite.checks)} checks ({' + '.join(cfg.suites + [c['name'] for c in cfg.checks])}) on "
          f"{shown}" + (f", sampled to {sampled}" if sampled else ""))
    started = time.perf_counter()  # deepchecks imported, datasets and suite built: suite.run() alone from here
    result = suite.run(train_dataset=train_ds, test_dataset=test_ds, feature_importance=inputs.feature_importance,
                       y_pred_train=inputs.pred_train, y_pred_test=inputs.pred_test,
                       y_proba_train=inputs.proba_train, y_proba_test=inputs.proba_test,
                       model_classes=inputs.model_classes)
    ran = time.perf_counter()
    fail_categories = ("FAIL", "ERROR", "WARN") if cfg.fail_on_warning else ("FAIL", "ERROR")
    records = [record(r, fail_categories) for r in result.results]
    print(f"checks done in {ran - started:.1f}s: {sum(r['status'] == PASSED for r in records)} passed, "
          f"{sum(r['status'] == FAILED for r in records)} failed, {sum(r['status'] == NOT_RUN for r in records)} "
          "not run")
    out: dict[str, Any] = {
        "status": "ok", "suites": cfg.suites, "checks_requested": [c["name"] for c in cfg.checks],
        "checks": records, "fail_on_warning": cfg.fail_on_warning, "rows": inputs.rows, "sampled": sampled,
        "n_samples": cfg.n_samples, "seed": cfg.seed, "drift_conditions": cfg.drift_conditions,
        "passed": not any(r["status"] == FAILED for r in records),
        "failed_checks": sorted({r["name"] for r in records if r["status"] == FAILED}),
    }
    # load: read, validate, sample; setup: import deepchecks, build datasets and suite; run: suite.run() alone.
    timings = {"load": round(loaded - began, 3), "setup": round(started - loaded, 3), "run": round(ran - started, 3)}
    if cfg.output_uri:
        base = cfg.output_uri.rstrip("/")
        out["report_uri"], out["json_uri"] = f"{base}/report.html", f"{base}/result.json"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "report.html")
            result.save_as_html(path, as_widget=False)
            with open(path, "rb") as fh:
                artifacts.write_bytes(out["report_uri"], fh.read())
        out["seconds"] = {**timings, "report": round(time.perf_counter() - ran, 3)}
        artifacts.write_json(out["json_uri"], out)
        print(f"report: {out['report_uri']}\nresult: {out['json_uri']}")
    else:
        out["seconds"] = timings
    return out


# -- entry point --------------------------------------------------------------------------------------


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> ChecksConfig:
    """Build the config from args and the orchestrator's env contract."""
    env = os.environ
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", action="append", default=[], help="suite name; repeat for several")
    parser.add_argument("--checks", default="", help="JSON list of {name, params, conditions}")
    parser.add_argument("--train-uri", default=env.get(contract.TRAIN_DATA_URI, ""))
    parser.add_argument("--test-uri", default=env.get(contract.TEST_DATA_URI, ""))
    parser.add_argument("--label", default=env.get(contract.LABEL_COLUMN, "target"),
                        help="label column; empty: no label")
    parser.add_argument("--cat-features", default=None, help="comma-separated; omit to let deepchecks infer")
    parser.add_argument("--index-column", default=None)
    parser.add_argument("--datetime-column", default=None)
    parser.add_argument("--train-predictions-uri", default="")
    parser.add_argument("--test-predictions-uri", default="")
    parser.add_argument("--feature-importance-uri", default="")
    parser.add_argument("--drift-conditions", default="",
                        help='JSON {"feature_drift"|"prediction_drift": {drift_score_less_than arguments}}')
    parser.add_argument("--n-samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fail-on-warning", action="store_true",
                        help="a condition in deepchecks' WARN category fails its check too")
    args = parser.parse_args(argv)
    try:
        checks = json.loads(args.checks) if args.checks else []
    except ValueError as err:
        raise BadInput(f"--checks is not JSON: {err}") from err
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise BadInput("--checks must be a JSON list of {name, params, conditions} objects")
    try:
        drift_conditions = json.loads(args.drift_conditions) if args.drift_conditions else {}
    except ValueError as err:
        raise BadInput(f"--drift-conditions is not JSON: {err}") from err
    if not isinstance(drift_conditions, dict):
        raise BadInput("--drift-conditions must be a JSON object {drift check: {condition arguments}}")
    if args.n_samples is not None and args.n_samples < 1:
        raise BadInput(f"--n-samples must be >= 1, got {args.n_samples}")
    suites = [s for value in args.suite for s in _csv(value) or []]
    return ChecksConfig(
        suites=suites, checks=checks, train_uri=args.train_uri, test_uri=args.test_uri, label=args.label or None,
        cat_features=_csv(args.cat_features), index_column=args.index_column or None,
        datetime_column=args.datetime_column or None, train_predictions_uri=args.train_predictions_uri,
        test_predictions_uri=args.test_predictions_uri, feature_importance_uri=args.feature_importance_uri,
        drift_conditions=drift_conditions, n_samples=args.n_samples, seed=args.seed,
        fail_on_warning=args.fail_on_warning,
        output_uri=env.get(contract.OUTPUT_URI),
        result_uri=env.get(contract.RESULT_URI),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when the checks ran (whatever they found), EXIT_BAD_INPUT on bad input, 1 on errors."""
    # deepchecks' own dependencies warn about sklearn/pandas deprecations: noise in a task log.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        cfg = parse_args(argv)
        result = run_checks(cfg)
    except BadInput as err:
        print(f"error: bad input: {err}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    if cfg.result_uri:
        artifacts.write_json(cfg.result_uri, result)
    return 0


def _stop_worker_processes() -> None:
    """Stop joblib's reusable loky workers (deepchecks' PPS and drift checks start them).

    They inherit the step's stdout; left running, the orchestrator reading that pipe never sees it close.
    """
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def _exit(code: int) -> None:
    """Exit without interpreter teardown, after stopping worker processes and flushing output.

    With pyarrow 19 (the lock's), a process that read Parquet intermittently aborts in teardown (std::terminate
    from a pool thread), turning a finished step's exit code into SIGABRT.
    """
    _stop_worker_processes()
    atexit._run_exitfuncs()  # joblib removes its memmapping folders here
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
