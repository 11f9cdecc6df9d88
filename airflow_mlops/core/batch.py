"""Blue-green batch scoring: decide whether consumers switch to the candidate model's output. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_mlops.core.errors import SpecError

#: What happens when the candidate's output is not close enough to the current one.
ON_DISAGREEMENT = ("keep_current", "fail")

#: Comparison statistics the scoring step reports (see ``airflow_mlops.steps.batch_score.compare``).
STAT_KEYS = ("rows", "agreement", "mean_abs_proba_diff", "max_class_rate_shift")


def _fraction(field_name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise SpecError(field_name, "a number in [0, 1]", value)
    return float(value)


@dataclass(frozen=True)
class BatchSwitchPolicy:
    """When the candidate's batch output may replace the current one for consumers.

    Outputs are compared row by row on the same input: a retrained model that suddenly disagrees with the
    one in production on many rows is held back for a person to look at, even if its offline metrics won.

    :param min_agreement: minimum share of rows where both models predict the same class.
    :param max_mean_abs_proba_diff: maximum mean absolute difference of class probabilities.
    :param max_class_rate_shift: maximum change of any predicted class's share of rows (None: not checked).
    :param on_disagreement: ``keep_current`` (consumers keep reading the current output, task succeeds) or
        ``fail`` (the task fails after publishing the current output, so someone looks).
    """

    min_agreement: float = 0.95
    max_mean_abs_proba_diff: float = 0.10
    max_class_rate_shift: float | None = 0.05
    on_disagreement: str = "keep_current"

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_agreement", _fraction("BatchSwitchPolicy.min_agreement", self.min_agreement))
        object.__setattr__(self, "max_mean_abs_proba_diff",
                           _fraction("BatchSwitchPolicy.max_mean_abs_proba_diff", self.max_mean_abs_proba_diff))
        if self.max_class_rate_shift is not None:
            object.__setattr__(self, "max_class_rate_shift",
                               _fraction("BatchSwitchPolicy.max_class_rate_shift", self.max_class_rate_shift))
        if self.on_disagreement not in ON_DISAGREEMENT:
            raise SpecError("BatchSwitchPolicy.on_disagreement", f"one of {list(ON_DISAGREEMENT)}",
                            self.on_disagreement)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> BatchSwitchPolicy:
        """Build from a (rendered) mapping; numbers may arrive as strings from templated params."""
        unknown = sorted(set(values) - {"min_agreement", "max_mean_abs_proba_diff", "max_class_rate_shift",
                                        "on_disagreement"})
        if unknown:
            raise SpecError("BatchSwitchPolicy", "fields min_agreement, max_mean_abs_proba_diff, "
                            "max_class_rate_shift, on_disagreement", unknown)
        kwargs: dict[str, object] = {}
        for key, value in values.items():
            if key == "on_disagreement":
                kwargs[key] = value
            elif value is None or value == "" or value == "None":
                kwargs[key] = None if key == "max_class_rate_shift" else value
            else:
                try:
                    kwargs[key] = float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise SpecError(f"BatchSwitchPolicy.{key}", "a number in [0, 1]", value) from None
        return cls(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SwitchDecision:
    """What consumers read after this batch, and why."""

    publish: str  # "candidate" or "current"
    reasons: tuple[str, ...]

    @property
    def switched(self) -> bool:
        return self.publish == "candidate"


def decide_switch(stats: Mapping[str, float], policy: BatchSwitchPolicy) -> SwitchDecision:
    """Compare the step's statistics with the policy; every failed bound becomes a reason to keep current."""
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise SpecError("comparison stats", f"keys {list(STAT_KEYS)}", sorted(stats))
    if int(stats["rows"]) <= 0:
        return SwitchDecision("current", ("the batch had no rows: nothing to compare",))
    failed = []
    if stats["agreement"] < policy.min_agreement:
        failed.append(f"agreement {stats['agreement']:.4f} < min_agreement {policy.min_agreement:.4f}")
    if stats["mean_abs_proba_diff"] > policy.max_mean_abs_proba_diff:
        failed.append(f"mean |Δp| {stats['mean_abs_proba_diff']:.4f} > max_mean_abs_proba_diff "
                      f"{policy.max_mean_abs_proba_diff:.4f}")
    if policy.max_class_rate_shift is not None and stats["max_class_rate_shift"] > policy.max_class_rate_shift:
        failed.append(f"class-rate shift {stats['max_class_rate_shift']:.4f} > max_class_rate_shift "
                      f"{policy.max_class_rate_shift:.4f}")
    if failed:
        return SwitchDecision("current", tuple(failed))
    shift = "" if policy.max_class_rate_shift is None else \
        f", class-rate shift {stats['max_class_rate_shift']:.4f} <= {policy.max_class_rate_shift:.4f}"
    return SwitchDecision("candidate", (
        f"agreement {stats['agreement']:.4f} >= {policy.min_agreement:.4f}, mean |Δp| "
        f"{stats['mean_abs_proba_diff']:.4f} <= {policy.max_mean_abs_proba_diff:.4f}{shift}",))
