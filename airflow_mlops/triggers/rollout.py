"""The rollout trigger: waits out pauses and takes analysis measurements in the triggerer, never in a worker.

It runs the same engine as the operator but applies only the passive actions (Pause, Analyse, AwaitApproval).
Anything that changes traffic (set weight, promote, abort) is handed back to the worker with an event, so
measurements land in the target's persisted state and a failing analysis wakes the worker at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

PROGRESS_EVERY_S = 60.0


class RolloutTrigger(BaseTrigger):
    """Fires ``{"status": "act", "action": ...}`` when the worker has traffic to change, ``"ready"`` when the
    candidate answers (``wait_ready``), or ``"error"`` (lost ownership, readiness timeout).

    :param target: the target's JSON config (rebuilt here with ``make_target``).
    :param owner: the rollout owner the persisted state must name.
    :param analysis_settings: provider settings (Prometheus URL, AWS options), merged with the target's.
    :param wait_ready: wait for the candidate to answer instead of walking the plan.
    :param deadline: epoch seconds after which readiness waiting gives up.
    :param poll_s: seconds between readiness / approval polls.
    :param on_kill: ``rollback`` (default) or ``leave`` when the task is killed while deferred here.
    :param wait_settled: wait until the target can take a traffic change (``settled()``), then hand back.
    :param stop_at_approval: hand an approval gate back to the worker (whose task then ends, and a
        human-in-the-loop task asks) instead of waiting here for ``approve_rollout``.
    """

    def __init__(self, target: Mapping[str, Any], owner: str, analysis_settings: Mapping[str, Any] | None = None,
                 wait_ready: bool = False, deadline: float | None = None, poll_s: float = 0.5,
                 on_kill: str = "rollback", stop_at_approval: bool = False, wait_settled: bool = False) -> None:
        super().__init__()
        self.wait_settled = wait_settled
        self.stop_at_approval = stop_at_approval
        self.target = dict(target)
        self.owner = owner
        self.analysis_settings = dict(analysis_settings or {})
        self.wait_ready = wait_ready
        self.deadline = deadline
        self.poll_s = poll_s
        self.on_kill_policy = on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"target": self.target, "owner": self.owner, "analysis_settings": self.analysis_settings,
                 "wait_ready": self.wait_ready, "deadline": self.deadline, "poll_s": self.poll_s,
                 "on_kill": self.on_kill_policy, "stop_at_approval": self.stop_at_approval,
                 "wait_settled": self.wait_settled})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Any failure here (a target API error, a router that will not start) must reach the worker as an event:
        # an exception would resume the task with a deferral error that skips its rollback.
        try:
            async for event in self._run():
                yield event
                return
        except Exception as err:
            self.log.exception("rollout trigger failed")
            yield TriggerEvent({"status": "error", "message": f"rollout trigger failed: {err!r}"})

    async def on_kill(self) -> None:
        """The task was killed while deferred here (mark failed, clear): roll back, as the operator's on_kill would.

        Most of a rollout's time is spent in this trigger, so this, not the operator's ``on_kill``, is what usually
        runs when a person stops it. Only a rollout this task owns and that is still progressing is touched.
        """
        from airflow_mlops.core.rollout import Abort, applied
        from airflow_mlops.rollout.targets import make_target

        if self.on_kill_policy != "rollback":
            return
        target = await asyncio.to_thread(make_target, self.target)
        state = await asyncio.to_thread(target.read_state)
        if state is None or state.owner != self.owner or state.phase != "progressing":
            return
        self.log.warning("task killed while deferred: rolling %s back to v%s", state.model, state.stable)
        aborted = applied(state, Abort("task killed while deferred (on_kill=rollback)"), time.time())
        await asyncio.wait_for(asyncio.to_thread(target.rollback, aborted), timeout=300)

    async def _run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_mlops.core.rollout import Analyse, AwaitApproval, Pause, applied, decide, strategy_of
        from airflow_mlops.rollout.analysis import make_provider, measure
        from airflow_mlops.rollout.targets import make_target

        started = time.time()
        target = await asyncio.to_thread(make_target, self.target)
        last_progress = started
        while True:
            state = await asyncio.to_thread(target.read_state)
            if state is None or state.owner != self.owner:
                yield TriggerEvent({"status": "error", "waited_s": time.time() - started,
                                    "message": f"rollout state at {target.describe()} is owned by "
                                               f"{state.owner if state else 'nobody'}, not {self.owner}"})
                return
            if self.wait_settled:
                if await asyncio.to_thread(target.settled):
                    yield TriggerEvent({"status": "settled", "waited_s": time.time() - started})
                    return
                if self.deadline is not None and time.time() > self.deadline:
                    yield TriggerEvent({"status": "error", "waited_s": time.time() - started,
                                        "message": f"{target.describe()} did not settle in time"})
                    return
                if time.time() - last_progress >= PROGRESS_EVERY_S:
                    self.log.info("waiting for %s to settle (%.0fs so far)", target.describe(), time.time() - started)
                    last_progress = time.time()
                await asyncio.sleep(self.poll_s)
                continue
            if self.wait_ready:
                if await asyncio.to_thread(target.candidate_ready, state):
                    yield TriggerEvent({"status": "ready", "waited_s": time.time() - started})
                    return
                if self.deadline is not None and time.time() > self.deadline:
                    yield TriggerEvent({"status": "error", "waited_s": time.time() - started,
                                        "message": f"candidate {state.model} v{state.candidate} not ready in time"})
                    return
                await asyncio.sleep(self.poll_s)
                continue
            strategy = strategy_of(state)
            now = time.time()
            action = decide(strategy, state, state.measurements, now)
            if isinstance(action, Pause):
                if now - last_progress >= PROGRESS_EVERY_S:
                    self.log.info("rollout %s v%s: %s, %.0fs to go", state.model, state.candidate, action.reason,
                                  action.until - now)
                    last_progress = now
                await asyncio.sleep(max(0.0, min(action.until - now, PROGRESS_EVERY_S)))
                continue
            if isinstance(action, Analyse):
                settings = {**self.analysis_settings, **await asyncio.to_thread(target.analysis_settings)}
                backends = await asyncio.to_thread(target.backends, state)
                plan = strategy.plan()
                spec = strategy.background if action.background else plan[action.step].analysis
                assert spec is not None
                taken = []
                for name in action.metrics:
                    metric = spec.metric(name)
                    provider = make_provider(metric.provider, settings)
                    carried = next((m.baseline for m in reversed(state.measurements)
                                    if m.metric == name and m.baseline is not None), None)
                    taken.append(await asyncio.to_thread(measure, metric, provider, backends, state.model,
                                                         action.step, action.background, None, carried,
                                                         str(self.target.get("name") or "")))
                for m in taken:
                    self.log.info("step %d  weight %d%%  %s = %s (stable %s)  %s%s", action.step, state.weight,
                                  m.metric, m.value, m.baseline, m.outcome, f"  [{m.message}]" if m.message else "")
                await asyncio.to_thread(target.save_state, applied(state, action, time.time(), taken))
                continue
            if isinstance(action, AwaitApproval) and not self.stop_at_approval:
                if now - last_progress >= PROGRESS_EVERY_S or last_progress == started:
                    self.log.info("rollout %s v%s waits for approval at step %d", state.model, state.candidate,
                                  action.step)
                    last_progress = now
                await asyncio.sleep(self.poll_s)
                continue
            yield TriggerEvent({"status": "act", "action": type(action).__name__, "waited_s": time.time() - started})
            return
