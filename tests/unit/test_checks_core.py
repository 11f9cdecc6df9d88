"""The pure checks core: names validated at parse time, gate modes, the verdict, the log table, report URLs."""

from __future__ import annotations

import pytest

from airflow_mlops.core.checks import (
    CHECKS,
    DEFAULT_DRIFT_THRESHOLDS,
    GATE_MODES,
    SUITES,
    CheckSpec,
    check_gate,
    check_suites,
    drift_conditions,
    drift_threshold,
    format_table,
    needs,
    nothing_ran_message,
    parse_checks,
    report_url,
    verdict,
)
from airflow_mlops.core.errors import SpecError
from airflow_mlops.steps import checks as step


def test_suites_known_to_core_are_the_steps() -> None:
    assert tuple(SUITES) == step.SUITE_NAMES


def test_check_suites_accepts_names_and_lists() -> None:
    assert check_suites("data_integrity") == ("data_integrity",)
    assert check_suites(["data_integrity", "drift"]) == ("data_integrity", "drift")


@pytest.mark.parametrize("bad", ["data_integrety", ["drift", "drift"], [1]])
def test_check_suites_rejects_unknown_or_repeated(bad) -> None:
    with pytest.raises(SpecError) as exc:
        check_suites(bad)
    assert exc.value.field == "suite"


def test_gate_modes() -> None:
    assert GATE_MODES == ("fail", "skip_downstream", "warn")
    assert check_gate("warn") == "warn"
    with pytest.raises(SpecError, match="skip_downstream"):
        check_gate("skip")


def test_check_spec_validates_check_and_condition_names() -> None:
    spec = CheckSpec.parse({"name": "data_duplicates", "conditions": {"ratio_less_or_equal": {"max_ratio": 0}}})
    assert spec.to_dict() == {"name": "data_duplicates", "params": {},
                              "conditions": {"ratio_less_or_equal": {"max_ratio": 0}}}
    assert CheckSpec.parse("mixed_nulls").conditions is None  # default conditions
    assert CheckSpec.parse({"name": "mixed_nulls", "conditions": {}}).to_dict()["conditions"] == {}
    with pytest.raises(SpecError, match="data_duplicates") as exc:
        CheckSpec.parse("data_duplicate")
    assert exc.value.field == "checks[].name"
    with pytest.raises(SpecError, match="ratio_less_or_equal") as exc:
        CheckSpec.parse({"name": "data_duplicates", "conditions": {"ratio_below": {}}})
    assert exc.value.field == "checks[data_duplicates].conditions"
    with pytest.raises(SpecError, match="none: this check has no conditions"):
        CheckSpec.parse({"name": "calibration_score", "conditions": {"anything": {}}})
    with pytest.raises(SpecError):
        CheckSpec.parse({"name": "data_duplicates", "threshold": 1})


def test_parse_checks_from_json_and_rejects_repeats() -> None:
    assert [c.name for c in parse_checks('["mixed_nulls", {"name": "feature_drift"}]')] == ["mixed_nulls",
                                                                                            "feature_drift"]
    with pytest.raises(SpecError, match="at most once"):
        parse_checks(["mixed_nulls", "mixed_nulls"])
    with pytest.raises(SpecError):
        parse_checks("{not json")


def test_needs() -> None:
    assert needs(["data_integrity"], ()) == set()
    assert needs(["model_evaluation"], ()) == {"test", "predictions"}
    assert needs([], parse_checks(["roc_report"])) == {"predictions"}
    assert needs([], parse_checks(["feature_drift"])) == {"test"}


def _record(name, status, *categories, dataset=None, key_values=None, error=None):
    conditions = [{"name": f"cond {i}", "category": c, "details": f"detail {i}"} for i, c in enumerate(categories)]
    return {"name": name, "status": status, "dataset": dataset, "conditions": conditions,
            "key_values": key_values or {}, "error": error}


RECORDS = [
    _record("data_duplicates", "failed", "FAIL", dataset="train", key_values={"value": 0.13}),
    _record("data_duplicates", "passed", "PASS", dataset="test", key_values={"value": 0.0}),
    _record("mixed_data_types", "passed", "WARN", dataset="train"),
    _record("identifier_label_correlation", "not run", error="Dataset does not contain an index"),
]


