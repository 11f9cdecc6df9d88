"""Rollout operators fail at parse time on bad input, and their modules import nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import CanaryStrategy
from airflow_mlops.operators.rollout import BlueGreenRolloutOperator, CanaryRolloutOperator, ModelRolloutOperator

HEAVY = ("mlflow", "sklearn", "torch", "pandas", "boto3", "kubernetes", "pyarrow", "deepchecks")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"steps": (10, 5, 100)}, "CanaryStrategy.steps[1]"),
    ({"steps": (10, 50, 120)}, "CanaryStrategy.steps[2]"),
    ({"pause_s": 0}, "CanaryStrategy.pause_s"),
    ({"analysis": {"metrics": [{"name": "e", "provider": "router", "query": "error_ratio", "interval_s": 10,
                                "count": 3, "success_condition": "result < 0.1"}]}, "pause_s": 5},
     "CanaryStrategy.pause_s[0]"),
    ({"target": {"kind": "nomad"}}, "target.kind"),
    ({"on_kill": "pray"}, "on_kill"),
    ({"on_retry": "later"}, "on_retry"),
])
def test_canary_operator_rejects_bad_input_at_parse_time(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        CanaryRolloutOperator(task_id="t", model_name="m", candidate_version="2", **kwargs)
    assert err.value.field == field


def test_templated_values_are_checked_at_task_start_not_parse_time() -> None:
    op = ModelRolloutOperator(task_id="t", model_name="m", candidate_version="{{ params.v }}",
                              strategy="{{ params.strategy }}", target={"kind": "{{ var.value.kind }}"})
    assert op.template_fields == ("model_name", "candidate_version", "stable_version", "strategy", "target",
                                  "analysis_settings", "approval")
    with pytest.raises(SpecError, match=r"BlueGreenStrategy\.preview_pause_s"):
        BlueGreenRolloutOperator(task_id="b", model_name="m", candidate_version="2", preview_pause_s=-1)
    ok = ModelRolloutOperator(task_id="c", model_name="m", candidate_version="2",
                              strategy={"kind": "canary", "steps": [50, 100], "pause_s": 1})
    assert isinstance(ok.strategy, dict) and CanaryStrategy.from_dict(ok.strategy).steps == (50, 100)


def test_rollout_modules_import_nothing_heavy() -> None:
    code = ("import sys\nimport airflow_mlops.operators.rollout, airflow_mlops.triggers.rollout, "
            "airflow_mlops.rollout.targets, airflow_mlops.rollout.analysis\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


PROMETHEUS_CANARY = {"kind": "canary", "steps": [50, 100], "pause_s": 2, "analysis": {"metrics": [
    {"name": "error_rate", "provider": "prometheus", "query": "up", "interval_s": 1, "count": 2,
     "success_condition": "result < 0.1"}]}}


def test_prometheus_analysis_without_a_url_fails_naming_the_variable() -> None:
    op = ModelRolloutOperator(task_id="t", model_name="m", candidate_version="2", strategy=PROMETHEUS_CANARY,
                              analysis_settings="{}")
    strategy = CanaryStrategy.from_dict(PROMETHEUS_CANARY)
    with pytest.raises(SpecError, match="mlops_rollout_analysis_settings") as err:
        op._check_providers(strategy, op._settings())
    assert err.value.field == "analysis_settings.prometheus_url"
    rendered = ModelRolloutOperator(task_id="u", model_name="m", candidate_version="2", strategy=PROMETHEUS_CANARY,
                                    analysis_settings='{"prometheus_url": "http://prometheus:9090"}')
    rendered._check_providers(strategy, rendered._settings())  # a rendered JSON template is read back
    with pytest.raises(SpecError, match="analysis_settings"):
        ModelRolloutOperator(task_id="v", model_name="m", candidate_version="2", strategy=PROMETHEUS_CANARY,
                             analysis_settings="[1, 2]")._settings()


class _MemoryTarget:
    """An in-memory target: the pure operator logic is under test here; real targets run in tests/integration.
    ``weight`` is what the target applies, ``state`` what it persisted."""

    kind = "memory"

    def __init__(self) -> None:
        self.state: Any = None
        self.weight = 0
        self.rolled_back = 0

    def read_state(self) -> Any:
        from dataclasses import replace

        return None if self.state is None else replace(self.state, weight=self.weight)

    def load_state(self) -> Any:
        return self.state

    def serving_version(self) -> str:
        return "1"

    def save_state(self, state: Any) -> None:
        self.state = state

    def deploy_candidate(self, state: Any) -> None:
        self.save_state(state)

    def candidate_ready(self, state: Any) -> bool:
        return True

    def apply_weight(self, state: Any) -> None:
        self.save_state(state)
        self.weight = state.weight

    def rollback(self, state: Any) -> None:
        self.rolled_back += 1
        self.save_state(state)
        self.weight = 0

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


class _HalfDeployTarget(_MemoryTarget):
    """Its candidate deploy fails after the state is persisted (e.g. a quota error on the second object)."""

    def deploy_candidate(self, state: Any) -> None:
        self.save_state(state)
        raise RuntimeError("exceeded quota: pods")


def _operator_on(target: _MemoryTarget, **kwargs: Any) -> ModelRolloutOperator:
    """A canary rollout operator whose target is ``target``."""

    class Op(ModelRolloutOperator):
        def _make_target(self, config: Any) -> Any:
            return target

    return Op(task_id="t", model_name="m", candidate_version="2", target={"kind": "kubernetes"},
              strategy={"kind": "canary", "steps": [50, 100], "pause_s": 1}, **kwargs)


class _Ti:
    dag_id, run_id, task_id = "d", "r", "t"

    def __init__(self, try_number: int) -> None:
        self.try_number = try_number


@pytest.mark.parametrize(("retries", "try_number", "rolled_back"), [(0, 1, 1), (1, 1, 0), (1, 2, 1)])
def test_a_failed_candidate_deploy_is_rolled_back_on_the_last_try(retries: int, try_number: int,
                                                                  rolled_back: int) -> None:
    target = _HalfDeployTarget()
    op = _operator_on(target, retries=retries)
    with pytest.raises(RuntimeError, match="quota"):
        op.execute({"ti": _Ti(try_number)})  # type: ignore[arg-type]
    assert target.rolled_back == rolled_back
    # Rolled back: aborted, nothing left progressing; a retry to come owns the progressing state.
    assert target.state.phase == ("aborted" if rolled_back else "progressing")


def test_measurement_summary_is_valid_json_within_the_tag_limit() -> None:
    import json

    from airflow_mlops.operators.rollout import measurement_summary

    many = [{"metric": f"metric_{i % 40}", "outcome": "successful" if i % 7 else "failed", "value": i / 3,
             "baseline": 0.5} for i in range(5000)]
    text = measurement_summary(many)
    assert len(text) <= 5000
    summary = json.loads(text)
    assert sum(e["n"] for e in summary.values()) == 5000
    few = json.loads(measurement_summary(many[:3]))
    assert few["metric_0"] == {"n": 1, "outcomes": "f", "last": 0.0, "baseline": 0.5}
    assert json.loads(measurement_summary([])) == {}


def test_approval_decision_from_a_hitl_result() -> None:
    from airflow_mlops.operators.rollout import approval_decision

    assert approval_decision({"chosen_options": ["Switch"], "responded_by_user": {"id": "c", "name": "Carol"}}) \
        == (True, "Carol", "")
    assert approval_decision({"chosen_options": ["Roll back"], "responded_by_user": {"id": "bob"},
                              "params_input": {"reason": "not signed off"}}) == (False, "bob", "not signed off")
    for none in (None, {}, {"chosen_options": None, "responded_by_user": None}):
        approved, who, why = approval_decision(none)
        assert not approved and who == "nobody" and "no approval" in why


class _BusyOnceTarget(_MemoryTarget):
    """Refuses traffic changes as busy (a SageMaker endpoint still Updating) until ``busy`` is cleared: the operator
    must defer until it settles, not wait in the worker."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = True

    def settled(self) -> bool:
        return not self.busy

    def apply_weight(self, state: Any) -> None:
        from airflow_mlops.rollout.targets import TargetBusy

        if self.busy:
            self.save_state(state)
            raise TargetBusy("endpoint is still Updating")
        super().apply_weight(state)


def test_a_busy_target_defers_until_it_settles_then_the_change_is_applied() -> None:
    from airflow.sdk.exceptions import TaskDeferred

    target = _BusyOnceTarget()
    op = _operator_on(target)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": _Ti(1)})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert trigger.wait_settled and trigger.deadline is not None
    assert target.state.weight == 50 and target.weight == 0  # recorded, not applied yet
    target.busy = False
    # Back from the trigger: the engine sees recorded 50 vs observed 0 and applies it again, then pauses.
    with pytest.raises(TaskDeferred) as deferred:
        op.resume({"ti": _Ti(1)}, {"status": "settled"})  # type: ignore[arg-type]
    assert not deferred.value.trigger.wait_settled
    assert target.weight == 50
