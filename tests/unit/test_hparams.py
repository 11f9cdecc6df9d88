"""Hyperparameter grid expansion and best-run selection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.hparams import MAX_POINTS, expand_grid, pick_best

BASE = {"framework": "sklearn", "epochs": 20, "learning_rate": 0.01}


def test_empty_grid_is_the_base_point() -> None:
    assert expand_grid(BASE, []) == [BASE] and expand_grid(BASE, None) == [BASE]


def test_points_override_the_base() -> None:
    assert expand_grid(BASE, [{"learning_rate": 0.1}, {"epochs": 5, "seed": 1}]) == [
        {**BASE, "learning_rate": 0.1}, {**BASE, "epochs": 5, "seed": 1}]


@pytest.mark.parametrize(("grid", "field"), [
    ([{"learnin_rate": 0.1}], "hp_grid[0]"),
    ([{}], "hp_grid[0]"),
    ([{"epochs": 5}, {"epochs": 5}], "hp_grid[1]"),
    ([{"seed": i} for i in range(MAX_POINTS + 1)], "hp_grid"),
    ("lr=0.1", "hp_grid"),
])
def test_bad_grids_name_the_point(grid: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        expand_grid(BASE, grid)  # type: ignore[arg-type]
    assert err.value.field == field


def test_pick_best_by_direction_and_stable_ties() -> None:
    results = [{"metrics": {"acc": 0.9, "loss": 0.3}}, {"metrics": {"acc": 0.95, "loss": 0.2}},
               {"metrics": {"acc": 0.95, "loss": 0.1}}]
    assert pick_best(results, "acc") == 1
    assert pick_best(results, "loss", "minimize") == 2
    with pytest.raises(SpecError, match=r"a value for 'f1' \(has \['acc', 'loss'\]\)"):
        pick_best(results, "f1")
    with pytest.raises(SpecError, match="direction"):
        pick_best(results, "acc", "max")


@given(st.lists(st.floats(allow_nan=True, allow_infinity=False), min_size=1, max_size=10),
       st.sampled_from(["maximize", "minimize"]))
def test_pick_best_agrees_with_reference(values: list[float], direction: str) -> None:
    index = pick_best([{"metrics": {"m": v}} for v in values], "m", direction)
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        assert index == 0
        return
    target = max(finite) if direction == "maximize" else min(finite)
    assert values[index] == target and index == values.index(target)
