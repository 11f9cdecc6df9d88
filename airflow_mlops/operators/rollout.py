"""Progressive rollout operators: canary and blue-green, deferrable at every pause, resumable from the target.

The engine (``airflow_mlops.core.rollout``) decides; the target applies traffic changes and persists the state;
the trigger waits out pauses and takes measurements in the triggerer. This operator only translates: it
applies the engine's traffic actions, defers for everything else, and records the result.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import (
    Abort,
    Analyse,
    AnalysisSpec,
    AwaitApproval,
    BlueGreenStrategy,
    CanaryStrategy,
    Done,
    Pause,
    Promote,
    RolloutState,
    SetWeight,
    Strategy,
    applied,
    decide,
    strategy_from_dict,
    strategy_of,
)
from airflow_mlops.operators.step import _templated
from airflow_mlops.rollout.targets.base import TargetBusy

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.rollout.targets import RolloutTarget

ON_KILL = ("rollback", "leave")
ON_RETRY = ("continue", "rollback")
TARGET_KINDS = ("local", "kubernetes", "kserve", "sagemaker")
TAG_PREFIX = "mlops.rollout"


def _as_dict(value: Any, field: str) -> Any:
    """A rendered template of a dict (JSON or Python literal) back to the dict."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise SpecError(field, "a dict (JSON or Python literal)", value) from None


def _as_strategy(value: Any) -> Strategy:
    value = _as_dict(value, "strategy")
    if isinstance(value, (CanaryStrategy, BlueGreenStrategy)):
        return value
    return strategy_from_dict(value)


def _check_target(value: Any) -> dict[str, Any]:
    value = _as_dict(value, "target")
    if not isinstance(value, Mapping):
        raise SpecError("target", f"a dict with kind = one of {TARGET_KINDS}", value)
    kind = value.get("kind", "local")
    if not _templated(kind) and kind not in TARGET_KINDS:
        raise SpecError("target.kind", f"one of {TARGET_KINDS}", kind)
    return {"kind": "local", **dict(value)}


#: HITL options that approve an adopted rollout's gate (``ModelRolloutOperator.approval``).
APPROVE_OPTIONS = ("Approve", "Switch", "Promote")


