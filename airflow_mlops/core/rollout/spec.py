"""Rollout strategy specs (canary, blue-green) and analysis specs: frozen values validated on construction."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout.conditions import Condition

PROVIDERS = ("router", "prometheus", "cloudwatch", "http_probe")
ON_INCONCLUSIVE = ("abort", "continue")
ANALYSIS_MODES = ("step", "background")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Names a condition may read: the candidate's value and the stable baseline's.
CANDIDATE_NAMES = ("result", "canary")
BASELINE_NAME = "stable"


def _positive(field_name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field_name, "a finite number of seconds", value)
    if value < 0 or (value == 0 and not allow_zero):
        raise SpecError(field_name, "a number of seconds >= 0" if allow_zero else "a number of seconds > 0", value)
    return float(value)


def _int(field_name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(field_name, f"an integer >= {minimum}", value)
    return value


@dataclass(frozen=True)
class MetricCheck:
    """One metric of an analysis: what to query, how to judge it, how often and how many times.

    :param name: identifier of the metric (letters, digits, underscore), used in logs and records.
    :param provider: where the value comes from: router | prometheus | cloudwatch | http_probe.
    :param query: the provider's query template; ``{backend}``, ``{version}``, ``{model}``, ``{window}``,
        ``{role}`` are filled in per measurement (the candidate, and the stable version for baselines).
    :param success_condition: holds when the measurement is good, e.g. ``result <= stable * 1.5 + 0.005``.
    :param failure_condition: holds when the measurement is bad, e.g. ``result > 0.2``.
    :param interval_s: seconds between measurements (each measurement covers the last interval).
    :param count: measurements per analysis run (per step; minimum in background mode).
    :param failure_limit: failed measurements tolerated; one more fails the analysis (Argo's failureLimit).
    :param inconclusive_limit: inconclusive measurements (no data, provider unreachable) tolerated.
    :param params: provider options (e.g. CloudWatch namespace/dimensions, probe payload).
    """

    name: str
    provider: str
    query: str
    success_condition: str | None = None
    failure_condition: str | None = None
    interval_s: float = 10.0
    count: int = 3
    failure_limit: int = 0
    inconclusive_limit: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError("MetricCheck.name", "an identifier of letters, digits and '_' (max 63)", self.name)
        where = f"MetricCheck[{self.name}]"
        if self.provider not in PROVIDERS:
            raise SpecError(f"{where}.provider", f"one of {PROVIDERS}", self.provider)
        if not isinstance(self.query, str) or not self.query.strip():
            raise SpecError(f"{where}.query", "a non-empty query template", self.query)
        if self.success_condition is None and self.failure_condition is None:
            raise SpecError(f"{where}.success_condition", "a success_condition and/or a failure_condition", None)
        allowed = {*CANDIDATE_NAMES, BASELINE_NAME}
        for attr in ("success_condition", "failure_condition"):
            text = getattr(self, attr)
            if text is None:
                continue
            cond = Condition.parse(text, f"{where}.{attr}")
            unknown = sorted(cond.names - allowed)
            if unknown:
                raise SpecError(f"{where}.{attr}", f"a condition over {sorted(allowed)}", f"{text!r} reads {unknown}")
        object.__setattr__(self, "interval_s", _positive(f"{where}.interval_s", self.interval_s))
        _int(f"{where}.count", self.count, 1)
        _int(f"{where}.failure_limit", self.failure_limit, 0)
        _int(f"{where}.inconclusive_limit", self.inconclusive_limit, 0)
        if not isinstance(self.params, Mapping):
            raise SpecError(f"{where}.params", "a mapping of provider options", self.params)
        if self.provider == "http_probe" and not isinstance(self.params.get("payload"), Mapping):
            # No default: a probe body must match the served model's signature (its named columns), and only the
            # caller knows them; InputContract.request_body() in airflow_mlops.steps.signature builds one.
            raise SpecError(f"{where}.params.payload",
                            "a scoring request matching the model's signature, e.g. {'dataframe_split': "
                            "{'columns': [...], 'data': [[...]]}}", self.params.get("payload"))
        object.__setattr__(self, "params", dict(self.params))

    @property
    def success(self) -> Condition | None:
        """The parsed success condition."""
        return None if self.success_condition is None else Condition.parse(self.success_condition)

    @property
    def failure(self) -> Condition | None:
        """The parsed failure condition."""
        return None if self.failure_condition is None else Condition.parse(self.failure_condition)

    @property
    def needs_baseline(self) -> bool:
        """Whether a measurement also queries the stable version (a condition reads ``stable``)."""
        return any(c is not None and BASELINE_NAME in c.names for c in (self.success, self.failure))

    @property
    def window_s(self) -> float:
        """Seconds one analysis run takes: count x interval."""
        return self.count * self.interval_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "provider": self.provider, "query": self.query,
                "success_condition": self.success_condition, "failure_condition": self.failure_condition,
                "interval_s": self.interval_s, "count": self.count, "failure_limit": self.failure_limit,
                "inconclusive_limit": self.inconclusive_limit, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricCheck:
        """Build from a dict (DAG params, JSON); unknown keys are errors."""
        return cls(**_known(cls, "MetricCheck", data))


@dataclass(frozen=True)
class AnalysisSpec:
    """A set of metric checks judged together; the worst metric decides.

    :param metrics: the checks (names unique).
    :param on_inconclusive: policy when a metric exceeds its inconclusive_limit: ``abort`` (roll back; the
        default, as SageMaker guardrails do) or ``continue`` (count the analysis as passed).
    """

    metrics: tuple[MetricCheck, ...]
    on_inconclusive: str = "abort"

    def __post_init__(self) -> None:
        metrics = tuple(m if isinstance(m, MetricCheck) else MetricCheck.from_dict(m) for m in self.metrics)
        if not metrics:
            raise SpecError("AnalysisSpec.metrics", "at least one MetricCheck", self.metrics)
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise SpecError("AnalysisSpec.metrics", "unique metric names", names)
        if self.on_inconclusive not in ON_INCONCLUSIVE:
            raise SpecError("AnalysisSpec.on_inconclusive", f"one of {ON_INCONCLUSIVE}", self.on_inconclusive)
        object.__setattr__(self, "metrics", metrics)

    @property
    def window_s(self) -> float:
        """Seconds the slowest metric needs for one analysis run."""
        return max(m.window_s for m in self.metrics)

    def metric(self, name: str) -> MetricCheck:
        """The metric called ``name``."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"metrics": [m.to_dict() for m in self.metrics], "on_inconclusive": self.on_inconclusive}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisSpec:
        """Build from a dict (DAG params, JSON)."""
        data = _known(cls, "AnalysisSpec", data)
        return cls(metrics=tuple(MetricCheck.from_dict(m) for m in data.get("metrics", ())),
                   on_inconclusive=data.get("on_inconclusive", "abort"))


@dataclass(frozen=True)
class PlanStep:
    """One step of the plan the engine walks: a candidate weight, a dwell time, its analysis, an approval gate.

    :param weight: the candidate's share of traffic in percent (0 = preview only, blue-green).
    :param pause_s: minimum seconds at this weight.
    :param analysis: analysis run during this step.
    :param approval: a person must approve before leaving this step.
    """

    weight: int
    pause_s: float
    analysis: AnalysisSpec | None = None
    approval: bool = False


@dataclass(frozen=True)
class CanaryStrategy:
    """Shift traffic to the candidate in steps, with a pause and analysis at each step.

    :param steps: candidate weights in percent, strictly increasing within (0, 100], ending at 100.
    :param pause_s: seconds at each step: one number for all steps, or one per step (each > 0).
    :param analysis: analysis judged at each step (``analysis_mode="step"``: every step's pause must cover
        count x interval) or over the whole rollout (``"background"``).
    :param analysis_mode: ``step`` or ``background``.
    :param approval_before_promote: a person approves before the candidate becomes stable.
    """

    steps: tuple[int, ...] = (5, 25, 50, 100)
    pause_s: float | tuple[float, ...] = 60.0
    analysis: AnalysisSpec | None = None
    analysis_mode: str = "step"
    approval_before_promote: bool = False

    kind = "canary"

    def __post_init__(self) -> None:
        steps = tuple(self.steps) if isinstance(self.steps, Sequence) and not isinstance(self.steps, str) else None
        if not steps:
            raise SpecError("CanaryStrategy.steps", "a non-empty list of weights ending at 100", self.steps)
        for i, w in enumerate(steps):
            if isinstance(w, bool) or not isinstance(w, int) or not 0 < w <= 100:
                raise SpecError(f"CanaryStrategy.steps[{i}]", "an integer weight in (0, 100]", w)
            if i and w <= steps[i - 1]:
                raise SpecError(f"CanaryStrategy.steps[{i}]", f"a weight greater than the previous step "
                                f"({steps[i - 1]}): weights strictly increase", w)
        if steps[-1] != 100:
            raise SpecError(f"CanaryStrategy.steps[{len(steps) - 1}]", "100 (the last step sends all traffic)",
                            steps[-1])
        if isinstance(self.pause_s, (list, tuple)):
            if len(self.pause_s) != len(steps):
                raise SpecError("CanaryStrategy.pause_s", f"one number, or one per step ({len(steps)})",
                                self.pause_s)
            pauses = tuple(_positive(f"CanaryStrategy.pause_s[{i}]", p) for i, p in enumerate(self.pause_s))
        else:
            pauses = (_positive("CanaryStrategy.pause_s", self.pause_s),) * len(steps)
        analysis = self.analysis
        if isinstance(analysis, Mapping):
            analysis = AnalysisSpec.from_dict(analysis)
        if analysis is not None and not isinstance(analysis, AnalysisSpec):
            raise SpecError("CanaryStrategy.analysis", "an AnalysisSpec or None", analysis)
        if self.analysis_mode not in ANALYSIS_MODES:
            raise SpecError("CanaryStrategy.analysis_mode", f"one of {ANALYSIS_MODES}", self.analysis_mode)
        if analysis is not None and self.analysis_mode == "step":
            for i, pause in enumerate(pauses):
                if pause < analysis.window_s:
                    raise SpecError(f"CanaryStrategy.pause_s[{i}]", f"at least the analysis window "
                                    f"{analysis.window_s:g}s (count x interval): a shorter pause takes no samples",
                                    pause)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "pause_s", pauses if isinstance(self.pause_s, (list, tuple)) else pauses[0])
        object.__setattr__(self, "analysis", analysis)

    @property
    def pauses(self) -> tuple[float, ...]:
        """The pause of each step."""
        return self.pause_s if isinstance(self.pause_s, tuple) else (float(self.pause_s),) * len(self.steps)

    @property
    def background(self) -> AnalysisSpec | None:
        """The analysis that runs across all steps, if any."""
        return self.analysis if self.analysis_mode == "background" else None

    def plan(self) -> tuple[PlanStep, ...]:
        """The steps the engine walks."""
        per_step = self.analysis if self.analysis_mode == "step" else None
        last = len(self.steps) - 1
        return tuple(PlanStep(w, p, per_step, approval=self.approval_before_promote and i == last)
                     for i, (w, p) in enumerate(zip(self.steps, self.pauses, strict=True)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": self.kind, "steps": list(self.steps),
                "pause_s": list(self.pause_s) if isinstance(self.pause_s, tuple) else self.pause_s,
                "analysis": self.analysis.to_dict() if self.analysis else None, "analysis_mode": self.analysis_mode,
                "approval_before_promote": self.approval_before_promote}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryStrategy:
        """Build from a dict (DAG params, JSON)."""
        data = {k: v for k, v in _known(cls, "CanaryStrategy", data, extra=("kind",)).items() if k != "kind"}
        if isinstance(data.get("steps"), list):
            data["steps"] = tuple(data["steps"])
        if isinstance(data.get("pause_s"), list):
            data["pause_s"] = tuple(data["pause_s"])
        if isinstance(data.get("analysis"), Mapping):
            data["analysis"] = AnalysisSpec.from_dict(data["analysis"])
        return cls(**data)


@dataclass(frozen=True)
class BlueGreenStrategy:
    """Bring the candidate up beside the stable version, analyse the preview, switch all traffic at once.

    :param preview_pause_s: seconds the preview runs (with no live traffic) before the switch (> 0).
    :param preview_analysis: analysis of the preview (e.g. an HTTP probe); its window must fit the pause.
    :param auto_promote: switch automatically when the preview passes; False waits for an approval.
    :param scale_down_delay_s: seconds the previous version keeps running after the switch (fast rollback).
    :param post_promotion_analysis: analysis after the switch, within the scale-down delay; failing it
        switches back.
    :param keep_previous: keep the previous version deployed (scaled down) for rollback after completion.
    """

    preview_pause_s: float = 30.0
    preview_analysis: AnalysisSpec | None = None
    auto_promote: bool = True
    scale_down_delay_s: float = 30.0
    post_promotion_analysis: AnalysisSpec | None = None
    keep_previous: bool = True

    kind = "blue_green"

    def __post_init__(self) -> None:
        pause = _positive("BlueGreenStrategy.preview_pause_s", self.preview_pause_s)
        delay = _positive("BlueGreenStrategy.scale_down_delay_s", self.scale_down_delay_s)
        for attr, window_attr, seconds in (("preview_analysis", "preview_pause_s", pause),
                                           ("post_promotion_analysis", "scale_down_delay_s", delay)):
            value = getattr(self, attr)
            if isinstance(value, Mapping):
                value = AnalysisSpec.from_dict(value)
                object.__setattr__(self, attr, value)
            if value is not None and not isinstance(value, AnalysisSpec):
                raise SpecError(f"BlueGreenStrategy.{attr}", "an AnalysisSpec or None", value)
            if value is not None and seconds < value.window_s:
                raise SpecError(f"BlueGreenStrategy.{window_attr}", f"at least the {attr} window "
                                f"{value.window_s:g}s (count x interval)", seconds)
        for attr in ("auto_promote", "keep_previous"):
            if not isinstance(getattr(self, attr), bool):
                raise SpecError(f"BlueGreenStrategy.{attr}", "true or false", getattr(self, attr))
        object.__setattr__(self, "preview_pause_s", pause)
        object.__setattr__(self, "scale_down_delay_s", delay)

    @property
    def steps(self) -> tuple[int, ...]:
        """Candidate weights: preview (0), then all traffic (100)."""
        return (0, 100)

    @property
    def background(self) -> AnalysisSpec | None:
        """Blue-green has no background analysis."""
        return None

    def plan(self) -> tuple[PlanStep, ...]:
        """Preview (weight 0, gated by approval unless auto_promote), then the switch (weight 100)."""
        return (PlanStep(0, self.preview_pause_s, self.preview_analysis, approval=not self.auto_promote),
                PlanStep(100, self.scale_down_delay_s, self.post_promotion_analysis))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": self.kind, "preview_pause_s": self.preview_pause_s,
                "preview_analysis": self.preview_analysis.to_dict() if self.preview_analysis else None,
                "auto_promote": self.auto_promote, "scale_down_delay_s": self.scale_down_delay_s,
                "post_promotion_analysis": (self.post_promotion_analysis.to_dict()
                                            if self.post_promotion_analysis else None),
                "keep_previous": self.keep_previous}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlueGreenStrategy:
        """Build from a dict (DAG params, JSON)."""
        data = {k: v for k, v in _known(cls, "BlueGreenStrategy", data, extra=("kind",)).items() if k != "kind"}
        return cls(**data)


Strategy = CanaryStrategy | BlueGreenStrategy
STRATEGY_KINDS = ("canary", "blue_green")


def strategy_from_dict(data: Mapping[str, Any]) -> Strategy:
    """A strategy from its dict form; ``kind`` selects canary or blue_green."""
    if not isinstance(data, Mapping):
        raise SpecError("strategy", "a mapping with kind = canary | blue_green", data)
    kind = data.get("kind", "canary")
    if kind == "canary":
        return CanaryStrategy.from_dict(data)
    if kind == "blue_green":
        return BlueGreenStrategy.from_dict(data)
    raise SpecError("strategy.kind", f"one of {STRATEGY_KINDS}", kind)


def _known(cls: type, name: str, data: Mapping[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise SpecError(name, "a mapping of its fields", data)
    allowed = {f for f in cls.__dataclass_fields__} | set(extra)  # type: ignore[attr-defined]
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{name}.{unknown[0]}", f"one of the fields {sorted(allowed)}", unknown[0])
    return dict(data)
