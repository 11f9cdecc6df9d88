"""The rollout engine: from (strategy, observed state, analysis results, now) to the next action.

Semantics follow Argo Rollouts and SageMaker deployment guardrails: the candidate's weight only grows,
step by step; a failed analysis aborts, and **abort means the stable version gets 100% of traffic**; the
candidate is promoted only after the last step's pause and analysis passed. The engine is pure: the
operator applies each action to a target, records it in the target's persisted state and asks again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout.conditions import MissingValue
from airflow_mlops.core.rollout.spec import AnalysisSpec, MetricCheck, Strategy, strategy_from_dict

PHASES = ("progressing", "promoted", "aborted")
OUTCOMES = ("successful", "failed", "inconclusive")
STATE_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """One measurement of one metric.

    :param metric: the metric's name.
    :param step: plan step it was taken in (-1: background, counted across steps).
    :param value: the candidate's value (None: no data).
    :param baseline: the stable version's value, when a condition reads ``stable``.
    :param outcome: successful | failed | inconclusive.
    :param at: epoch seconds.
    :param message: why (condition text, provider error).
    """

    metric: str
    step: int
    value: float | None
    baseline: float | None
    outcome: str
    at: float
    message: str = ""
    background: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"metric": self.metric, "step": self.step, "value": self.value, "baseline": self.baseline,
                "outcome": self.outcome, "at": self.at, "message": self.message, "background": self.background}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Back from JSON."""
        return cls(**{k: data[k] for k in ("metric", "step", "value", "baseline", "outcome", "at")},
                   message=data.get("message", ""), background=bool(data.get("background", False)))


@dataclass(frozen=True)
class RolloutState:
    """What the target persists about a rollout (annotations, tags, a state file).

    :param owner: who drives the rollout (``dag_id/run_id/task_id``): traffic is never split without one.
    :param model: model name; :param stable: the version serving before; :param candidate: the new version.
    :param phase: progressing | promoted | aborted.
    :param step: index of the plan step applied (-1: none yet).
    :param weight: candidate weight applied at the target.
    :param started_at: when the rollout began; :param step_started_at: when the current step's weight applied.
    :param approved: a person approved leaving an approval-gated step.
    :param reason: why it was aborted.
    :param measurements: every measurement taken (the full record).
    :param strategy: the strategy's dict form (a resumed task checks it is the same rollout).
    :param history: every traffic change (action, weight, time).
    :param worker_seconds: time the rollout held a worker slot (the rest ran deferred).
    """

    owner: str
    model: str
    stable: str | None
    candidate: str
    strategy: Mapping[str, Any]
    phase: str = "progressing"
    step: int = -1
    weight: int = 0
    started_at: float = 0.0
    step_started_at: float = 0.0
    approved: bool = False
    reason: str | None = None
    measurements: tuple[Measurement, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    worker_seconds: float = 0.0
    version: int = STATE_VERSION

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise SpecError("RolloutState.phase", f"one of {PHASES}", self.phase)
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or not 0 <= self.weight <= 100:
            raise SpecError("RolloutState.weight", "an integer in [0, 100]", self.weight)

    @property
    def split(self) -> bool:
        """Traffic is divided between the two versions."""
        return 0 < self.weight < 100

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what targets persist)."""
        return {"version": self.version, "owner": self.owner, "model": self.model, "stable": self.stable,
                "candidate": self.candidate, "strategy": dict(self.strategy), "phase": self.phase,
                "step": self.step, "weight": self.weight, "started_at": self.started_at,
                "step_started_at": self.step_started_at, "approved": self.approved, "reason": self.reason,
                "measurements": [m.to_dict() for m in self.measurements], "history": [dict(h) for h in self.history],
                "worker_seconds": self.worker_seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """Back from JSON."""
        fields = {k: data[k] for k in ("owner", "model", "stable", "candidate", "strategy", "phase", "step",
                                       "weight", "started_at", "step_started_at", "approved", "reason")}
        return cls(**fields, measurements=tuple(Measurement.from_dict(m) for m in data.get("measurements", ())),
                   history=tuple(data.get("history", ())), worker_seconds=float(data.get("worker_seconds", 0.0)),
                   version=int(data.get("version", STATE_VERSION)))


# -- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetWeight:
    """Send ``weight`` percent of traffic to the candidate and enter plan step ``step``."""

    weight: int
    step: int


@dataclass(frozen=True)
class Pause:
    """Nothing to do until ``until`` (epoch seconds): defer, never sleep in a worker."""

    until: float
    reason: str


@dataclass(frozen=True)
class Analyse:
    """Take one measurement of each named metric now."""

    metrics: tuple[str, ...]
    step: int
    background: bool = False


@dataclass(frozen=True)
class AwaitApproval:
    """The step passed; a person must approve before the rollout goes on."""

    step: int


@dataclass(frozen=True)
class Promote:
    """The candidate passed every step: make it the stable version (100%)."""


@dataclass(frozen=True)
class Abort:
    """Roll back: the stable version gets 100% of traffic."""

    reason: str


@dataclass(frozen=True)
class Done:
    """The rollout is over: ``promoted`` or ``aborted``."""

    outcome: str
    reason: str | None = None


Action = SetWeight | Pause | Analyse | AwaitApproval | Promote | Abort | Done


# -- analysis judgement ----------------------------------------------------------------------------


def judge(metric: MetricCheck, value: float | None, baseline: float | None) -> tuple[str, str]:
    """Outcome of one measurement (Argo semantics): failure condition first, then success condition.

    Missing data is inconclusive. With only a success condition, not meeting it is a failure; with only a
    failure condition, not meeting it is a success; with both, meeting neither is inconclusive.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "inconclusive", "no value"
    values = {"result": value, "canary": value, "stable": baseline}
    try:
        if metric.failure is not None and metric.failure.evaluate(values):
            return "failed", f"failure condition holds: {metric.failure_condition}"
        if metric.success is not None:
            if metric.success.evaluate(values):
                return "successful", ""
            if metric.failure is None:
                return "failed", f"success condition does not hold: {metric.success_condition}"
            return "inconclusive", "neither condition holds"
    except MissingValue as missing:
        return "inconclusive", f"no value for {missing.args[0]!r}"
    return "successful", ""


