"""Alias compare-and-swap, rollback history and registry errors against real MLflow on SQLite (in-process)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_mlops.core.promotion import (
    AliasConflictError,
    UnknownAliasError,
    UnknownModelError,
    UnknownVersionError,
    VersionNotReadyError,
)
from airflow_mlops.hooks.mlflow import MlflowHook
from tests.integration.registry_support import make_versions


@pytest.fixture
def hook(mlops_home: Path) -> MlflowHook:
    return MlflowHook()


@pytest.fixture
def versions(hook: MlflowHook, tmp_path: Path) -> list[str]:
    return make_versions(hook.get_client(), tmp_path, "clf", [{"acc": 0.8}, {"acc": 0.85}, {"acc": 0.9}])


def test_move_keeps_previous_under_rollback_alias_and_audits(hook: MlflowHook, versions: list[str]) -> None:
    first = hook.move_alias("clf", "champion", versions[0], expected_version=None, actor="run-1", reason="first")
    assert (first.previous_version, first.rollback_alias) == (None, None)
    second = hook.move_alias("clf", "champion", versions[1], expected_version=versions[0], actor="run-2",
                             reason="better", audit_tags={"mlops.approved_by": "alice"})
    assert second.previous_version == versions[0]
    assert second.rollback_alias == "champion_previous"
    assert hook.get_alias_version("clf", "champion") == versions[1]
    assert hook.get_alias_version("clf", "champion_previous") == versions[0]
    tags = hook.get_client().get_model_version("clf", versions[1]).tags
    assert tags["mlops.approved_by"] == "alice"
    assert tags["mlops.alias.champion.set_by"] == "run-2"
    assert tags["mlops.alias.champion.previous_version"] == versions[0]
    history = hook.alias_history("clf", "champion")
    assert [(h["from"], h["to"], h["state"]) for h in history] == [(None, versions[0], "done"),
                                                                  (versions[0], versions[1], "done")]


def test_stale_expectation_moves_nothing(hook: MlflowHook, versions: list[str]) -> None:
    hook.move_alias("clf", "champion", versions[0], expected_version=None)
    with pytest.raises(AliasConflictError, match=r"clf@champion points to version 1, expected no version"):
        hook.move_alias("clf", "champion", versions[1], expected_version=None)
    assert hook.get_alias_version("clf", "champion") == versions[0]
    assert hook.get_alias_version("clf", "champion_previous") is None
    assert len(hook.alias_history("clf", "champion")) == 1
    assert "mlops.alias.champion.set_at" not in hook.get_client().get_model_version("clf", versions[1]).tags


def test_rollback_swaps_back_and_is_reversible(hook: MlflowHook, versions: list[str]) -> None:
    hook.move_alias("clf", "champion", versions[0], expected_version=None)
    hook.move_alias("clf", "champion", versions[2], expected_version=versions[0])
    back = hook.rollback_alias("clf", "champion", actor="oncall", reason="latency regression")
    assert (back.version, back.previous_version) == (versions[0], versions[2])
    assert hook.get_alias_version("clf", "champion") == versions[0]
    assert hook.get_alias_version("clf", "champion_previous") == versions[2]
    tags = hook.get_client().get_model_version("clf", versions[0]).tags
    assert tags["mlops.alias.champion.rolled_back_from"] == versions[2]
    assert tags["mlops.alias.champion.reason"] == "latency regression"


def test_two_promotions_race_exactly_one_wins(hook: MlflowHook, versions: list[str]) -> None:
    """Two threads, each with its own hook and client, promote different versions from the same read state."""
    hook.move_alias("clf", "champion", versions[0], expected_version=None)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        contender = MlflowHook()
        barrier.wait()
        try:
            outcomes[version] = contender.move_alias("clf", "champion", version, expected_version=versions[0],
                                                     actor=f"racer-{version}")
        except Exception as err:
            outcomes[version] = err

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    wins = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    assert len(wins) == 1 and len(errors) == 1, outcomes
    assert isinstance(errors[0], AliasConflictError), errors[0]
    assert hook.get_alias_version("clf", "champion") == wins[0]
    assert hook.get_alias_version("clf", "champion_previous") == versions[0]
    history = hook.alias_history("clf", "champion")
    done = [h for h in history if h["state"] == "done"]
    assert [(h["from"], h["to"]) for h in done] == [(None, versions[0]), (versions[0], wins[0])]
    assert not hook.get_client().search_registered_models(f"name = '{hook.lock_model_name('clf', 'champion')}'")


def test_clear_errors_for_unknown_model_alias_version(hook: MlflowHook, versions: list[str]) -> None:
    with pytest.raises(UnknownModelError, match="registered model 'nope' does not exist"):
        hook.move_alias("nope", "champion", "1", expected_version=None)
    with pytest.raises(UnknownAliasError, match="model 'clf' has no alias 'champion_previous'; its aliases: none"):
        hook.rollback_alias("clf", "champion")
    with pytest.raises(UnknownVersionError, match="model 'clf' has no version '42'"):
        hook.move_alias("clf", "champion", "42", expected_version=None)
    assert hook.get_alias_version("clf", "champion") is None


def _set_status(hook: MlflowHook, name: str, version: str, status: str) -> None:
    """Put a real stored version into a registration state (the SQLite store finishes registration instantly)."""
    import sqlite3

    path = hook.tracking_uri[len("sqlite:///"):]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE model_versions SET status = ?, status_message = ? WHERE name = ? AND version = ?",
                   (status, "copying artifacts", name, int(version)))


def test_version_never_ready_fails_clearly(hook: MlflowHook, versions: list[str]) -> None:
    _set_status(hook, "clf", versions[1], "PENDING_REGISTRATION")
    with pytest.raises(VersionNotReadyError, match=r"model clf version 2 not READY after 0.3s "
                                                   r"\(status PENDING_REGISTRATION: copying artifacts\)"):
        hook.wait_until_ready("clf", versions[1], timeout=0.3, poll_interval=0.1)
    with pytest.raises(VersionNotReadyError, match="is PENDING_REGISTRATION, not READY: refusing to point champion"):
        hook.move_alias("clf", "champion", versions[1], expected_version=None)
    _set_status(hook, "clf", versions[2], "FAILED_REGISTRATION")
    with pytest.raises(VersionNotReadyError, match="model clf version 3 failed registration: copying artifacts"):
        hook.wait_until_ready("clf", versions[2], timeout=5, poll_interval=0.1)
    assert hook.get_alias_version("clf", "champion") is None


def test_copy_model_version_once(hook: MlflowHook, versions: list[str]) -> None:
    copied = hook.copy_model_version("clf", versions[2], "clf_prod")
    again = hook.copy_model_version("clf", versions[2], "clf_prod")
    assert str(copied.version) == str(again.version) == "1" and copied.status == "READY"
    assert copied.tags["mlops.copied_from"] == "clf/3"
    assert len(hook.get_client().search_model_versions("name = 'clf_prod'")) == 1


def test_a_retry_finishes_its_own_interrupted_move_and_nobody_elses(hook: MlflowHook, versions: list[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The task dies right after the alias moved (before its history entry says done): its retry finishes the
    move instead of failing for good with "someone moved it"; another caller still gets the conflict.

    The one stand-in: ``monkeypatch`` makes the client raise exactly when the history entry is marked done, because
    a worker cannot be killed at that instruction otherwise; MLflow and its SQLite store are real."""
    from mlflow import MlflowClient

    hook.move_alias("clf", "champion", versions[0], expected_version=None, actor="run-1")
    real = MlflowClient.set_registered_model_tag

    def crash_on_done(self: MlflowClient, name: str, key: str, value: str) -> None:
        if '"state": "done"' in value:
            raise ConnectionError("worker lost")
        real(self, name, key, value)

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", crash_on_done)
    with pytest.raises(ConnectionError):
        hook.move_alias("clf", "champion", versions[1], expected_version=versions[0], actor="run-2")
    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", real)
    # The previous holder was kept before the alias moved: never a moved alias without its rollback alias.
    assert hook.get_alias_version("clf", "champion") == versions[1]
    assert hook.get_alias_version("clf", "champion_previous") == versions[0]
    assert hook.alias_history("clf", "champion")[-1]["state"] == "moving"

    with pytest.raises(AliasConflictError):
        hook.move_alias("clf", "champion", versions[1], expected_version=versions[0], actor="someone-else")
    again = hook.move_alias("clf", "champion", versions[1], expected_version=versions[0], actor="run-2")
    assert (again.version, again.previous_version, again.rollback_alias) == (versions[1], versions[0],
                                                                             "champion_previous")
    assert [h["state"] for h in hook.alias_history("clf", "champion")] == ["done", "done"]


