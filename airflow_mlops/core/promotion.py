"""Promotion policy, the challenger-vs-champion decision, alias moves and registry errors. Pure: no Airflow, no I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_mlops.core.errors import SpecError

DIRECTIONS = ("maximize", "minimize")
NO_CHAMPION = ("promote", "reject")
COMBINE = ("all", "any")
DECISION_TAG = "mlops.decision"
#: MLflow caps tag values (5000 characters on older servers): reasons are cut to fit.
MAX_TAG_VALUE = 5000


class RegistryError(Exception):
    """Base of the errors a registry operation raises with a message a person can act on."""


class UnknownModelError(RegistryError):
    """The registered model does not exist."""


class UnknownAliasError(RegistryError):
    """The alias is not set on the registered model."""


class UnknownVersionError(RegistryError):
    """The model version does not exist."""


class VersionNotReadyError(RegistryError):
    """The model version did not become READY (failed registration or timeout)."""


class MetricMissingError(RegistryError):
    """A metric the policy needs is not logged in the run; the message lists the metrics the run has."""

    def __init__(self, metric: str, role: str, run_id: str | None, available: Sequence[str]) -> None:
        self.metric = metric
        self.available = tuple(sorted(available))
        super().__init__(f"metric {metric!r} is missing from the {role} run {run_id or '?'}; the run has: "
                         f"{', '.join(self.available) or '(no metrics)'}")


class AliasConflictError(RegistryError):
    """Compare-and-swap failed: the alias no longer points where the caller expected. Nothing was moved."""

    def __init__(self, name: str, alias: str, expected: str | None, actual: str | None, detail: str = "") -> None:
        self.name, self.alias, self.expected, self.actual = name, alias, expected, actual
        super().__init__(
            f"alias {name}@{alias} points to {_version_text(actual)}, expected {_version_text(expected)}: "
            f"someone moved it since it was read{detail}. Nothing was moved; re-read and decide again.")


def _version_text(version: str | None) -> str:
    return f"version {version}" if version is not None else "no version (unset)"


@dataclass(frozen=True)
class AliasMove:
    """One completed alias move, as recorded in the registry's audit history.

    :param name: registered model name.
    :param alias: the alias that moved.
    :param version: the version it points to now.
    :param previous_version: the version it pointed to before (None if it was unset).
    :param rollback_alias: the alias now holding ``previous_version`` (None if there was no previous holder).
    :param moved_at: ISO-8601 UTC time of the move.
    :param actor: who moved it (dag run / approver).
    :param reason: why.
    """

    name: str
    alias: str
    version: str
    previous_version: str | None
    rollback_alias: str | None
    moved_at: str
    actor: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for XCom."""
        return asdict(self)


def default_rollback_alias(alias: str) -> str:
    """Where the previous holder of ``alias`` is kept: ``<alias>_previous``."""
    return f"{alias}_previous"


