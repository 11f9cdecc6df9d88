"""Approve a rollout waiting at an approval gate (blue-green without auto_promote, approval_before_promote)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow_mlops.core.rollout import RolloutState


def approve_rollout(target_config: Mapping[str, Any], candidate: str, approver: str) -> RolloutState:
    """Mark the rollout of ``candidate`` at the target as approved; its trigger sees it on its next poll.

    :param target_config: the target's config, as given to the rollout operator.
    :param candidate: the version the approver means (guards against approving another rollout).
    :param approver: who approves, recorded in the rollout's history.
    """
    import time

    from airflow_mlops.rollout.targets import make_target

    target = make_target(target_config)
    state = target.load_state()
    if state is None or state.phase != "progressing" or state.candidate != str(candidate):
        raise ValueError(f"no rollout of version {candidate} in progress at {target.describe()} "
                         f"(found: {state.candidate if state else None}, {state.phase if state else 'nothing'})")
    state = replace(state, approved=True,
                    history=(*state.history, {"at": time.time(), "action": "Approve", "by": approver,
                                              "weight": state.weight, "step": state.step}))
    target.save_state(state)
    return state