def approval_decision(result: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    """(approved, who, why) from a HITL task's result; none (timed out, failed) rejects."""
    options = list((result or {}).get("chosen_options") or [])
    if not result or not options:
        return False, "nobody", "no approval before the approval task ended"
    user = result.get("responded_by_user") or {}
    who = str(user.get("name") or user.get("id") or "someone") if isinstance(user, Mapping) else str(user)
    why = str((result.get("params_input") or {}).get("reason") or "")
    return (bool(options) and options[0] in APPROVE_OPTIONS), who, why


def measurement_summary(measurements: Sequence[Mapping[str, Any]], limit: int = 5000) -> str:
    """Per metric: how many measurements, the outcomes in order (s/f/i), the last value and baseline, as JSON
    that always fits a tag (the full list is in the record file)."""
    by_metric: dict[str, dict[str, Any]] = {}
    for m in measurements:
        entry = by_metric.setdefault(str(m.get("metric")), {"n": 0, "outcomes": ""})
        entry["n"] += 1
        entry["outcomes"] += str(m.get("outcome") or "?")[:1]
        entry["last"], entry["baseline"] = m.get("value"), m.get("baseline")
    text = json.dumps(by_metric, sort_keys=True)
    if len(text) > limit:
        for entry in by_metric.values():
            entry["outcomes"] = entry["outcomes"][-20:]
        text = json.dumps(by_metric, sort_keys=True)
    if len(text) > limit:
        text = json.dumps({name: {"n": e["n"]} for name, e in by_metric.items()}, sort_keys=True)
    return text if len(text) <= limit else json.dumps({"metrics": len(by_metric)})


class ModelRolloutOperator(BaseOperator):
    """Roll ``model_name`` version ``candidate_version`` out to a target with a canary or blue-green strategy.

    Every pause and analysis interval defers to :class:`~airflow_mlops.triggers.rollout.RolloutTrigger`. State
    lives in the target, owned by ``dag_id/run_id/task_id``: a retry (or a restarted worker) reads it back and
    continues (``on_retry="continue"``) or rolls back (``"rollback"``); a rollout owned by another task is never
    touched. Abort means the stable version gets 100% of traffic. The record (steps, measurements, outcome)
    is the XCom return value and tags on the candidate's MLflow model version; on success the ``champion``
    alias can be moved to the candidate (compare-and-swap through ``MlflowHook.move_alias``).

    :param model_name: registered model name.
    :param candidate_version: the version to roll out (templated).
    :param strategy: CanaryStrategy, BlueGreenStrategy, or their dict form (templated).
    :param target: target config, e.g. ``{"kind": "local", "name": "churn"}`` (templated); the local target
        gets the model name and the MLflow tracking URI filled in.
    :param stable_version: the version serving now; default: whatever the target serves at 100%.
    :param mlflow_conn_id: MLflow connection (tags, alias, local scoring servers).
    :param analysis_settings: provider settings, e.g. ``{"prometheus_url": ..., "aws": {"region_name": ...}}``.
    :param champion_alias: alias moved to the candidate after a successful rollout (None: don't move).
    :param on_kill: ``rollback`` (default) or ``leave`` when the task is killed mid-rollout.
    :param on_retry: ``continue`` (default) or ``rollback`` when a retry finds its own rollout in progress.
    :param ready_timeout_s: how long the candidate may take to come up.
    :param fail_on_abort: fail the task when the rollout was rolled back (the record is pushed first).
    :param pause_at_approval: at an approval gate (blue-green with ``auto_promote=False``) save the state and
        succeed with outcome ``awaiting_approval`` instead of waiting deferred, so a human-in-the-loop task can ask
        in the Airflow UI; the candidate has no live traffic there (preview), so nothing is left split.
    :param adopt_from: task id whose rollout (in this DAG run) this task takes over at its approval gate, applying
        ``approval``; nothing waiting there: the task skips.
    :param approval: the decision for an adopted rollout (templated): a HITL task's result
        (``{"chosen_options": [...], "responded_by_user": {...}}``); the first option approves if it is one of
        ``APPROVE_OPTIONS``; anything else, or no result (the HITL task timed out or failed), rejects: rollback.
    """

    template_fields: Sequence[str] = ("model_name", "candidate_version", "stable_version", "strategy", "target",
                                      "analysis_settings", "approval")
    template_fields_renderers = {"strategy": "json", "target": "json", "analysis_settings": "json"}
    ui_color = "#fde2c8"

    def __init__(self, *, model_name: str, candidate_version: str | int,
                 strategy: Strategy | Mapping[str, Any] | str, target: Mapping[str, Any] | str | None = None,
                 stable_version: str | int | None = None, mlflow_conn_id: str | None = None,
                 analysis_settings: Mapping[str, Any] | str | None = None, champion_alias: str | None = "champion",
                 on_kill: str = "rollback", on_retry: str = "continue", ready_timeout_s: float = 300,
                 poll_s: float = 0.5, fail_on_abort: bool = True, pause_at_approval: bool = False,
                 adopt_from: str | None = None, approval: Mapping[str, Any] | str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause_at_approval = pause_at_approval
        self.adopt_from = adopt_from
        self.approval = approval
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.strategy = strategy
        self.target = target if target is not None else {"kind": "local"}
        self.stable_version = stable_version
        self.mlflow_conn_id = mlflow_conn_id
        # A string is a (templated) JSON object, read back at task start.
        self.analysis_settings = analysis_settings if isinstance(analysis_settings, str) else \
            dict(analysis_settings or {})
        self.champion_alias = champion_alias
        if on_kill not in ON_KILL:
            raise SpecError("on_kill", f"one of {ON_KILL}", on_kill)
        if on_retry not in ON_RETRY:
            raise SpecError("on_retry", f"one of {ON_RETRY}", on_retry)
        self.on_kill_policy = on_kill
        self.on_retry = on_retry
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s
        self.fail_on_abort = fail_on_abort
        # Fail at parse time for everything that is not templated.
        if not _templated(strategy):
            _as_strategy(strategy)
        if not _templated(self.target):
            _check_target(self.target)
        self._target_config: dict[str, Any] | None = None
        self._owner: str | None = None

    # -- pieces ------------------------------------------------------------------------------------

    def _hook(self) -> Any:
        from airflow_mlops.hooks.config import load_config
        from airflow_mlops.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id or load_config().mlflow_conn_id)

    def _config(self) -> dict[str, Any]:
        config = _check_target(self.target)
        config.setdefault("model", self.model_name)
        if config["kind"] in ("kubernetes", "kserve") and not (config.get("image") or config.get("storage_uri")):
            from airflow_mlops.hooks.config import load_config

            serving_image = load_config().serving_image
            if serving_image:
                config["image"] = serving_image  # the digest the deploy set (airflow-mlops deploy set-images)
        if config["kind"] == "local":
            config.setdefault("name", self.model_name)
            config.setdefault("tracking_uri", self._hook().tracking_uri)
        return config

    def _settings(self) -> dict[str, Any]:
        value = _as_dict(self.analysis_settings or {}, "analysis_settings")
        if not isinstance(value, Mapping):
            raise SpecError("analysis_settings", "a dict such as {'prometheus_url': ..., 'aws': {...}}", value)
        return dict(value)

    def _check_providers(self, strategy: Strategy, settings: Mapping[str, Any]) -> None:
        """Fail before anything is deployed when a metric's provider has nowhere to ask."""
        specs = [step.analysis for step in strategy.plan() if step.analysis is not None]
        if strategy.background is not None:
            specs.append(strategy.background)
        for spec in specs:
            for metric in spec.metrics:
                if metric.provider == "prometheus" and not settings.get("prometheus_url"):
                    raise SpecError(
                        "analysis_settings.prometheus_url",
                        f"the Prometheus base URL metric {metric.name!r} queries (set it in the "
                        "mlops_rollout_analysis_settings Variable, e.g. {\"prometheus_url\": \"http://prometheus:9090\"})",
                        None)

    def _make_target(self, config: Mapping[str, Any]) -> RolloutTarget:
        from airflow_mlops.rollout.targets import make_target

        target = make_target(config)
        if config.get("kind") == "local":
            # The scoring servers this worker starts load models:/ URIs with the connection's credentials. They go
            # in the process env only, never in the target config (the trigger's kwargs, the XCom record).
            env = getattr(target, "env", None)
            if isinstance(env, dict):
                env.update({k: v for k, v in self._hook().process_env().items() if k != "MLFLOW_TRACKING_URI"})
        return target

    @staticmethod
    def _owner_of(context: Context) -> str:
        ti = context["ti"]
        return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"

    # -- execution ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        started = time.perf_counter()
        try:
            strategy = _as_strategy(self.strategy)
            self._check_providers(strategy, self._settings())
            config = self._target_config = self._config()
            target = self._make_target(config)
        except SpecError as err:
            # A bad strategy, target or analysis setting does not fix itself: fail now, without retries, before
            # anything is deployed.
            raise AirflowFailException(f"invalid rollout configuration: {err}") from err
        owner = self._owner = self._owner_of(context)
        candidate = str(self.candidate_version)
        state = target.read_state()
        if self.adopt_from:
            state = self._adopt(context, target, state, owner, candidate)
        if state is not None and state.phase == "progressing" and state.owner != owner:
            raise AirflowFailException(
                f"a rollout of {state.model} v{state.candidate} owned by {state.owner} is in progress at "
                f"{target.describe()} (step {state.step}, candidate at {state.weight}%): not touching it. Let it "
                "finish, or roll it back from its own task.")
        if state is not None and state.owner == owner and state.candidate == candidate:
            self.log.info("found this task's rollout of %s v%s at step %d (%d%%, %s): resuming (try %s)",
                          state.model, candidate, state.step, state.weight, state.phase, context["ti"].try_number)
            if state.phase == "progressing" and self.on_retry == "rollback":
                state = self._abort(target, state, "retry found the rollout in progress; on_retry=rollback")
            return self._drive(context, target, state, started)
        stable = str(self.stable_version) if self.stable_version not in (None, "") else target.serving_version()
        if stable == candidate:
            self.log.info("%s v%s already serves all traffic at %s: nothing to roll out", self.model_name,
                          candidate, target.describe())
            return {"outcome": "unchanged", "model": self.model_name, "candidate": candidate, "stable": stable}
        state = RolloutState(owner=owner, model=self.model_name, stable=stable, candidate=candidate,
                             strategy=strategy.to_dict(), started_at=time.time())
        self.log.info("rollout %s: v%s -> v%s, %s %s at %s", self.model_name, stable or "(none)", candidate,
                      strategy.kind, list(strategy.steps), target.describe())
        try:
            target.deploy_candidate(state)
        except Exception:
            # deploy_candidate persists the state first: a half-made candidate must still get an owner's cleanup.
            self._release_on_last_try(context, target, state)
            raise
        return self._drive(context, target, state, started)

    def resume(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Back from the trigger: re-read the target's state (the truth) and carry on."""
        started = time.perf_counter()
        config = self._target_config = self._config()
        self._owner = self._owner_of(context)
        target = self._make_target(config)
        state = target.read_state()
        event = event or {}
        if state is None or state.owner != self._owner:
            raise AirflowFailException(f"lost the rollout: {event.get('message') or 'state owned by another task'}")
        if event.get("status") == "error":
            self.log.error("rollout trigger: %s", event.get("message"))
            try:
                state = self._abort(target, state, str(event.get("message")))
            except Exception:
                self._release_on_last_try(context, target, state)
                raise
        return self._drive(context, target, state, started)

    def _drive(self, context: Context, target: RolloutTarget, state: RolloutState, started: float) -> Any:
        strategy = strategy_of(state)
        try:
            while True:
                if state.phase == "progressing" and state.step < 0 and not target.candidate_ready(state):
                    self._defer(target, state, started, wait_ready=True)
                now = time.time()
                if state.phase == "progressing" and state.stable is None:
                    action: Any = Promote()  # first deployment: nothing to compare against
                else:
                    action = decide(strategy, state, state.measurements, now)
                if isinstance(action, AwaitApproval) and self.pause_at_approval:
                    return self._pause_for_approval(context, target, state, started)
                if isinstance(action, (Pause, Analyse, AwaitApproval)):
                    self._defer(target, state, started)
                try:
                    if isinstance(action, SetWeight):
                        self._log_step(strategy, state, f"set weight {action.weight}%")
                        state = applied(state, action, now)
                        target.apply_weight(state)
                    elif isinstance(action, Promote):
                        self._log_step(strategy, state, "promote")
                        state = applied(state, action, now)
                        target.promote(state)
                    elif isinstance(action, Abort):
                        self._log_step(strategy, state, f"ABORT: {action.reason}")
                        state = self._abort(target, state, action.reason)
                    elif isinstance(action, Done):
                        return self._finish(context, target, state, started)
                except TargetBusy as busy:
                    # The change is persisted; the target applies it once it settles. The engine compares the
                    # recorded and observed weights on resume and re-applies it (an abort, too).
                    self.log.info("%s: deferring until the target settles, then applying it again", busy)
                    self._defer(target, target.load_state() or state, started, wait_settled=True)
        except Exception:
            self._release_on_last_try(context, target, state)
            raise

    def _pause_for_approval(self, context: Context, target: RolloutTarget, state: RolloutState,
                            started: float) -> dict[str, Any]:
        state = replace(state, worker_seconds=state.worker_seconds + time.perf_counter() - started)
        target.save_state(state)
        self._log_step(strategy_of(state), state, "awaiting approval (a later task decides)")
        self._alert(context, "rollout_awaiting_approval", state,
                    f"blue-green preview of v{state.candidate} is up beside v{state.stable} at {target.describe()} "
                    "with no live traffic; a person decides Switch or Roll back in the Airflow UI (Required "
                    "actions). No answer rolls back")
        return {"outcome": "awaiting_approval", "model": state.model, "stable": state.stable,
                "candidate": state.candidate, "owner": state.owner, "target": target.describe(),
                "step": state.step, "weight": state.weight,
                "measurements": [m.to_dict() for m in state.measurements]}

    def _adopt(self, context: Context, target: RolloutTarget, state: RolloutState | None, owner: str,
               candidate: str) -> RolloutState:
        """Take over the rollout ``adopt_from`` left at its approval gate, with this task's decision."""
        from airflow.sdk.exceptions import AirflowSkipException

        ti = context["ti"]
        previous = f"{ti.dag_id}/{ti.run_id}/{self.adopt_from}"
        if state is not None and state.owner == owner and state.candidate == candidate:
            return state  # a retry of this task: adopted (and decided) already
        if state is None or state.phase != "progressing" or state.owner != previous or state.candidate != candidate:
            raise AirflowSkipException(
                f"no rollout of {self.model_name} v{candidate} by {previous} waits for approval at "
                f"{target.describe()} (found: {state.owner + ' ' + state.phase if state else 'nothing'})")
        approve, who, why = approval_decision(_as_dict(self.approval, "approval") if self.approval else None)
        entry = {"at": time.time(), "action": "Approve" if approve else "Reject", "by": who, "step": state.step,
                 "weight": state.weight, "why": why}
        adopted = replace(state, owner=owner, approved=approve, history=(
            *state.history, {"at": time.time(), "action": "Adopt", "from": previous, "step": state.step,
                             "weight": state.weight}, entry))
        target.save_state(adopted)
        self.log.info("took over the rollout of %s v%s from %s: %s by %s%s", state.model, candidate, previous,
                      "APPROVED" if approve else "REJECTED", who, f" ({why})" if why else "")
        return adopted

    def _release_on_last_try(self, context: Context, target: RolloutTarget, state: RolloutState) -> None:
        """On the last try, roll a progressing rollout back: no retry will come to own it."""
        ti = context["ti"]
        last_try = int(ti.try_number or 1) > int(self.retries or 0)
        if last_try and state.phase == "progressing":
            # Also at 0% (candidate deployed, blue-green preview) or 100% (before promote): a progressing
            # rollout whose owner is gone would block every later run and leak the candidate.
            self.log.error("last try failed mid-rollout: rolling back so nothing is left without an owner")
            try:
                state = self._abort(target, state, "the task failed on its last try")
                error = sys.exc_info()[1]  # called while handling the task's error
                self._alert(context, "rollout_rolled_back", state,
                            f"the rollout task failed on its last try ({type(error).__name__}: {error}); "
                            f"v{state.stable} serves 100% of traffic")
            except Exception as err:
                self.log.error("rollback on the last try failed too (%s): %s still records owner %s; roll it "
                               "back from the target, or clear this task to retry", err, target.describe(),
                               state.owner)

    def _abort(self, target: RolloutTarget, state: RolloutState, reason: str) -> RolloutState:
        state = applied(state, Abort(reason), time.time())
        target.rollback(state)
        self.log.warning("rolled back: %s v%s gets 100%% of traffic (%s)", state.model, state.stable, reason)
        return state

    def _defer(self, target: RolloutTarget, state: RolloutState, started: float, wait_ready: bool = False,
               wait_settled: bool = False) -> None:
        from airflow_mlops.triggers.rollout import RolloutTrigger

        state = replace(state, worker_seconds=state.worker_seconds + time.perf_counter() - started)
        if not wait_settled:  # a busy target took the state already (and may refuse more writes now)
            target.save_state(state)
        assert self._target_config is not None and self._owner is not None
        self.defer(trigger=RolloutTrigger(target=self._target_config, owner=self._owner,
                                          analysis_settings=self._settings(), wait_ready=wait_ready,
                                          wait_settled=wait_settled,
                                          deadline=(time.time() + self.ready_timeout_s if wait_ready or wait_settled
                                                    else None),
                                          poll_s=self.poll_s, on_kill=self.on_kill_policy,
                                          stop_at_approval=self.pause_at_approval),
                   method_name="resume")

    def _log_step(self, strategy: Strategy, state: RolloutState, decision: str) -> None:
        plan = strategy.plan()
        taken = [m for m in state.measurements if m.step == state.step or (m.background and m.at >=
                                                                          state.step_started_at)]
        by_metric: dict[str, list[Any]] = {}
        for m in taken:
            by_metric.setdefault(m.metric, []).append(m)
        parts = []
        for name, ms in by_metric.items():
            last = ms[-1]
            value = "n/a" if last.value is None else f"{last.value:.4g}"
            base = "" if last.baseline is None else f" (stable {last.baseline:.4g})"
            outcomes = ",".join(m.outcome[0] for m in ms)
            parts.append(f"{name}={value}{base} [{outcomes}]")
        where = f"step {state.step + 1}/{len(plan)} at {state.weight}%" if state.step >= 0 else "start"
        self.log.info("%-22s | %s | -> %s", where, "; ".join(parts) or "no measurements", decision)

    def _finish(self, context: Context, target: RolloutTarget, state: RolloutState, started: float) -> Any:
        state = replace(state, worker_seconds=state.worker_seconds + time.perf_counter() - started)
        target.save_state(state)
        outcome = state.phase
        record = {
            "outcome": outcome, "model": state.model, "stable": state.stable, "candidate": state.candidate,
            "reason": state.reason, "owner": state.owner, "target": target.describe(), "strategy": dict(state.strategy),
            "history": [dict(h) for h in state.history], "measurements": [m.to_dict() for m in state.measurements],
            "started_at": state.started_at, "finished_at": time.time(),
            "wall_seconds": time.time() - state.started_at, "worker_seconds": state.worker_seconds,
        }
        self.log.info("rollout %s v%s %s after %.1fs (%.2fs of it in a worker)%s", state.model, state.candidate,
                      outcome.upper(), record["wall_seconds"], state.worker_seconds,
                      f": {state.reason}" if state.reason else "")
        record["record_uri"] = self._store_record(state, record)
        self._record_in_mlflow(state, record)
        if outcome == "aborted":
            self._alert(context, "rollout_rolled_back", state,
                        f"{state.reason}; v{state.stable} serves 100% of traffic",
                        record_uri=str(record["record_uri"] or "") or None,
                        weights=[h.get("weight") for h in state.history])
        if outcome == "aborted" and self.fail_on_abort:
            context["ti"].xcom_push(key="rollout", value=record)
            raise AirflowFailException(f"rollout of {state.model} v{state.candidate} rolled back: {state.reason}. "
                                       f"v{state.stable} serves 100% of traffic.")
        return record

    def _alert(self, context: Context, event: str, state: RolloutState, reason: str, record_uri: str | None = None,
               **details: Any) -> None:
        from airflow_mlops.notifiers.channels import emit_alert, mlflow_links

        try:
            links = {**mlflow_links(self._hook(), state.model, state.candidate), "record": record_uri}
        except Exception as err:  # the alert goes out without links
            self.log.warning("no MLflow links for the alert: %s", err)
            links = {"record": record_uri}
        emit_alert(context, event=event, model=state.model, version=state.candidate, reason=reason, links=links,
                   details={"stable": state.stable, "step": state.step, "weight": state.weight, **details})

    def _store_record(self, state: RolloutState, record: Mapping[str, Any]) -> str | None:
        """The whole record (every measurement) as JSON in the artifact store; tags only hold a summary."""
        from airflow_mlops.hooks.artifacts import ArtifactStoreHook
        from airflow_mlops.hooks.config import load_config

        owner = "".join(c if c.isalnum() or c in "-_." else "_" for c in state.owner)
        uri = f"{load_config().artifact_root.rstrip('/')}/rollouts/{state.model}/v{state.candidate}/{owner}.json"
        try:
            ArtifactStoreHook().write_json(uri, record)
        except Exception as err:  # the rollout's outcome stands; a missing record file must not change it
            self.log.warning("could not write the rollout record to %s: %s", uri, err)
            return None
        self.log.info("rollout record: %s", uri)
        return uri

    def _record_in_mlflow(self, state: RolloutState, record: Mapping[str, Any]) -> None:
        hook = self._hook()
        client = hook.get_client()
        weights = " -> ".join(str(h.get("weight")) for h in record["history"])
        tags = {f"{TAG_PREFIX}.outcome": record["outcome"], f"{TAG_PREFIX}.owner": state.owner,
                f"{TAG_PREFIX}.target": json.dumps(record["target"])[:5000], f"{TAG_PREFIX}.weights": weights,
                f"{TAG_PREFIX}.stable": str(state.stable), f"{TAG_PREFIX}.reason": (state.reason or "")[:5000],
                f"{TAG_PREFIX}.wall_seconds": f"{record['wall_seconds']:.1f}",
                f"{TAG_PREFIX}.measurements": measurement_summary(record["measurements"])}
        if record.get("record_uri"):
            tags[f"{TAG_PREFIX}.record_uri"] = str(record["record_uri"])
        for key, value in tags.items():
            client.set_model_version_tag(state.model, state.candidate, key, value)
        if record["outcome"] != "promoted" or not self.champion_alias:
            return
        current = hook.get_alias_version(state.model, self.champion_alias)
        if current == state.candidate:
            return
        if current not in (None, state.stable):
            self.log.warning("%s@%s points to v%s, not the stable v%s this rollout replaced: not moving it",
                             state.model, self.champion_alias, current, state.stable)
            return
        hook.move_alias(state.model, self.champion_alias, state.candidate, expected_version=current,
                        audit_tags={f"{TAG_PREFIX}.promoted_by": state.owner}, actor=state.owner,
                        reason=f"progressive rollout {weights} passed")

    def on_kill(self) -> None:
        if self.on_kill_policy != "rollback" or self._target_config is None:
            return
        target = self._make_target(self._target_config)
        state = target.read_state()
        if state is not None and state.phase == "progressing" and state.owner == self._owner:
            self._abort(target, state, "task killed (on_kill=rollback)")


class CanaryRolloutOperator(ModelRolloutOperator):
    """Canary rollout: shift traffic in ``steps`` with a pause and analysis at each.

    :param steps: candidate weights, strictly increasing, ending at 100.
    :param pause_s: seconds per step (one number or one per step).
    :param analysis: AnalysisSpec or its dict form.
    :param analysis_mode: ``step`` or ``background``.
    """

    def __init__(self, *, steps: Sequence[int] = (5, 25, 50, 100), pause_s: float | Sequence[float] = 60,
                 analysis: AnalysisSpec | Mapping[str, Any] | None = None, analysis_mode: str = "step",
                 **kwargs: Any) -> None:
        if isinstance(analysis, Mapping):
            analysis = AnalysisSpec.from_dict(analysis)
        strategy = CanaryStrategy(steps=tuple(steps), pause_s=tuple(pause_s) if isinstance(pause_s, Sequence)
                                  else pause_s, analysis=analysis, analysis_mode=analysis_mode)
        super().__init__(strategy=strategy, **kwargs)


class BlueGreenRolloutOperator(ModelRolloutOperator):
    """Blue-green rollout: preview, analyse, switch all traffic, keep the old version for the scale-down delay.

    Takes BlueGreenStrategy's fields as keyword arguments (``preview_pause_s``, ``preview_analysis``,
    ``auto_promote``, ``scale_down_delay_s``, ``post_promotion_analysis``, ``keep_previous``).
    """

    def __init__(self, *, preview_pause_s: float = 30, preview_analysis: AnalysisSpec | Mapping[str, Any] | None = None,
                 auto_promote: bool = True, scale_down_delay_s: float = 30,
                 post_promotion_analysis: AnalysisSpec | Mapping[str, Any] | None = None, keep_previous: bool = True,
                 **kwargs: Any) -> None:
        strategy = BlueGreenStrategy(
            preview_pause_s=preview_pause_s,
            preview_analysis=AnalysisSpec.from_dict(preview_analysis) if isinstance(preview_analysis, Mapping)
            else preview_analysis,
            auto_promote=auto_promote, scale_down_delay_s=scale_down_delay_s,
            post_promotion_analysis=AnalysisSpec.from_dict(post_promotion_analysis)
            if isinstance(post_promotion_analysis, Mapping) else post_promotion_analysis,
            keep_previous=keep_previous)
        super().__init__(strategy=strategy, **kwargs)