@dataclass(frozen=True)
class GuardMetric:
    """A metric the challenger must not make worse than the champion by more than ``tolerance``.

    :param name: metric name as logged in the run.
    :param direction: ``maximize`` (higher is better) or ``minimize``.
    :param tolerance: largest allowed regression, absolute, >= 0.
    """

    name: str
    direction: str = "maximize"
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError("GuardMetric.name", "a non-empty metric name", self.name)
        if self.direction not in DIRECTIONS:
            raise SpecError("GuardMetric.direction", f"one of {DIRECTIONS}", self.direction)
        if not _finite(self.tolerance) or self.tolerance < 0:
            raise SpecError("GuardMetric.tolerance", "a finite number >= 0", self.tolerance)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger may replace the champion. Validated on construction.

    :param primary_metric: the metric that decides, as logged in the run (e.g. ``test_accuracy``).
    :param direction: ``maximize`` or ``minimize`` the primary metric.
    :param min_improvement: required absolute improvement over the champion (>= 0); ``0`` accepts a tie.
    :param min_relative_improvement: required improvement as a fraction of the champion's value (>= 0), e.g. 0.01.
    :param combine: with both thresholds set, whether ``all`` or ``any`` of them must hold. With neither set the
        challenger must be strictly better.
    :param guards: metrics that must not regress beyond their tolerance.
    :param required_checks: check names whose verdict must be ``passed`` (e.g. ``data_checks``, ``model_checks``).
    :param no_champion: ``promote`` or ``reject`` when there is no champion yet.
    :param min_value: optional floor (maximize) / ceiling (minimize) the primary metric must meet, champion or not.
    """

    primary_metric: str
    direction: str = "maximize"
    min_improvement: float | None = None
    min_relative_improvement: float | None = None
    combine: str = "all"
    guards: tuple[GuardMetric, ...] = ()
    required_checks: tuple[str, ...] = ()
    no_champion: str = "promote"
    min_value: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.primary_metric, str) or not self.primary_metric.strip():
            raise SpecError("PromotionPolicy.primary_metric", "a non-empty metric name", self.primary_metric)
        if self.direction not in DIRECTIONS:
            raise SpecError("PromotionPolicy.direction", f"one of {DIRECTIONS}", self.direction)
        for name in ("min_improvement", "min_relative_improvement"):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value < 0):
                raise SpecError(f"PromotionPolicy.{name}", "a finite number >= 0, or None", value)
        if self.combine not in COMBINE:
            raise SpecError("PromotionPolicy.combine", f"one of {COMBINE}", self.combine)
        if self.combine == "any" and (self.min_improvement is None or self.min_relative_improvement is None):
            raise SpecError("PromotionPolicy.combine", "'any' only together with both min_improvement and "
                            "min_relative_improvement (with one threshold there is nothing to combine)", self.combine)
        if self.no_champion not in NO_CHAMPION:
            raise SpecError("PromotionPolicy.no_champion", f"one of {NO_CHAMPION}", self.no_champion)
        if self.min_value is not None and not _finite(self.min_value):
            raise SpecError("PromotionPolicy.min_value", "a finite number or None", self.min_value)
        guards = tuple(g if isinstance(g, GuardMetric) else GuardMetric(**g) for g in self.guards)
        object.__setattr__(self, "guards", guards)
        seen: set[str] = set()
        for i, guard in enumerate(guards):
            if guard.name in seen:
                raise SpecError(f"PromotionPolicy.guards[{i}].name", "each guard metric once", guard.name)
            seen.add(guard.name)
            if guard.name == self.primary_metric and guard.direction != self.direction:
                raise SpecError(f"PromotionPolicy.guards[{i}].direction",
                                f"the primary metric's direction {self.direction!r} (a guard on the primary metric "
                                "cannot optimise the other way)", guard.direction)
        checks = tuple(self.required_checks)
        if any(not isinstance(c, str) or not c.strip() for c in checks) or len(set(checks)) != len(checks):
            raise SpecError("PromotionPolicy.required_checks", "distinct non-empty check names", checks)
        object.__setattr__(self, "required_checks", checks)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PromotionPolicy:
        """Build from a dict (DAG params / JSON), naming unknown keys."""
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpecError("PromotionPolicy", f"keys among {sorted(allowed)}", unknown)
        values = dict(data)
        values["guards"] = tuple(GuardMetric(**g) if isinstance(g, Mapping) else g for g in values.get("guards") or ())
        values["required_checks"] = tuple(values.get("required_checks") or ())
        for key in ("min_improvement", "min_relative_improvement", "min_value"):
            if values.get(key) in ("", None):
                values[key] = None
            elif isinstance(values[key], str):
                try:
                    values[key] = float(values[key])
                except ValueError:
                    raise SpecError(f"PromotionPolicy.{key}", "a number", values[key]) from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe: lists, not tuples) for XCom and tags."""
        return dict(json.loads(json.dumps(asdict(self))))

    def metrics_needed(self) -> tuple[str, ...]:
        """Every metric the policy reads."""
        return (self.primary_metric, *(g.name for g in self.guards if g.name != self.primary_metric))