# ---------------------------------------------------------------------------------------------------- retries

@contextlib.contextmanager
def _crash_when(method: str, predicate: Callable[..., bool]) -> Iterator[None]:
    """Make one real MlflowClient method raise (a worker lost at that instruction) when ``predicate(*args)``.

    The same stand-in as above: MLflow and its SQLite store are real; only the moment of the crash is chosen."""
    from mlflow import MlflowClient

    real = getattr(MlflowClient, method)

    def crashing(self: MlflowClient, *args: object, **kwargs: object) -> object:
        if predicate(*args):
            raise ConnectionError("worker lost")
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, method, crashing)
        yield


def test_a_retried_rollback_never_swaps_back(hook: MlflowHook, versions: list[str]) -> None:
    """v1 champion, bad v3 promoted, rolled back to v1; the retry of the same task must not make v3 champion."""
    hook.move_alias("clf", "champion", versions[0], expected_version=None, actor="train/1/promote")
    hook.move_alias("clf", "champion", versions[2], expected_version=versions[0], actor="train/2/promote")
    actor = "rollout/run-7/rollback"
    first = hook.rollback_alias("clf", "champion", actor=actor, reason="error rate")
    again = hook.rollback_alias("clf", "champion", actor=actor, reason="error rate")
    assert (first.version, first.previous_version) == (versions[0], versions[2])
    assert again == first
    assert hook.get_alias_version("clf", "champion") == versions[0]
    assert hook.get_alias_version("clf", "champion_previous") == versions[2]
    history = hook.alias_history("clf", "champion")
    assert [(h["to"], h.get("kind"), h["state"]) for h in history] == [
        (versions[0], "move", "done"), (versions[2], "move", "done"), (versions[0], "rollback", "done")]

    # Even after later moves by others, the same task's retry returns its rollback and moves nothing.
    hook.move_alias("clf", "champion", versions[1], expected_version=versions[0], actor="train/3/promote")
    late = hook.rollback_alias("clf", "champion", actor=actor)
    assert late == first and hook.get_alias_version("clf", "champion") == versions[1]

    # A different actor is a new rollback: the aliases swap once more (v2 -> v1, v2 kept as previous).
    other = hook.rollback_alias("clf", "champion", actor="rollout/run-8/rollback")
    assert (other.version, other.previous_version) == (versions[0], versions[1])
    assert hook.get_alias_version("clf", "champion") == versions[0]
    # ...unless it names the version it rolls back from and the alias has moved on: nothing moves.
    with pytest.raises(AliasConflictError, match=r"clf@champion points to version 1, expected version 2"):
        hook.rollback_alias("clf", "champion", actor="rollout/run-9/rollback", expected_version=versions[1])
    assert hook.get_alias_version("clf", "champion") == versions[0]
    assert len(hook.alias_history("clf", "champion")) == 5


