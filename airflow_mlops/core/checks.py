"""Data and model checks, the pure part: suite, check and condition names, gate modes, the verdict, the table.

No Airflow, no deepchecks: the operator validates names here at DAG parse time, and turns the step's result
JSON into a verdict and a log table. The catalog mirrors deepchecks 0.19.1 (``deepchecks.tabular.checks``);
a test in the pinned checks venv asserts that it still does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from airflow_mlops.core.errors import SpecError

#: check name (snake case of the deepchecks class) -> its condition names (``add_condition_<name>``).
CHECKS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "boosting_overfit": ("test_score_percent_decline_less_than",),
    "calibration_score": (),
    "class_imbalance": ("class_ratio_less_than",),
    "columns_info": (),
    "conflicting_labels": ("ratio_of_conflicting_labels_less_or_equal",),
    "confusion_matrix_report": ("misclassified_samples_lower_than_condition",),
    "data_duplicates": ("ratio_less_or_equal",),
    "datasets_size_comparison": ("test_size_greater_or_equal", "test_train_size_ratio_greater_than",
                                 "train_dataset_greater_or_equal_test"),
    "date_train_test_leakage_duplicates": ("leakage_ratio_less_or_equal",),
    "date_train_test_leakage_overlap": ("leakage_ratio_less_or_equal",),
    "feature_drift": ("drift_score_less_than",),
    "feature_feature_correlation": ("max_number_of_pairs_above_threshold",),
    "feature_label_correlation": ("feature_pps_less_than",),
    "feature_label_correlation_change": ("feature_pps_difference_less_than", "feature_pps_in_train_less_than"),
    "identifier_label_correlation": ("pps_less_or_equal",),
    "index_train_test_leakage": ("ratio_less_or_equal",),
    "is_single_value": ("not_single_value",),
    "label_drift": ("drift_score_less_than",),
    "mixed_data_types": ("rare_type_ratio_not_in_range",),
    "mixed_nulls": ("different_nulls_less_equal_to",),
    "multivariate_drift": ("overall_drift_value_less_than",),
    "new_category_train_test": ("new_categories_less_or_equal", "new_category_ratio_less_or_equal"),
    "new_label_train_test": ("new_label_ratio_less_or_equal", "new_labels_number_less_or_equal"),
    "outlier_sample_detection": ("no_outliers", "outlier_ratio_less_or_equal"),
    "percent_of_nulls": ("percent_of_nulls_not_greater_than",),
    "prediction_drift": ("drift_score_less_than",),
    "regression_error_distribution": ("kurtosis_greater_than", "systematic_error_ratio_to_rmse_less_than"),
    "roc_report": ("auc_greater_than",),
    "segment_performance": (),
    "simple_model_comparison": ("gain_greater_than",),
    "single_dataset_performance": ("greater_than",),
    "special_characters": ("ratio_of_special_characters_less_or_equal",),
    "string_length_out_of_bounds": ("number_of_outliers_less_or_equal", "ratio_of_outliers_less_or_equal"),
    "string_mismatch": ("no_variants", "number_variants_less_or_equal", "ratio_variants_less_or_equal"),
    "string_mismatch_comparison": ("no_new_variants", "ratio_new_variants_less_or_equal"),
    "train_test_performance": ("class_performance_imbalance_ratio_less_than", "test_performance_greater_than",
                               "train_test_relative_degradation_less_than"),
    "train_test_samples_mix": ("duplicates_ratio_less_or_equal",),
    "weak_segments_performance": ("segments_relative_performance_greater_than",),
})

#: Checks that need a model object; the step never loads one (it consumes precomputed predictions).
MODEL_ONLY_CHECKS = ("boosting_overfit", "model_inference_time")

#: suite name -> what it needs: ``test`` (a second dataset), ``predictions`` (model outputs for both sets).
SUITES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "data_integrity": (),
    "train_test_validation": ("test",),
    "model_evaluation": ("test", "predictions"),
    # Feature drift and prediction drift, training data (train) vs recent inference data (test).
    "drift": ("test",),
})

GATE_MODES = ("fail", "skip_downstream", "warn")

# Per-check statuses in the step's result.
PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
# deepchecks condition categories that fail a check; WARN is reported but does not gate.
FAIL_CATEGORIES = ("FAIL", "ERROR")


def check_gate(mode: str) -> str:
    """Return ``mode`` if it is a gate mode; raise SpecError listing them otherwise."""
    if mode not in GATE_MODES:
        raise SpecError("gate", f"one of {list(GATE_MODES)}", mode)
    return mode


def check_suites(suites: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise one suite name or a list of them; raise SpecError naming the unknown one."""
    names = (suites,) if isinstance(suites, str) else tuple(suites)
    if not all(isinstance(n, str) for n in names):
        raise SpecError("suite", f"a name or list of names from {sorted(SUITES)}", suites)
    for name in names:
        if name not in SUITES:
            raise SpecError("suite", f"one of {sorted(SUITES)}", name)
    if len(set(names)) != len(names):
        raise SpecError("suite", "distinct suite names", list(names))
    return names