@dataclass(frozen=True)
class Candidate:
    """A model version with the metrics of the run that produced it.

    :param version: model version number.
    :param metrics: metric name -> value.
    :param run_id: the run the metrics come from (for error messages).
    """

    version: str
    metrics: Mapping[str, float]
    run_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome of comparing a challenger with the champion, and every reason behind it.

    :param promote: whether the challenger may be promoted.
    :param reasons: one line per rule evaluated, failing rules first.
    :param challenger_version: the challenger.
    :param champion_version: the champion, or None when there is none.
    :param primary: challenger/champion value, absolute and relative improvement of the primary metric.
    :param policy: the policy that decided, as a dict.
    """

    promote: bool
    reasons: tuple[str, ...]
    challenger_version: str
    champion_version: str | None
    primary: Mapping[str, float | None] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for XCom."""
        return {"promote": self.promote, "reasons": list(self.reasons), "challenger_version": self.challenger_version,
                "champion_version": self.champion_version, "primary": dict(self.primary), "policy": dict(self.policy)}

    def to_tags(self) -> dict[str, str]:
        """Tags for the challenger version: the verdict, the reasons and the champion it was compared with."""
        reasons = "\n".join(self.reasons)
        return {
            DECISION_TAG: "promote" if self.promote else "reject",
            f"{DECISION_TAG}.reasons": reasons[:MAX_TAG_VALUE],
            f"{DECISION_TAG}.champion_version": self.champion_version or "none",
            f"{DECISION_TAG}.policy": json.dumps(self.policy, sort_keys=True, default=str)[:MAX_TAG_VALUE],
        }


def improvement(policy_direction: str, challenger: float, champion: float) -> tuple[float, float]:
    """(absolute, relative) improvement of challenger over champion; positive is better in either direction.

    Relative is against ``|champion|``; with a zero champion it is +inf/-inf/0 by the sign of the change.
    """
    delta = challenger - champion if policy_direction == "maximize" else champion - challenger
    if champion != 0:
        return delta, delta / abs(champion)
    return delta, (math.inf if delta > 0 else -math.inf if delta < 0 else 0.0)


def _metric(candidate: Candidate, name: str, role: str) -> float:
    if name not in candidate.metrics or candidate.metrics[name] is None:
        raise MetricMissingError(name, role, candidate.run_id, list(candidate.metrics))
    return float(candidate.metrics[name])


def decide(policy: PromotionPolicy, challenger: Candidate, champion: Candidate | None,
           check_verdicts: Mapping[str, bool | None] | None = None) -> Decision:
    """Evaluate ``policy`` for ``challenger`` against ``champion`` (None: no champion yet).

    Raises MetricMissingError when either run lacks a metric the policy reads.

    :param check_verdicts: check name -> passed (None or absent: no verdict).
    """
    verdicts = dict(check_verdicts or {})
    failed: list[str] = []
    passed: list[str] = []
    value = _metric(challenger, policy.primary_metric, "challenger")
    guard_values = {g.name: _metric(challenger, g.name, "challenger") for g in policy.guards}
    primary: dict[str, float | None] = {"challenger": value, "champion": None, "improvement": None,
                                        "relative_improvement": None}
    metric = policy.primary_metric
    if math.isnan(value):
        failed.append(f"challenger {metric} is NaN")
    for check in policy.required_checks:
        verdict = verdicts.get(check)
        if verdict is True:
            passed.append(f"check {check} passed")
        elif verdict is False:
            failed.append(f"required check {check} failed")
        else:
            failed.append(f"required check {check} has no verdict")
    if policy.min_value is not None:
        meets = value >= policy.min_value if policy.direction == "maximize" else value <= policy.min_value
        bound = ">=" if policy.direction == "maximize" else "<="
        (passed if meets else failed).append(f"{metric} {value:.6g} {'meets' if meets else 'misses'} "
                                             f"{bound} {policy.min_value:.6g}")
    if champion is None:
        if policy.no_champion == "promote":
            passed.append("no champion yet: policy promotes the first version that passes")
        else:
            failed.append("no champion yet: policy no_champion=reject")
    else:
        base = _metric(champion, metric, "champion")
        delta, relative = improvement(policy.direction, value, base)
        primary.update(champion=base, improvement=delta, relative_improvement=relative)
        rules: list[tuple[bool, str]] = []
        if policy.min_improvement is None and policy.min_relative_improvement is None:
            rules.append((delta > 0, f"{metric} {value:.6g} vs champion {base:.6g}: improvement {delta:+.6g} "
                                     f"must be > 0"))
        if policy.min_improvement is not None:
            rules.append((delta >= policy.min_improvement,
                          f"{metric} {value:.6g} vs champion {base:.6g}: improvement {delta:+.6g} "
                          f"must be >= {policy.min_improvement:.6g}"))
        if policy.min_relative_improvement is not None:
            rules.append((relative >= policy.min_relative_improvement,
                          f"{metric} relative improvement {relative:+.4%} must be >= "
                          f"{policy.min_relative_improvement:.4%}"))
        ok = any(r for r, _ in rules) if policy.combine == "any" else all(r for r, _ in rules)
        for r, text in rules:
            (passed if r else failed if policy.combine == "all" else passed).append(
                f"{text}: {'ok' if r else 'not met'}")
        if not ok and policy.combine == "any":
            failed.append(f"{metric}: none of the improvement thresholds met")
        for guard in policy.guards:
            current = guard_values[guard.name]
            previous = _metric(champion, guard.name, "champion")
            regression = -improvement(guard.direction, current, previous)[0]
            text = (f"guard {guard.name} {current:.6g} vs champion {previous:.6g}: regression {regression:+.6g} "
                    f"(tolerance {guard.tolerance:.6g})")
            (passed if regression <= guard.tolerance else failed).append(text)
    return Decision(promote=not failed, reasons=tuple(failed + passed), challenger_version=challenger.version,
                    champion_version=champion.version if champion else None, primary=primary,
                    policy=policy.to_dict())