@pytest.mark.parametrize("crash_at", ["after_alias_moved", "before_alias_moved"])
def test_an_interrupted_rollback_is_finished_towards_the_version_it_recorded(
        hook: MlflowHook, versions: list[str], crash_at: str) -> None:
    """The worker dies inside the rollback: after the alias moved (the entry still says moving), or after the bad
    version went to champion_previous but before champion moved. Either way the retry ends with champion on the
    good version; re-reading champion_previous (which may already hold the bad one) would get it wrong."""
    hook.move_alias("clf", "champion", versions[0], expected_version=None, actor="a")
    hook.move_alias("clf", "champion", versions[2], expected_version=versions[0], actor="b")
    crash = (_crash_when("set_registered_model_tag", lambda name, key, value: '"state": "done"' in value)
             if crash_at == "after_alias_moved" else
             _crash_when("set_registered_model_alias", lambda name, alias, version: alias == "champion"))
    actor = "rollout/run-7/rollback"
    with crash, pytest.raises(ConnectionError):
        hook.rollback_alias("clf", "champion", actor=actor)
    assert hook.alias_history("clf", "champion")[-1]["state"] == "moving"
    assert hook.get_alias_version("clf", "champion_previous") == versions[2]
    assert hook.get_alias_version("clf", "champion") == (versions[0] if crash_at == "after_alias_moved"
                                                         else versions[2])

    retried = hook.rollback_alias("clf", "champion", actor=actor)
    assert (retried.version, retried.previous_version) == (versions[0], versions[2])
    assert hook.get_alias_version("clf", "champion") == versions[0]
    assert hook.get_alias_version("clf", "champion_previous") == versions[2]
    assert [h["state"] for h in hook.alias_history("clf", "champion")] == ["done", "done", "done"]
    assert hook.rollback_alias("clf", "champion", actor=actor) == retried  # and once more: still nothing moves
    assert hook.get_alias_version("clf", "champion") == versions[0]