def metric_verdict(metric: MetricCheck, taken: Sequence[Measurement], need_count: bool = True,
                   on_inconclusive: str = "abort") -> str:
    """running | passed | failed | inconclusive for one metric's measurements of one analysis run.

    With ``on_inconclusive="continue"`` too many inconclusive measurements do not end the run early: it still
    takes its count of measurements (a later failure can still fail it).
    """
    failed = sum(m.outcome == "failed" for m in taken)
    inconclusive = sum(m.outcome == "inconclusive" for m in taken)
    if failed > metric.failure_limit:
        return "failed"
    if inconclusive > metric.inconclusive_limit and on_inconclusive == "abort":
        return "inconclusive"
    if need_count and len(taken) < metric.count:
        return "running"
    return "passed"


def analysis_verdict(spec: AnalysisSpec, by_metric: Mapping[str, Sequence[Measurement]],
                     need_count: bool = True) -> tuple[str, str]:
    """The worst metric decides: failed > inconclusive > running > passed. Returns (verdict, detail)."""
    order = ("failed", "inconclusive", "running", "passed")
    worst, detail = "passed", ""
    for metric in spec.metrics:
        verdict = metric_verdict(metric, by_metric.get(metric.name, ()), need_count, spec.on_inconclusive)
        if order.index(verdict) < order.index(worst):
            worst = verdict
            taken = by_metric.get(metric.name, ())
            last = next((m for m in reversed(taken) if m.outcome != "successful"), None)
            detail = f"{metric.name}: {verdict}" + (f" ({last.message}, value {last.value})" if last else "")
    return worst, detail


# -- the engine ------------------------------------------------------------------------------------