@dataclass(frozen=True)
class CheckSpec:
    """One named check with the conditions to apply.

    :param name: check name (snake case of the deepchecks class, e.g. ``data_duplicates``).
    :param params: keyword arguments for the check's constructor (e.g. ``{"n_samples": 5000}``).
    :param conditions: condition name -> its keyword arguments; None: the default suites' conditions for this
        check; ``{}``: none (the check only reports).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    conditions: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.name not in CHECKS:
            raise SpecError("checks[].name", f"one of {sorted(CHECKS)}", self.name)
        if not isinstance(self.params, Mapping):
            raise SpecError(f"checks[{self.name}].params", "a dict of constructor arguments", self.params)
        if self.conditions is None:
            object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
            return
        if not isinstance(self.conditions, Mapping):
            raise SpecError(f"checks[{self.name}].conditions", "a dict: condition name -> arguments",
                            self.conditions)
        allowed = CHECKS[self.name]
        for cond, kwargs in self.conditions.items():
            if cond not in allowed:
                raise SpecError(f"checks[{self.name}].conditions", f"one of {list(allowed)}" if allowed
                                else "none: this check has no conditions", cond)
            if not isinstance(kwargs, Mapping):
                raise SpecError(f"checks[{self.name}].conditions[{cond}]", "a dict of condition arguments", kwargs)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "conditions", MappingProxyType({k: dict(v) for k, v in self.conditions.items()}))

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | CheckSpec) -> CheckSpec:
        """From a name, a dict ``{name, params?, conditions?}`` or a CheckSpec."""
        if isinstance(value, CheckSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, Mapping) and "name" in value:
            extra = set(value) - {"name", "params", "conditions"}
            if extra:
                raise SpecError("checks[]", "keys name, params, conditions", sorted(extra))
            return cls(name=value["name"], params=value.get("params") or {}, conditions=value.get("conditions"))
        raise SpecError("checks[]", "a check name or a dict {name, params, conditions}", value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as the step reads it."""
        conditions = None if self.conditions is None else {k: dict(v) for k, v in self.conditions.items()}
        return {"name": self.name, "params": dict(self.params), "conditions": conditions}