def test_a_promote_retry_after_its_completed_move_succeeds_and_nobody_elses(hook: MlflowHook,
                                                                           versions: list[str]) -> None:
    """The move was done (entry ``done``) but the task failed later (copy, Asset event): the retry of the same
    actor from the same expected holder is the same move, not a conflict; anyone else still conflicts."""
    hook.move_alias("clf", "challenger", versions[0], expected_version=None, actor="train/1/promote")
    actor = "train/2/promote approved by alice"
    first = hook.move_alias("clf", "challenger", versions[1], expected_version=versions[0], actor=actor,
                            reason="better")
    retried = hook.move_alias("clf", "challenger", versions[1], expected_version=versions[0], actor=actor,
                              reason="better")
    assert retried == first
    assert (retried.previous_version, retried.rollback_alias) == (versions[0], "challenger_previous")
    # A retry that re-read the alias (no decision to take the expectation from) gets the recorded move too.
    reread = hook.move_alias("clf", "challenger", versions[1], expected_version=versions[1], actor=actor)
    assert reread == first
    with pytest.raises(AliasConflictError, match=r"clf@challenger points to version 2, expected version 1"):
        hook.move_alias("clf", "challenger", versions[1], expected_version=versions[0], actor="train/3/promote")
    with pytest.raises(AliasConflictError):  # the same actor, but not from the holder its move replaced
        hook.move_alias("clf", "challenger", versions[1], expected_version=versions[2], actor=actor)
    with pytest.raises(AliasConflictError):  # anonymous callers have no identity to claim a move by
        hook.move_alias("clf", "challenger", versions[1], expected_version=versions[0])
    assert hook.get_alias_version("clf", "challenger") == versions[1]
    assert [h["state"] for h in hook.alias_history("clf", "challenger")] == ["done", "done"]


def test_promote_operator_retry_after_failed_copy_emits_the_asset_event(hook: MlflowHook,
                                                                         versions: list[str]) -> None:
    """The operator moves the alias, then copy_to fails (the worker is lost): the retry of the same task moves
    nothing, makes the copy and fills the Asset event. The task runs with a minimal stand-in for its context."""
    from types import SimpleNamespace

    from airflow_mlops.operators.registry import PromoteModelAliasOperator, model_alias_asset

    hook.move_alias("clf", "challenger", versions[0], expected_version=None, actor="earlier")
    asset = model_alias_asset("clf", "challenger")
    decision = {"promote": True, "challenger_version": versions[1], "reasons": ["better"],
                "read_aliases": {"challenger": versions[0]}}
    operator = PromoteModelAliasOperator(task_id="promote", model_name="clf", decision=decision, copy_to="clf_prod",
                                         outlets=[asset])

    def context() -> dict[str, object]:
        ti = SimpleNamespace(dag_id="registry_flow", run_id="manual__1", task_id="promote",
                             xcom_push=lambda **kw: None)
        return {"ti": ti, "outlet_events": {asset: SimpleNamespace(extra={})}}

    with _crash_when("copy_model_version", lambda *args: True), pytest.raises(ConnectionError):
        operator.execute(context())  # type: ignore[arg-type]
    assert hook.get_alias_version("clf", "challenger") == versions[1]

    second = context()
    out = operator.execute(second)  # type: ignore[arg-type]
    assert (out["version"], out["previous_version"], out["copied_version"]) == (versions[1], versions[0], "1")
    assert second["outlet_events"][asset].extra["previous_version"] == versions[0]  # type: ignore[index]
    assert [h["by"] for h in hook.alias_history("clf", "challenger")] == ["earlier", "registry_flow/manual__1/promote"]

    # Another DAG run promoting the same version from the same read state is told it lost the race.
    from airflow.sdk.exceptions import AirflowFailException

    other = context()
    other["ti"].run_id = "manual__2"  # type: ignore[attr-defined]
    with pytest.raises(AirflowFailException, match="points to version 2, expected version 1"):
        operator.execute(other)  # type: ignore[arg-type]