def decide(strategy: Strategy, state: RolloutState, results: Sequence[Measurement], now: float) -> Action:
    """The next action for a rollout.

    :param strategy: the validated strategy.
    :param state: the state observed at the target.
    :param results: the measurements taken so far (usually ``state.measurements``).
    :param now: the current time, epoch seconds.
    """
    plan = strategy.plan()
    if state.phase == "promoted":
        return Done("promoted")
    if state.phase == "aborted":
        # Abort is complete only when the stable version has all traffic back.
        return Abort(state.reason or "aborted") if state.weight != 0 else Done("aborted", state.reason)
    if state.step < 0:
        return SetWeight(plan[0].weight, 0)
    if state.step >= len(plan):
        return Abort(f"state names step {state.step}, the plan has {len(plan)} steps")
    step = plan[state.step]
    if state.weight != step.weight:
        if state.weight > step.weight:
            return Abort(f"target weight {state.weight} exceeds step {state.step}'s {step.weight}: "
                         "changed outside the rollout")
        return SetWeight(step.weight, state.step)  # the weight was not applied (crash in between): re-apply

    background = strategy.background
    if background is not None:
        taken = _group([m for m in results if m.background])
        verdict, detail = analysis_verdict(background, taken, need_count=False)
        if verdict == "failed" or (verdict == "inconclusive" and background.on_inconclusive == "abort"):
            return Abort(f"background analysis {verdict}: {detail}")
        due = _due(background, taken, state.started_at, now, None)
        if due:
            return Analyse(tuple(due), state.step, background=True)

    step_done_at = state.step_started_at + step.pause_s
    waits = [step_done_at]
    verdict = "passed"
    if step.analysis is not None:
        taken = _group([m for m in results if m.step == state.step and not m.background])
        verdict, detail = analysis_verdict(step.analysis, taken)
        if verdict == "failed" or (verdict == "inconclusive" and step.analysis.on_inconclusive == "abort"):
            return Abort(f"analysis at step {state.step} (weight {step.weight}%) {verdict}: {detail}")
        if verdict == "running":
            due = _due(step.analysis, taken, state.step_started_at, now, step.analysis)
            if due:
                return Analyse(tuple(due), state.step)
            waits.append(_next_due(step.analysis, taken, state.step_started_at, step.analysis))
    if background is not None:
        taken_bg = _group([m for m in results if m.background])
        waits.append(_next_due(background, taken_bg, state.started_at, None))
    analysis_running = step.analysis is not None and verdict == "running"
    if now < step_done_at or analysis_running:
        return Pause(min(waits), f"step {state.step} at {step.weight}%")
    if background is not None and state.step == len(plan) - 1:
        at_last = _group([m for m in results if m.background and m.at >= state.step_started_at])
        if any(len(at_last.get(m.name, ())) < 1 for m in background.metrics):
            return Pause(min(waits[1:]), f"background analysis: one measurement at {step.weight}% before promote")
        total = _group([m for m in results if m.background])
        if any(len(total.get(m.name, ())) < m.count for m in background.metrics):
            return Pause(min(waits[1:]), "background analysis: fewer measurements than its count")
    if step.approval and not state.approved:
        rejected = next((h for h in reversed(state.history)
                         if h.get("action") == "Reject" and h.get("step") == state.step), None)
        if rejected is not None:
            return Abort(f"rejected at the approval gate by {rejected.get('by') or 'someone'}"
                         + (f": {rejected['why']}" if rejected.get("why") else ""))
        return AwaitApproval(state.step)
    if state.step == len(plan) - 1:
        return Promote()
    return SetWeight(plan[state.step + 1].weight, state.step + 1)


def _group(measurements: Sequence[Measurement]) -> dict[str, list[Measurement]]:
    grouped: dict[str, list[Measurement]] = {}
    for m in measurements:
        grouped.setdefault(m.metric, []).append(m)
    return grouped


def _due(spec: AnalysisSpec, taken: Mapping[str, Sequence[Measurement]], since: float, now: float,
         limited: AnalysisSpec | None) -> list[str]:
    """Metrics whose next measurement (``since + (n+1) * interval``) is due; a limited run stops at count."""
    due = []
    for metric in spec.metrics:
        n = len(taken.get(metric.name, ()))
        if limited is not None and n >= metric.count:
            continue
        if now >= since + (n + 1) * metric.interval_s:
            due.append(metric.name)
    return due


def _next_due(spec: AnalysisSpec, taken: Mapping[str, Sequence[Measurement]], since: float,
              limited: AnalysisSpec | None) -> float:
    times = [since + (len(taken.get(m.name, ())) + 1) * m.interval_s for m in spec.metrics
             if limited is None or len(taken.get(m.name, ())) < m.count]
    return min(times) if times else math.inf


# -- applying actions to the state (what the operator persists after the target applied them) ----


def applied(state: RolloutState, action: Action, now: float, measurements: Sequence[Measurement] = ()) -> RolloutState:
    """The state after ``action`` was applied at the target (pure; the caller persists it)."""
    entry: dict[str, Any] = {"at": now, "action": type(action).__name__}
    if isinstance(action, SetWeight):
        entry.update(weight=action.weight, step=action.step)
        started = state.started_at if state.step >= 0 else now
        # A step's dwell time counts from when its weight was applied (also when re-applied after a crash).
        return replace(state, weight=action.weight, step=action.step, started_at=started,
                       step_started_at=now, history=(*state.history, entry))
    if isinstance(action, Analyse):
        return replace(state, measurements=(*state.measurements, *measurements))
    if isinstance(action, Promote):
        entry.update(weight=100)
        return replace(state, phase="promoted", weight=100, history=(*state.history, entry))
    if isinstance(action, Abort):
        entry.update(weight=0, reason=action.reason)
        return replace(state, phase="aborted", weight=0, reason=action.reason, history=(*state.history, entry))
    return state


def strategy_of(state: RolloutState) -> Strategy:
    """The strategy a persisted state was started with."""
    return strategy_from_dict(state.strategy)