def parse_checks(value: Sequence[str | Mapping[str, Any] | CheckSpec] | str | None) -> tuple[CheckSpec, ...]:
    """Parse a list of checks (or its JSON text); raise SpecError naming the bad check or condition."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise SpecError("checks", "a list of checks (or its JSON)", value) from err
    if not isinstance(value, (list, tuple)):
        raise SpecError("checks", "a list of checks", value)
    specs = tuple(CheckSpec.parse(v) for v in value)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError("checks", "each check at most once", names)
    return specs


#: Checks that compare two datasets (need ``test``) and checks that need model predictions.
TWO_DATASET_CHECKS = frozenset({
    "datasets_size_comparison", "date_train_test_leakage_duplicates", "date_train_test_leakage_overlap",
    "feature_drift", "feature_label_correlation_change", "index_train_test_leakage", "label_drift",
    "multivariate_drift", "new_category_train_test", "new_label_train_test", "prediction_drift",
    "string_mismatch_comparison", "train_test_performance", "train_test_samples_mix", "simple_model_comparison",
})
PREDICTION_CHECKS = frozenset({
    "calibration_score", "confusion_matrix_report", "prediction_drift", "regression_error_distribution",
    "roc_report", "segment_performance", "simple_model_comparison", "single_dataset_performance",
    "train_test_performance", "weak_segments_performance",
})


def needs(suites: Sequence[str], checks: Sequence[CheckSpec]) -> set[str]:
    """What a run of these suites/checks needs besides the train dataset: ``test``, ``predictions``."""
    out: set[str] = set()
    for suite in suites:
        out.update(SUITES[suite])
    for check in checks:
        if check.name in TWO_DATASET_CHECKS:
            out.add("test")
        if check.name in PREDICTION_CHECKS:
            out.add("predictions")
    return out


# -- drift thresholds -----------------------------------------------------------------------------------

#: The condition the ``drift`` suite puts on each of its checks.
DRIFT_CONDITION = "drift_score_less_than"
#: drift check -> the arguments of its ``drift_score_less_than`` condition that one threshold sets (a feature
#: threshold bounds both the numeric (Kolmogorov-Smirnov) and the categorical (Cramer's V) drift scores).
DRIFT_THRESHOLD_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "feature_drift": ("max_allowed_numeric_score", "max_allowed_categorical_score"),
    "prediction_drift": ("max_allowed_drift_score",),
})
#: deepchecks 0.19.1's defaults for those conditions, which apply when no threshold is given.
DEFAULT_DRIFT_THRESHOLDS: Mapping[str, float] = MappingProxyType({"feature_drift": 0.2, "prediction_drift": 0.15})


def drift_threshold(check: str, value: Any) -> float | None:
    """One drift threshold: a drift score in (0, 1], or None/"" for deepchecks' default; a number in text (a
    rendered template) is accepted. SpecError otherwise.

    deepchecks fails feature drift for a feature whose score is at or above it, prediction drift above it.
    """
    field_name = f"{check}_threshold"
    if check not in DRIFT_THRESHOLD_ARGS:
        raise SpecError("drift thresholds", f"thresholds for {sorted(DRIFT_THRESHOLD_ARGS)}", check)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    allowed = "a drift score threshold: a number > 0 and <= 1, or empty for deepchecks' default " \
              f"({DEFAULT_DRIFT_THRESHOLDS[check]})"
    if isinstance(value, bool):
        raise SpecError(field_name, allowed, value)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise SpecError(field_name, allowed, value) from None
    if not (0 < number <= 1):  # NaN fails this too
        raise SpecError(field_name, allowed, value)
    return number


def drift_conditions(thresholds: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{check: threshold}`` -> ``{check: {condition argument: threshold}}`` for the step's drift suite.

    Checks without a threshold (None or "") keep deepchecks' default condition and are left out.
    """
    out: dict[str, dict[str, float]] = {}
    for check, value in thresholds.items():
        number = drift_threshold(check, value)
        if number is not None:
            out[check] = {arg: number for arg in DRIFT_THRESHOLD_ARGS[check]}
    return out


# -- verdict -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The gate's reading of a checks result.

    :param passed: at least one check ran and none failed.
    :param failed_checks: names of failed checks.
    :param failed_conditions: ``check: condition (details)`` for each failed condition.
    :param warnings: warning conditions and checks that could not run.
    :param not_run: ``check: error`` for each check that could not run (deepchecks turns a crash into "not run").
    :param nothing_ran: checks were requested and none of them ran: there is no verdict at all. Not a finding
        for a gate to weigh: the operator fails the task whatever its gate mode (see :func:`nothing_ran_message`).
    """

    passed: bool
    failed_checks: tuple[str, ...]
    failed_conditions: tuple[str, ...]
    warnings: tuple[str, ...]
    not_run: tuple[str, ...] = ()
    nothing_ran: bool = False


def label(check: Mapping[str, Any]) -> str:
    """A check's name, with the dataset it ran on when it ran on one of two (``data_duplicates [test]``)."""
    dataset = check.get("dataset")
    return f"{check.get('name')} [{dataset}]" if dataset else str(check.get("name"))


