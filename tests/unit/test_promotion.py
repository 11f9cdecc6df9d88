"""PromotionPolicy validation and the decision, checked against a straightforward reference evaluation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.promotion import (
    AliasConflictError,
    Candidate,
    GuardMetric,
    MetricMissingError,
    PromotionPolicy,
    RegistryWait,
    decide,
)


def test_contradictory_and_invalid_policies_name_the_field() -> None:
    cases = [
        (dict(primary_metric=""), "PromotionPolicy.primary_metric"),
        (dict(primary_metric="acc", direction="up"), "PromotionPolicy.direction"),
        (dict(primary_metric="acc", min_improvement=-0.1), "PromotionPolicy.min_improvement"),
        (dict(primary_metric="acc", min_relative_improvement=math.nan), "PromotionPolicy.min_relative_improvement"),
        (dict(primary_metric="acc", combine="any", min_improvement=0.1), "PromotionPolicy.combine"),
        (dict(primary_metric="acc", no_champion="maybe"), "PromotionPolicy.no_champion"),
        (dict(primary_metric="acc", guards=(GuardMetric("acc", "minimize"),)), "PromotionPolicy.guards[0].direction"),
        (dict(primary_metric="acc", guards=(GuardMetric("f1"), GuardMetric("f1"))), "PromotionPolicy.guards[1].name"),
        (dict(primary_metric="acc", required_checks=("a", "a")), "PromotionPolicy.required_checks"),
    ]
    for kwargs, field in cases:
        with pytest.raises(SpecError) as err:
            PromotionPolicy(**kwargs)
        assert err.value.field == field, (kwargs, err.value)
    with pytest.raises(SpecError, match=r"GuardMetric.tolerance"):
        GuardMetric("loss", "minimize", -1)
    with pytest.raises(SpecError, match=r"PromotionPolicy: keys among .*\['primary'\]"):
        PromotionPolicy.from_mapping({"primary": "acc"})


def test_from_mapping_takes_dag_param_shapes() -> None:
    policy = PromotionPolicy.from_mapping({"primary_metric": "test_accuracy", "min_improvement": "0.01",
                                           "min_relative_improvement": "", "guards": [{"name": "test_f1",
                                                                                      "tolerance": 0.02}],
                                           "required_checks": ["model_checks"]})
    assert policy.min_improvement == 0.01 and policy.min_relative_improvement is None
    assert policy.guards == (GuardMetric("test_f1", "maximize", 0.02),)
    assert PromotionPolicy.from_mapping(policy.to_dict()) == policy


def test_missing_metric_names_it_and_lists_what_the_run_has() -> None:
    policy = PromotionPolicy("test_accuracy", guards=(GuardMetric("test_f1"),))
    with pytest.raises(MetricMissingError, match=r"'test_f1' is missing from the challenger run r1; the run has: "
                                                 r"test_accuracy, train_loss"):
        decide(policy, Candidate("2", {"test_accuracy": 0.9, "train_loss": 0.1}, "r1"), None)


def test_decision_reasons_and_tags() -> None:
    policy = PromotionPolicy("test_accuracy", min_improvement=0.01, guards=(GuardMetric("latency_ms", "minimize", 5),),
                             required_checks=("model_checks",))
    decision = decide(policy, Candidate("3", {"test_accuracy": 0.93, "latency_ms": 20}),
                      Candidate("2", {"test_accuracy": 0.90, "latency_ms": 12}), {"model_checks": True})
    assert not decision.promote
    assert decision.reasons[0].startswith("guard latency_ms 20 vs champion 12: regression +8")
    assert decision.to_tags()["mlops.decision"] == "reject"
    assert decision.primary["improvement"] == pytest.approx(0.03)


def test_no_champion_and_checks() -> None:
    policy = PromotionPolicy("acc", required_checks=("data_checks", "model_checks"), no_champion="promote")
    decision = decide(policy, Candidate("1", {"acc": 0.5}), None, {"data_checks": True})
    assert not decision.promote
    assert "required check model_checks has no verdict" in decision.reasons
    assert decide(policy, Candidate("1", {"acc": 0.5}), None, {"data_checks": True, "model_checks": True}).promote
    assert not decide(PromotionPolicy("acc", no_champion="reject"), Candidate("1", {"acc": 0.5}), None).promote


def test_registry_wait_describes_and_evaluates() -> None:
    wait = RegistryWait("clf", alias="champion", newer_than="2", required_tags={"mlops.decision": "promote"})
    assert wait.evaluate({"exists": False}) == (False, "model clf does not exist yet")
    assert wait.evaluate({"exists": True, "alias_version": None}) == (False, "clf@champion is unset")
    met, seen = wait.evaluate({"exists": True, "alias_version": "3", "alias_tags": {"mlops.decision": "reject"}})
    assert not met and seen == "clf@champion -> v3 with tags {'mlops.decision': 'reject'}"
    assert wait.evaluate({"exists": True, "alias_version": "3", "alias_tags": {"mlops.decision": "promote"}})[0]
    with pytest.raises(SpecError, match=r"RegistryWait\.required_tags"):
        RegistryWait("clf", required_tags={"a": "b"})
    with pytest.raises(SpecError, match=r"RegistryWait\.newer_than"):
        RegistryWait("clf", newer_than="latest")


def test_alias_conflict_message() -> None:
    err = AliasConflictError("clf", "champion", "2", "3")
    assert str(err).startswith("alias clf@champion points to version 3, expected version 2")


# ---- property: the decision agrees with a reference evaluation written independently of decide()

metric_value = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
names = st.sampled_from(["acc", "f1", "loss", "latency"])


@st.composite
def policies(draw: st.DrawFn) -> PromotionPolicy:
    primary = draw(names)
    direction = draw(st.sampled_from(["maximize", "minimize"]))
    absolute = draw(st.none() | st.floats(0, 10))
    relative = draw(st.none() | st.floats(0, 2))
    combine = draw(st.sampled_from(["all", "any"])) if absolute is not None and relative is not None else "all"
    guard_names = draw(st.lists(names.filter(lambda n: n != primary), unique=True, max_size=3))
    guards = tuple(GuardMetric(n, draw(st.sampled_from(["maximize", "minimize"])), draw(st.floats(0, 5)))
                   for n in guard_names)
    checks = tuple(draw(st.lists(st.sampled_from(["data_checks", "model_checks"]), unique=True)))
    return PromotionPolicy(primary, direction, absolute, relative, combine, guards, checks,
                           draw(st.sampled_from(["promote", "reject"])), draw(st.none() | metric_value))


def reference(policy: PromotionPolicy, new: dict, old: dict | None, verdicts: dict) -> bool:
    """The policy read as a sentence, evaluated literally."""
    better = (lambda a, b: a - b) if policy.direction == "maximize" else (lambda a, b: b - a)
    if any(verdicts.get(c) is not True for c in policy.required_checks):
        return False
    x = new[policy.primary_metric]
    if policy.min_value is not None:
        if policy.direction == "maximize" and x < policy.min_value:
            return False
        if policy.direction == "minimize" and x > policy.min_value:
            return False
    if old is None:
        return policy.no_champion == "promote"
    y = old[policy.primary_metric]
    gain = better(x, y)
    rel = gain / abs(y) if y != 0 else (math.inf if gain > 0 else (-math.inf if gain < 0 else 0.0))
    tests = []
    if policy.min_improvement is not None:
        tests.append(gain >= policy.min_improvement)
    if policy.min_relative_improvement is not None:
        tests.append(rel >= policy.min_relative_improvement)
    if not tests:
        tests.append(gain > 0)
    if not (any(tests) if policy.combine == "any" else all(tests)):
        return False
    for g in policy.guards:
        worse = -((new[g.name] - old[g.name]) if g.direction == "maximize" else (old[g.name] - new[g.name]))
        if worse > g.tolerance:
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(policy=policies(), new=st.fixed_dictionaries({n: metric_value for n in ["acc", "f1", "loss", "latency"]}),
       old=st.none() | st.fixed_dictionaries({n: metric_value for n in ["acc", "f1", "loss", "latency"]}),
       verdicts=st.dictionaries(st.sampled_from(["data_checks", "model_checks"]), st.none() | st.booleans()))
def test_decision_agrees_with_reference(policy: PromotionPolicy, new: dict, old: dict | None, verdicts: dict) -> None:
    decision = decide(policy, Candidate("2", new), Candidate("1", old) if old is not None else None, verdicts)
    assert decision.promote == reference(policy, new, old, verdicts), decision.reasons
    assert decision.reasons, "every decision gives its reasons"
    assert decision.to_tags()["mlops.decision"] == ("promote" if decision.promote else "reject")


@settings(max_examples=100, deadline=None)
@given(policy=policies(), value=metric_value)
def test_equal_metrics_never_promote_without_a_zero_threshold(policy: PromotionPolicy, value: float) -> None:
    same = {n: value for n in ["acc", "f1", "loss", "latency"]}
    decision = decide(policy, Candidate("2", same), Candidate("1", same), {"data_checks": True, "model_checks": True})
    zero_ok = (policy.min_improvement == 0 or policy.min_relative_improvement == 0)
    if not zero_ok or (policy.combine == "all" and (policy.min_improvement or policy.min_relative_improvement)):
        assert not decision.promote
