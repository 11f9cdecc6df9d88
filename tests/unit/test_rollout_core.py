"""Rollout core: conditions, strategy validation and the engine, exhaustively and with hypothesis (no target)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import (
    Abort,
    Analyse,
    AnalysisSpec,
    AwaitApproval,
    BlueGreenStrategy,
    CanaryStrategy,
    Condition,
    Done,
    Measurement,
    MetricCheck,
    MissingValue,
    Pause,
    Promote,
    RolloutState,
    SetWeight,
    applied,
    decide,
    judge,
    strategy_from_dict,
    strategy_of,
)

ERRORS = MetricCheck(name="error_rate", provider="router", query="error_ratio", interval_s=1, count=3,
                     success_condition="result <= stable * 1.5 + 0.005", failure_limit=0)
P95 = MetricCheck(name="p95", provider="router", query="latency_p95_seconds", interval_s=2, count=2,
                  success_condition="result <= stable * 1.2")


# -- conditions ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "values", "expected"), [
    ("result <= stable * 1.5 + 0.005", {"result": 0.012, "stable": 0.004}, False),
    ("result <= stable * 1.5 + 0.005", {"result": 0.0105, "stable": 0.004}, True),
    ("canary <= stable * 1.2", {"canary": 0.12, "stable": 0.1}, True),
    ("result > 0.2 or result < 0", {"result": 0.25}, True),
    ("0 <= result <= 1", {"result": 1.5}, False),
    ("not (result > 1) and result != 0", {"result": 0.5}, True),
    ("(result - stable) / stable < 0.1", {"result": 1.05, "stable": 1.0}, True),
    ("-result < -1e-3", {"result": 0.01}, True),
    ("result == .5", {"result": 0.5}, True),
    ("(result + 1) * 2 >= 4", {"result": 1}, True),
])
def test_conditions_evaluate(text: str, values: dict[str, float], expected: bool) -> None:
    assert Condition.parse(text).evaluate(values) is expected


@pytest.mark.parametrize("text", ["", "result", "result <=", "__import__('os').system('x') == 0", "result ** 2 < 1",
                                  "result < 1 and", "(result < 1", "result < 1)", "result; 1 < 2", "a.b < 1",
                                  "x" * 600 + " < 1", "1 < 2 2"])
def test_conditions_reject_anything_else(text: str) -> None:
    with pytest.raises(SpecError) as err:
        Condition.parse(text, field="MetricCheck[x].success_condition")
    assert err.value.field == "MetricCheck[x].success_condition"


def test_condition_missing_value_and_division() -> None:
    cond = Condition.parse("result <= stable * 1.5")
    assert cond.names == {"result", "stable"}
    with pytest.raises(MissingValue):
        cond.evaluate({"result": 0.1})
    with pytest.raises(MissingValue):
        cond.evaluate({"result": 0.1, "stable": float("nan")})
    assert Condition.parse("result / stable < 2").evaluate({"result": 1, "stable": 0}) is False  # +inf


# -- specs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"steps": (5, 5, 100)}, "CanaryStrategy.steps[1]"),
    ({"steps": (50, 25, 100)}, "CanaryStrategy.steps[1]"),
    ({"steps": (5, 25, 50)}, "CanaryStrategy.steps[2]"),
    ({"steps": (5, 120)}, "CanaryStrategy.steps[1]"),
    ({"steps": (0, 100)}, "CanaryStrategy.steps[0]"),
    ({"steps": ()}, "CanaryStrategy.steps"),
    ({"steps": (5.5, 100)}, "CanaryStrategy.steps[0]"),
    ({"pause_s": 0}, "CanaryStrategy.pause_s"),
    ({"pause_s": -1}, "CanaryStrategy.pause_s"),
    ({"pause_s": float("inf")}, "CanaryStrategy.pause_s"),
    ({"pause_s": (1, 2)}, "CanaryStrategy.pause_s"),
    ({"pause_s": (10, 0, 10, 10)}, "CanaryStrategy.pause_s[1]"),
    ({"pause_s": 2, "analysis": AnalysisSpec((ERRORS,))}, "CanaryStrategy.pause_s[0]"),  # window 3s > pause
    ({"analysis_mode": "sometimes"}, "CanaryStrategy.analysis_mode"),
])
def test_canary_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        CanaryStrategy(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"provider": "datadog"}, "MetricCheck[m].provider"),
    ({"query": " "}, "MetricCheck[m].query"),
    ({"success_condition": None}, "MetricCheck[m].success_condition"),
    ({"success_condition": "result <= p50"}, "MetricCheck[m].success_condition"),
    ({"failure_condition": "result >"}, "MetricCheck[m].failure_condition"),
    ({"interval_s": 0}, "MetricCheck[m].interval_s"),
    ({"count": 0}, "MetricCheck[m].count"),
    ({"failure_limit": -1}, "MetricCheck[m].failure_limit"),
    ({"inconclusive_limit": True}, "MetricCheck[m].inconclusive_limit"),
    ({"name": "bad name"}, "MetricCheck.name"),
    # A probe has no default body: only the caller knows the model's signature (its named columns).
    ({"provider": "http_probe", "query": "success_ratio"}, "MetricCheck[m].params.payload"),
    ({"provider": "http_probe", "query": "success_ratio", "params": {"payload": "[[0.0]]"}},
     "MetricCheck[m].params.payload"),
])
def test_metric_validation_names_the_field(kwargs: dict, field: str) -> None:
    base = {"name": "m", "provider": "router", "query": "error_ratio", "success_condition": "result < 1"}
    with pytest.raises(SpecError) as err:
        MetricCheck(**{**base, **kwargs})
    assert err.value.field == field


def test_analysis_and_blue_green_validation() -> None:
    with pytest.raises(SpecError, match=r"AnalysisSpec\.metrics"):
        AnalysisSpec(())
    with pytest.raises(SpecError, match="unique"):
        AnalysisSpec((ERRORS, ERRORS))
    with pytest.raises(SpecError, match=r"AnalysisSpec\.on_inconclusive"):
        AnalysisSpec((ERRORS,), on_inconclusive="shrug")
    with pytest.raises(SpecError, match=r"BlueGreenStrategy\.preview_pause_s"):
        BlueGreenStrategy(preview_pause_s=0)
    with pytest.raises(SpecError, match=r"BlueGreenStrategy\.preview_pause_s"):
        BlueGreenStrategy(preview_pause_s=1, preview_analysis=AnalysisSpec((ERRORS,)))
    with pytest.raises(SpecError, match=r"BlueGreenStrategy\.scale_down_delay_s"):
        BlueGreenStrategy(scale_down_delay_s=-5)
    with pytest.raises(SpecError, match=r"strategy\.kind"):
        strategy_from_dict({"kind": "shadow"})
    with pytest.raises(SpecError, match=r"CanaryStrategy\.stepz"):
        strategy_from_dict({"kind": "canary", "stepz": [1, 100]})


def test_strategies_round_trip_through_dicts() -> None:
    canary = CanaryStrategy(steps=(10, 50, 100), pause_s=(5, 6, 7), analysis=AnalysisSpec((ERRORS, P95)))
    assert strategy_from_dict(canary.to_dict()) == canary
    bg = BlueGreenStrategy(preview_pause_s=4, preview_analysis=AnalysisSpec((P95,)), auto_promote=False)
    assert strategy_from_dict(bg.to_dict()) == bg
    assert [s.weight for s in bg.plan()] == [0, 100] and bg.plan()[0].approval


# -- judging one measurement -----------------------------------------------------------------------

def test_judge_follows_argo_semantics() -> None:
    assert judge(ERRORS, 0.01, 0.01)[0] == "successful"
    assert judge(ERRORS, 0.3, 0.01)[0] == "failed"
    assert judge(ERRORS, None, 0.01)[0] == "inconclusive"
    assert judge(ERRORS, 0.01, None)[0] == "inconclusive"  # relative condition without a baseline
    both = MetricCheck(name="m", provider="router", query="q", success_condition="result < 0.1",
                       failure_condition="result > 0.2")
    assert judge(both, 0.15, None)[0] == "inconclusive"
    assert judge(both, 0.25, None)[0] == "failed"
    fail_only = MetricCheck(name="m", provider="router", query="q", failure_condition="result > 0.2")
    assert judge(fail_only, 0.1, None)[0] == "successful"


# -- the engine ------------------------------------------------------------------------------------

def _state(strategy: CanaryStrategy | BlueGreenStrategy, **kw: object) -> RolloutState:
    return RolloutState(owner="dag/run/task", model="m", stable="1", candidate="2", strategy=strategy.to_dict(),
                        **kw)  # type: ignore[arg-type]


def _m(metric: str, step: int, outcome: str, at: float, value: float | None = 0.0) -> Measurement:
    return Measurement(metric, step, value, 0.0, outcome, at)


def simulate(strategy: CanaryStrategy | BlueGreenStrategy, outcome: Callable[[str, int, int], str],
             max_actions: int = 2000) -> tuple[RolloutState, list[object]]:
    """Drive the engine with a fake clock; ``outcome(metric, step, n)`` decides each measurement."""
    state, now, actions = _state(strategy), 1000.0, []
    for _ in range(max_actions):
        action = decide(strategy, state, state.measurements, now)
        actions.append(action)
        if isinstance(action, Done):
            return state, actions
        if isinstance(action, Pause):
            assert action.until > now, f"pause must move time forward: {action}"
            now = action.until
            continue
        if isinstance(action, AwaitApproval):
            state = replace(state, approved=True)
            continue
        new = ()
        if isinstance(action, Analyse):
            n = len([m for m in state.measurements if m.step == action.step])
            new = tuple(_m(name, -1 if action.background else action.step, outcome(name, action.step, n), now)
                        for name in action.metrics)
            new = tuple(replace(m, background=action.background) for m in new)
        state = applied(state, action, now, new)
    raise AssertionError(f"no end after {max_actions} actions: {actions[-5:]}")


def test_good_canary_walks_every_step_then_promotes() -> None:
    strategy = CanaryStrategy(steps=(5, 25, 50, 100), pause_s=4, analysis=AnalysisSpec((ERRORS,)))
    state, actions = simulate(strategy, lambda *_: "successful")
    assert [a.weight for a in actions if isinstance(a, SetWeight)] == [5, 25, 50, 100]
    assert isinstance(actions[-2], Promote) and actions[-1] == Done("promoted")
    assert state.phase == "promoted" and state.weight == 100
    assert len(state.measurements) == 4 * ERRORS.count
    # every step dwelt its full pause
    times = [h["at"] for h in state.history]
    assert all(b - a >= 4 for a, b in itertools.pairwise(times))


def test_failing_canary_aborts_after_failure_limit_plus_one() -> None:
    metric = replace(ERRORS, failure_limit=1, count=5)
    strategy = CanaryStrategy(steps=(20, 100), pause_s=5, analysis=AnalysisSpec((metric,)))
    state, actions = simulate(strategy, lambda name, step, n: "failed")
    aborts = [a for a in actions if isinstance(a, Abort)]
    assert len(aborts) == 1 and "failed" in aborts[0].reason
    assert state.phase == "aborted" and state.weight == 0 and actions[-1] == Done("aborted", state.reason)
    assert len(state.measurements) == 2  # failure_limit + 1
    assert state.measurements[-1].at - state.history[0]["at"] == pytest.approx(2 * metric.interval_s)


def test_inconclusive_policy_decides() -> None:
    abort = CanaryStrategy(steps=(50, 100), pause_s=3, analysis=AnalysisSpec((ERRORS,)))
    state, _ = simulate(abort, lambda *_: "inconclusive")
    assert state.phase == "aborted" and "inconclusive" in (state.reason or "")
    carry_on = replace(abort, analysis=AnalysisSpec((ERRORS,), on_inconclusive="continue"))
    state, _ = simulate(CanaryStrategy(**{**carry_on.__dict__}), lambda *_: "inconclusive")
    assert state.phase == "promoted"


def test_background_analysis_aborts_mid_step_and_needs_a_sample_at_the_last_step() -> None:
    strategy = CanaryStrategy(steps=(10, 100), pause_s=10, analysis=AnalysisSpec((replace(ERRORS, count=2),)),
                              analysis_mode="background")
    state, _actions = simulate(strategy, lambda *_: "successful")
    assert state.phase == "promoted"
    assert any(m.at >= state.history[1]["at"] for m in state.measurements)  # sampled at 100% before promote
    state, _ = simulate(strategy, lambda name, step, n: "failed" if step == 1 else "successful")
    assert state.phase == "aborted" and state.weight == 0


def test_blue_green_preview_approval_switch_and_scale_down_delay() -> None:
    strategy = BlueGreenStrategy(preview_pause_s=5, preview_analysis=AnalysisSpec((P95,)), auto_promote=False,
                                 scale_down_delay_s=7)
    state, actions = simulate(strategy, lambda *_: "successful")
    assert [a.weight for a in actions if isinstance(a, SetWeight)] == [0, 100]
    assert any(isinstance(a, AwaitApproval) for a in actions)
    assert state.phase == "promoted"
    assert state.history[-1]["at"] - state.history[1]["at"] >= 7  # old version kept for the scale-down delay
    state, _ = simulate(strategy, lambda *_: "failed")
    assert state.phase == "aborted" and [h.get("weight") for h in state.history] == [0, 0]


def test_a_rejection_at_the_approval_gate_aborts_before_any_traffic_moves() -> None:
    strategy = BlueGreenStrategy(preview_pause_s=5, auto_promote=False, scale_down_delay_s=7)
    state, now = _state(strategy), 1000.0
    while not isinstance(action := decide(strategy, state, state.measurements, now), AwaitApproval):
        if isinstance(action, Pause):
            now = action.until
            continue
        state = applied(state, action, now)
    assert state.step == 0 and state.weight == 0  # preview: the candidate has no live traffic
    # A rejection at another step does not count; this step's does.
    other = replace(state, history=(*state.history, {"action": "Reject", "step": 1, "by": "bob"}))
    assert isinstance(decide(strategy, other, (), now), AwaitApproval)
    rejected = replace(state, history=(*state.history, {"action": "Reject", "step": 0, "by": "bob", "why": "v9 "
                                                        "is not signed off"}))
    action = decide(strategy, rejected, (), now)
    assert isinstance(action, Abort) and "bob" in action.reason and "signed off" in action.reason
    done = applied(rejected, action, now)
    assert done.phase == "aborted" and done.weight == 0
    assert decide(strategy, done, (), now) == Done("aborted", done.reason)


def test_engine_on_observed_states() -> None:
    strategy = CanaryStrategy(steps=(5, 100), pause_s=10)
    base = _state(strategy)
    assert decide(strategy, base, (), 0) == SetWeight(5, 0)
    # crashed after persisting step 1 but before the weight applied: re-apply
    assert decide(strategy, replace(base, step=1, weight=5), (), 0) == SetWeight(100, 1)
    # someone raised the weight by hand: abort, stable gets everything
    assert isinstance(decide(strategy, replace(base, step=0, weight=50), (), 0), Abort)
    # aborted but the rollback did not finish: roll back again
    assert isinstance(decide(strategy, replace(base, phase="aborted", weight=5, step=0, reason="x"), (), 0), Abort)
    assert decide(strategy, replace(base, phase="aborted", weight=0, reason="x"), (), 0) == Done("aborted", "x")
    assert decide(strategy, replace(base, phase="promoted", weight=100), (), 0) == Done("promoted")
    assert decide(strategy, replace(base, step=0, weight=5, step_started_at=100), (), 105) == Pause(110, "step 0 at 5%")
    assert isinstance(decide(strategy, replace(base, step=7, weight=5), (), 0), Abort)
    assert strategy_of(base) == strategy
    assert RolloutState.from_dict(base.to_dict()) == base
    with pytest.raises(SpecError, match=r"RolloutState\.weight"):
        replace(base, weight=101)


# -- hypothesis: invariants over strategy specs and observation sequences --------------------------

metrics = st.builds(
    lambda interval, count, limit, inconclusive: MetricCheck(
        name="m", provider="router", query="q", success_condition="result <= stable * 1.5 + 0.005",
        interval_s=interval, count=count, failure_limit=limit, inconclusive_limit=inconclusive),
    st.sampled_from([0.5, 1.0, 2.0]), st.integers(1, 4), st.integers(0, 2), st.integers(0, 2))


@st.composite
def canaries(draw: st.DrawFn) -> CanaryStrategy:
    weights = sorted(set(draw(st.lists(st.integers(1, 99), max_size=5))))
    steps = (*weights, 100)
    analysis = draw(st.none() | st.builds(lambda m, p: AnalysisSpec((m,), on_inconclusive=p), metrics,
                                          st.sampled_from(["abort", "continue"])))
    mode = draw(st.sampled_from(["step", "background"]))
    floor = analysis.window_s if analysis is not None and mode == "step" else 0.1
    pauses = tuple(draw(st.floats(floor, floor + 10)) for _ in steps)
    return CanaryStrategy(steps=steps, pause_s=pauses, analysis=analysis, analysis_mode=mode,
                          approval_before_promote=draw(st.booleans()))


@st.composite
def blue_greens(draw: st.DrawFn) -> BlueGreenStrategy:
    preview = draw(st.none() | st.builds(lambda m: AnalysisSpec((m,)), metrics))
    post = draw(st.none() | st.builds(lambda m: AnalysisSpec((m,)), metrics))
    return BlueGreenStrategy(preview_pause_s=(preview.window_s if preview else 0) + draw(st.floats(0.1, 5)),
                             preview_analysis=preview, auto_promote=draw(st.booleans()),
                             scale_down_delay_s=(post.window_s if post else 0) + draw(st.floats(0.1, 5)),
                             post_promotion_analysis=post)


@given(strategy=canaries() | blue_greens(),
       outcomes=st.lists(st.sampled_from(["successful", "successful", "failed", "inconclusive"]), max_size=60))
@settings(max_examples=300, deadline=None)
def test_invariants(strategy: CanaryStrategy | BlueGreenStrategy, outcomes: list[str]) -> None:
    feed = iter(outcomes)
    state, actions = simulate(strategy, lambda *_: next(feed, "successful"))
    weights = [h["weight"] for h in state.history]
    # never ends split: promoted at 100 or aborted at 0
    assert (state.phase, state.weight) in (("promoted", 100), ("aborted", 0))
    # weight never decreases, except to 0 on abort (the last history entry)
    progress = weights[:-1] if state.phase == "aborted" else weights
    assert progress == sorted(progress)
    if state.phase == "aborted":
        assert state.history[-1]["action"] == "Abort" and weights[-1] == 0
    assert sum(isinstance(a, (Promote, Abort)) for a in actions) == 1
    # promote only after the last step's analysis passed and its pause elapsed
    if state.phase == "promoted":
        plan = strategy.plan()
        last = len(plan) - 1
        entered = [h for h in state.history if h["action"] == "SetWeight" and h["step"] == last][-1]["at"]
        assert state.history[-1]["at"] >= entered + plan[last].pause_s
        if plan[last].analysis is not None:
            spec = plan[last].analysis
            for metric in spec.metrics:
                taken = [m for m in state.measurements if m.step == last and m.metric == metric.name]
                assert len(taken) >= metric.count
                assert sum(m.outcome == "failed" for m in taken) <= metric.failure_limit


@given(strategy=canaries() | blue_greens(),
       outcomes=st.lists(st.sampled_from(["successful", "successful", "failed", "inconclusive"]), max_size=40),
       lost=st.lists(st.booleans(), max_size=20))
@settings(max_examples=200, deadline=None)
def test_invariants_when_traffic_changes_are_lost(strategy: CanaryStrategy | BlueGreenStrategy, outcomes: list[str],
                                                  lost: list[bool]) -> None:
    """A worker that dies between persisting a step and applying its weight: the target still shows the old
    weight. The engine re-applies it (never skips a step's dwell time) and the invariants still hold."""
    feed, losses = iter(outcomes), iter(lost)
    state, now, applied_weights = _state(strategy), 1000.0, []
    for _ in range(3000):
        action = decide(strategy, state, state.measurements, now)
        if isinstance(action, Done):
            break
        if isinstance(action, Pause):
            now = action.until
            continue
        if isinstance(action, AwaitApproval):
            state = replace(state, approved=True)
            continue
        new: tuple[Measurement, ...] = ()
        if isinstance(action, Analyse):
            new = tuple(replace(_m(n, -1 if action.background else action.step, next(feed, "successful"), now),
                                background=action.background) for n in action.metrics)
        after = applied(state, action, now, new)
        if isinstance(action, SetWeight) and next(losses, False):
            after = replace(after, weight=state.weight)  # persisted, but the target never got the weight
        else:
            applied_weights.append(after.weight)
        state = after
        now += 0.01
    else:
        raise AssertionError("no end")
    assert (state.phase, state.weight) in (("promoted", 100), ("aborted", 0))
    progress = applied_weights[:-1] if state.phase == "aborted" else applied_weights
    assert [w for w in progress if w] == sorted(w for w in progress if w)
    if state.phase == "promoted":
        plan = strategy.plan()
        entered = [h for h in state.history if h["action"] == "SetWeight" and h["step"] == len(plan) - 1][-1]["at"]
        assert state.history[-1]["at"] >= entered + plan[-1].pause_s