def test_verdict_lists_failed_checks_conditions_and_warnings() -> None:
    seen = verdict(RECORDS)
    assert not seen.passed
    assert seen.failed_checks == ("data_duplicates",)
    assert seen.failed_conditions == ("data_duplicates [train]: cond 0 (detail 0)",)
    assert seen.warnings == ("mixed_data_types [train]: cond 0 (detail 0)",
                             "identifier_label_correlation: not run (Dataset does not contain an index)")
    strict = verdict(RECORDS, fail_on_warning=True)
    assert "mixed_data_types [train]: cond 0 (detail 0)" in strict.failed_conditions
    assert verdict(RECORDS[1:]).passed


def test_a_run_where_no_check_ran_has_no_verdict() -> None:
    """deepchecks reports a check that crashed as not run: all of them not running is an error, not a pass and
    not a failed check (a drift monitor would read a failed check as drift)."""
    crashed = [{"name": "feature_drift", "status": "not run", "error": "KeyError: 'proba_0'"},
               {"name": "prediction_drift", "status": "not run", "error": "KeyError: 'proba_0'"}]
    seen = verdict(crashed)
    assert not seen.passed and seen.nothing_ran
    assert seen.failed_checks == () and seen.failed_conditions == ()  # nothing was found: no check to blame
    assert seen.not_run == ("feature_drift: KeyError: 'proba_0'", "prediction_drift: KeyError: 'proba_0'")
    message = nothing_ran_message(seen)
    assert "none of the 2 checks could run" in message and "the gate mode does not apply" in message
    assert "feature_drift, prediction_drift: \"KeyError: 'proba_0'\"" in message  # one error, quoted once
    assert verdict([]).passed and not verdict([]).nothing_ran  # nothing requested is not the same as nothing ran
    partly = verdict([*crashed, RECORDS[1]])  # one check ran: a verdict, the crashed ones are warnings
    assert partly.passed and not partly.nothing_ran and len(partly.not_run) == 2


def test_drift_thresholds_become_condition_arguments() -> None:
    assert drift_conditions({"feature_drift": 0.1, "prediction_drift": "0.3"}) == {
        "feature_drift": {"max_allowed_numeric_score": 0.1, "max_allowed_categorical_score": 0.1},
        "prediction_drift": {"max_allowed_drift_score": 0.3}}
    assert drift_conditions({"feature_drift": None, "prediction_drift": " "}) == {}  # deepchecks' defaults
    assert drift_threshold("feature_drift", 1) == 1.0
    assert DEFAULT_DRIFT_THRESHOLDS == {"feature_drift": 0.2, "prediction_drift": 0.15}


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "high", True, float("nan"), [0.1]])
def test_bad_drift_threshold_is_rejected_naming_it(bad) -> None:
    with pytest.raises(SpecError, match="a number > 0 and <= 1") as exc:
        drift_conditions({"prediction_drift": bad})
    assert exc.value.field == "prediction_drift_threshold"


def test_unknown_drift_check_is_rejected() -> None:
    with pytest.raises(SpecError, match="feature_drift") as exc:
        drift_conditions({"label_drift": 0.1})
    assert exc.value.got == "label_drift"


def test_table_has_one_line_per_check() -> None:
    table = format_table(RECORDS).splitlines()
    assert [c.strip() for c in table[0].split("|")] == ["check", "status", "conditions", "key values"]
    assert len(table) == 2 + len(RECORDS)
    assert "data_duplicates [train]" in table[2] and "FAILED" in table[2] and "value=0.13" in table[2]
    assert "0/1 ok; FAIL: cond 0" in table[2]
    assert "not run" in table[5] and "Dataset does not contain an index" in table[5]


def test_report_url() -> None:
    assert report_url("/a/b/report.html") == "file:///a/b/report.html"
    assert report_url("s3://bkt/p/report.html") == "https://s3.console.aws.amazon.com/s3/object/bkt?prefix=p/report.html"


def test_catalog_names_map_to_deepchecks_class_names() -> None:
    for name in CHECKS:
        assert step.snake(step.camel(name)) == name