def verdict(checks: Sequence[Mapping[str, Any]], fail_on_warning: bool = False) -> Verdict:
    """Read the step's per-check records (``name``, ``status``, ``conditions``, ``error``).

    :param fail_on_warning: count conditions in deepchecks' WARN category as failures (as the step did).
    """
    fail_categories = (*FAIL_CATEGORIES, "WARN") if fail_on_warning else FAIL_CATEGORIES
    failed, failed_conditions, warnings, not_run = [], [], [], []
    for check in checks:
        name = label(check)
        status = check.get("status")
        for cond in check.get("conditions") or ():
            details = str(cond.get("details") or "no details")
            details = details if len(details) <= 240 else details[:237] + "..."
            text = f"{name}: {cond.get('name')} ({details})"
            if cond.get("category") in fail_categories:
                failed_conditions.append(text)
            elif cond.get("category") == "WARN":
                warnings.append(text)
        if status == FAILED and str(check.get("name")) not in failed:
            failed.append(str(check.get("name")))
        elif status == NOT_RUN:
            not_run.append(f"{name}: {check.get('error') or 'no reason given'}")
            warnings.append(f"{name}: not run ({check.get('error') or 'no reason given'})")
    # deepchecks turns a crash inside a check into "not run": when nothing ran there is no verdict, pass or fail.
    nothing_ran = bool(checks) and len(not_run) == len(checks)
    return Verdict(passed=not failed and not nothing_ran, failed_checks=tuple(failed),
                   failed_conditions=tuple(failed_conditions), warnings=tuple(warnings), not_run=tuple(not_run),
                   nothing_ran=nothing_ran)


def nothing_ran_message(seen: Verdict) -> str:
    """Why a run without any check that ran is an error, quoting each check's error (distinct ones once)."""
    errors: dict[str, list[str]] = {}
    for line in seen.not_run:
        name, _, error = line.partition(": ")
        errors.setdefault(error, []).append(name)
    quoted = "; ".join(f"{', '.join(names)}: \"{error}\"" for error, names in errors.items())
    return (f"none of the {len(seen.not_run)} checks could run, so there is no verdict (an error, not a check "
            f"result; the gate mode does not apply): {quoted}")


# -- table ---------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def key_values_text(values: Mapping[str, Any] | None, limit: int = 3, width: int = 60) -> str:
    """``k=v, k=v`` of the first ``limit`` key values, cut at ``width`` characters."""
    if not values:
        return "-"
    items = list(values.items())
    text = ", ".join(f"{k}={_short(v)}" for k, v in items[:limit])
    if len(items) > limit:
        text += f" (+{len(items) - limit})"
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(checks: Sequence[Mapping[str, Any]], fail_on_warning: bool = False) -> str:
    """A fixed-width table: check | status | conditions | key values, one line per check."""
    fail_categories = (*FAIL_CATEGORIES, "WARN") if fail_on_warning else FAIL_CATEGORIES
    rows = [("check", "status", "conditions", "key values")]
    for check in checks:
        conds = check.get("conditions") or ()
        failing = [c for c in conds if c.get("category") in fail_categories]
        if check.get("status") == NOT_RUN:
            cond_text = "-"
        elif not conds:
            cond_text = "none"
        else:
            cond_text = f"{len(conds) - len(failing)}/{len(conds)} ok"
            if failing:
                first = str(failing[0].get("name"))
                cond_text += f"; FAIL: {first if len(first) <= 48 else first[:45] + '...'}"
        status = str(check.get("status", "?"))
        values = key_values_text(check.get("key_values")) if status != NOT_RUN else \
            str(check.get("error") or "-")[:60]
        rows.append((label(check), status.upper() if status == FAILED else status, cond_text, values))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in rows]
    lines.insert(1, "-+-".join(["-" * w for w in widths] + ["-" * 10]))
    return "\n".join(lines)


def report_url(uri: str) -> str:
    """A browser URL for a report: ``file://`` for a local path, the S3 console for ``s3://``."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    if uri.startswith("file://") or "://" in uri:
        return uri
    return f"file://{uri}"
