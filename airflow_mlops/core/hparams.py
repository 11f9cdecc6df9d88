"""Hyperparameter fan-out: expand a small grid into one training config per point, then pick the best. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops.core.errors import SpecError

#: Hyperparameters the reference trainer understands (``airflow_mlops.steps.train``).
TUNABLE = ("framework", "epochs", "learning_rate", "batch_size", "hidden", "seed", "fault_percent")
MAX_POINTS = 32  # each point is a training job (a GPU pod on Kubernetes): keep the fan-out deliberate
DIRECTIONS = ("maximize", "minimize")


def expand_grid(base: Mapping[str, Any], grid: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """One hyperparameter dict per grid point (``base`` overridden by the point); an empty grid is one point.

    :param base: the DAG's hyperparameters.
    :param grid: overrides, e.g. ``[{"learning_rate": 0.01}, {"learning_rate": 0.1}]``.
    """
    if grid is None or len(grid) == 0:
        return [dict(base)]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
        raise SpecError("hp_grid", "a list of objects", grid)
    if len(grid) > MAX_POINTS:
        raise SpecError("hp_grid", f"at most {MAX_POINTS} points", len(grid))
    points = []
    for i, point in enumerate(grid):
        if not isinstance(point, Mapping) or not point:
            raise SpecError(f"hp_grid[{i}]", f"a non-empty object with keys from {list(TUNABLE)}", point)
        unknown = sorted(set(point) - set(TUNABLE))
        if unknown:
            raise SpecError(f"hp_grid[{i}]", f"keys from {list(TUNABLE)}", unknown)
        merged = {**base, **point}
        if merged in points:
            raise SpecError(f"hp_grid[{i}]", "distinct points (this one repeats an earlier point)", dict(point))
        points.append(merged)
    return points


def pick_best(results: Sequence[Mapping[str, Any]], metric: str, direction: str = "maximize") -> int:
    """Index of the best training result by ``metric`` (ties: the earliest point, so the choice is stable).

    :param results: training results, each with a ``metrics`` dict.
    :param metric: the promotion policy's primary metric, e.g. ``test_accuracy``.
    :param direction: ``maximize`` or ``minimize``.
    """
    if direction not in DIRECTIONS:
        raise SpecError("direction", f"one of {list(DIRECTIONS)}", direction)
    if not results:
        raise SpecError("results", "at least one training result", results)
    scores = []
    for i, result in enumerate(results):
        metrics = (result or {}).get("metrics") or {}
        if metric not in metrics:
            raise SpecError(f"results[{i}].metrics", f"a value for {metric!r} (has {sorted(metrics)})", None)
        value = float(metrics[metric])
        scores.append(value if math.isfinite(value) else (-math.inf if direction == "maximize" else math.inf))
    best = max(scores) if direction == "maximize" else min(scores)
    return scores.index(best)
