"""The blue-green batch switch decision: validation of the policy and agreement with a reference evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.batch import BatchSwitchPolicy, decide_switch
from airflow_mlops.core.errors import SpecError

fraction = st.floats(min_value=0, max_value=1, allow_nan=False)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"min_agreement": 1.5}, "BatchSwitchPolicy.min_agreement"),
    ({"min_agreement": float("nan")}, "BatchSwitchPolicy.min_agreement"),
    ({"max_mean_abs_proba_diff": -0.1}, "BatchSwitchPolicy.max_mean_abs_proba_diff"),
    ({"max_class_rate_shift": True}, "BatchSwitchPolicy.max_class_rate_shift"),
    ({"on_disagreement": "rollback"}, "BatchSwitchPolicy.on_disagreement"),
])
def test_bad_policy_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        BatchSwitchPolicy(**kwargs)
    assert err.value.field == field


def test_from_dict_reads_rendered_strings_and_rejects_unknown_fields() -> None:
    policy = BatchSwitchPolicy.from_dict({"min_agreement": "0.9", "max_mean_abs_proba_diff": "0.2",
                                          "max_class_rate_shift": "None", "on_disagreement": "fail"})
    assert policy == BatchSwitchPolicy(0.9, 0.2, None, "fail")
    with pytest.raises(SpecError, match="min_agreement"):
        BatchSwitchPolicy.from_dict({"min_agreement": "most"})
    with pytest.raises(SpecError, match="max_agreement"):
        BatchSwitchPolicy.from_dict({"max_agreement": 1})


def test_missing_stats_are_an_error_and_an_empty_batch_keeps_current() -> None:
    with pytest.raises(SpecError, match="comparison stats"):
        decide_switch({"rows": 3}, BatchSwitchPolicy())
    decision = decide_switch({"rows": 0, "agreement": 1, "mean_abs_proba_diff": 0, "max_class_rate_shift": 0},
                             BatchSwitchPolicy())
    assert decision.publish == "current" and "no rows" in decision.reasons[0]


def test_each_failed_bound_is_a_reason() -> None:
    stats = {"rows": 100, "agreement": 0.5, "mean_abs_proba_diff": 0.4, "max_class_rate_shift": 0.3}
    decision = decide_switch(stats, BatchSwitchPolicy())
    assert not decision.switched
    assert [r.split()[0] for r in decision.reasons] == ["agreement", "mean", "class-rate"]


@given(agreement=fraction, diff=fraction, shift=fraction, min_agreement=fraction, max_diff=fraction,
       max_shift=st.one_of(st.none(), fraction), rows=st.integers(0, 10**6))
def test_decision_agrees_with_reference(agreement: float, diff: float, shift: float, min_agreement: float,
                                        max_diff: float, max_shift: float | None, rows: int) -> None:
    policy = BatchSwitchPolicy(min_agreement, max_diff, max_shift)
    stats = {"rows": rows, "agreement": agreement, "mean_abs_proba_diff": diff, "max_class_rate_shift": shift}
    within_shift = max_shift is None or shift <= max_shift
    expected = rows > 0 and agreement >= min_agreement and diff <= max_diff and within_shift
    decision = decide_switch(stats, policy)
    assert decision.switched is expected
    assert decision.reasons, "a decision always says why"