@dataclass(frozen=True)
class RegistryWait:
    """What a registry sensor waits for: a new version of a model, or an alias on a version meeting a condition.

    :param model_name: registered model name.
    :param alias: wait for this alias (None: wait for a new version).
    :param newer_than: the version must be numerically greater than this one (None: any version).
    :param required_tags: tags the version must carry with exactly these values, e.g. ``{"mlops.decision": "promote"}``.
    """

    model_name: str
    alias: str | None = None
    newer_than: str | None = None
    required_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model_name:
            raise SpecError("RegistryWait.model_name", "a registered model name", self.model_name)
        if self.newer_than is not None and not str(self.newer_than).isdigit():
            raise SpecError("RegistryWait.newer_than", "a version number or None", self.newer_than)
        if self.required_tags and self.alias is None:
            raise SpecError("RegistryWait.required_tags", "only with an alias (tags are checked on the version the "
                            "alias points to)", dict(self.required_tags))
        object.__setattr__(self, "required_tags", dict(self.required_tags))

    def describe(self) -> str:
        """What is awaited, in words."""
        newer = f" newer than v{self.newer_than}" if self.newer_than is not None else ""
        if self.alias is None:
            return f"a version of {self.model_name}{newer}"
        tags = f" tagged {dict(self.required_tags)}" if self.required_tags else ""
        return f"{self.model_name}@{self.alias} on a version{newer}{tags}"

    def evaluate(self, state: Mapping[str, Any]) -> tuple[bool, str]:
        """(met, what was seen) for a registry state ``{exists, latest_version, alias_version, alias_tags}``."""
        if not state.get("exists"):
            return False, f"model {self.model_name} does not exist yet"
        newer = int(self.newer_than) if self.newer_than is not None else None
        if self.alias is None:
            latest = state.get("latest_version")
            seen = f"latest version v{latest}" if latest is not None else "no versions yet"
            return latest is not None and (newer is None or int(latest) > newer), seen
        version = state.get("alias_version")
        if version is None:
            return False, f"{self.model_name}@{self.alias} is unset"
        tags = state.get("alias_tags") or {}
        shown = {k: tags.get(k) for k in self.required_tags}
        seen = f"{self.model_name}@{self.alias} -> v{version}" + (f" with tags {shown}" if shown else "")
        met = (newer is None or int(version) > newer) and all(tags.get(k) == v for k, v in self.required_tags.items())
        return met, seen
