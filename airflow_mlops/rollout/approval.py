"""Approve or reject a rollout waiting at an approval gate (blue-green with ``auto_promote=False``).

The rollout's trigger polls the target's persisted state: an approval lets the engine switch traffic, a rejection
makes it abort (the stable version keeps 100%). Both are recorded in the rollout's history with who decided.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow_mlops.core.rollout import RolloutState


class NoRolloutWaiting(ValueError):
    """No rollout of that version is in progress at the target (finished, rolled back, or another version)."""


def _waiting(target_config: Mapping[str, Any], candidate: str) -> tuple[Any, RolloutState]:
    from airflow_mlops.rollout.targets import make_target

    target = make_target(target_config)
    state = target.load_state()
    if state is None or state.phase != "progressing" or state.candidate != str(candidate):
        raise NoRolloutWaiting(f"no rollout of version {candidate} in progress at {target.describe()} "
                               f"(found: {state.candidate if state else None}, "
                               f"{state.phase if state else 'nothing'})")
    return target, state


def approve_rollout(target_config: Mapping[str, Any], candidate: str, approver: str) -> RolloutState:
    """Mark the rollout of ``candidate`` at the target as approved; its trigger sees it on its next poll.

    :param target_config: the target's config, as given to the rollout operator.
    :param candidate: the version the approver means (guards against approving another rollout).
    :param approver: who approves, recorded in the rollout's history.
    """
    target, state = _waiting(target_config, candidate)
    state = replace(state, approved=True,
                    history=(*state.history, {"at": time.time(), "action": "Approve", "by": approver,
                                              "weight": state.weight, "step": state.step}))
    target.save_state(state)
    return state


def reject_rollout(target_config: Mapping[str, Any], candidate: str, approver: str,
                   why: str | None = None) -> RolloutState:
    """Reject the rollout of ``candidate`` at its approval gate: the engine aborts it (stable gets 100%).

    :param why: the reason given, recorded with the rejection.
    """
    target, state = _waiting(target_config, candidate)
    state = replace(state, approved=False,
                    history=(*state.history, {"at": time.time(), "action": "Reject", "by": approver,
                                              "weight": state.weight, "step": state.step, "why": why or ""}))
    target.save_state(state)
    return state
