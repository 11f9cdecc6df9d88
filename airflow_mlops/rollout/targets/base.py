"""The target contract: every place a model can be rolled out to implements these operations."""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import RolloutState

TARGET_KINDS = ("local", "kubernetes", "kserve", "sagemaker")


@dataclass(frozen=True)
class Backend:
    """How analysis reaches one model version at a target.

    :param name: the version's backend name at the target (router backend, Service, production variant).
    :param version: the model version.
    :param url: where to send probe requests directly (None when not reachable from the worker).
    """

    name: str
    version: str
    url: str | None = None


class TargetBusy(RuntimeError):
    """The target cannot take a traffic change now (e.g. a SageMaker endpoint still ``Updating``): the operator
    defers until :meth:`RolloutTarget.settled` and applies the change again, instead of waiting in a worker."""


class RolloutTarget(abc.ABC):
    """Deploy a candidate beside the stable version, shift traffic, persist rollout state, promote or roll back.

    State is persisted **in the target** (a state file, annotations, tags) so a retried or restarted task reads
    it back. ``read_state`` reports the weight the target actually applies, not the one last written: the
    engine compares both to detect an interrupted change.
    """

    kind: str = ""

    @abc.abstractmethod
    def serving_version(self) -> str | None:
        """The version that gets all traffic now (None when nothing is deployed)."""

    @abc.abstractmethod
    def deploy_initial(self, version: str) -> None:
        """Serve ``version`` with all traffic (first deployment: nothing to compare against)."""

    @abc.abstractmethod
    def deploy_candidate(self, state: RolloutState) -> None:
        """Bring the candidate up beside the stable version with no traffic; persist ``state``."""

    @abc.abstractmethod
    def candidate_ready(self, state: RolloutState) -> bool:
        """Whether the candidate can take traffic."""

    @abc.abstractmethod
    def observed_weight(self, state: RolloutState) -> int:
        """The candidate's share of traffic the target applies now (percent)."""

    @abc.abstractmethod
    def apply_weight(self, state: RolloutState) -> None:
        """Persist ``state`` first, then give the candidate ``state.weight`` percent (blue-green: 0 or 100)."""

    @abc.abstractmethod
    def promote(self, state: RolloutState) -> None:
        """Make the candidate the stable version with all traffic; persist ``state`` (phase promoted)."""

    @abc.abstractmethod
    def rollback(self, state: RolloutState) -> None:
        """Give the stable version all traffic and retire the candidate; persist ``state`` (phase aborted)."""

    @abc.abstractmethod
    def load_state(self) -> RolloutState | None:
        """The persisted rollout state (None: no rollout recorded)."""

    @abc.abstractmethod
    def save_state(self, state: RolloutState) -> None:
        """Persist ``state`` without changing traffic."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove everything this target created (tests, demos, decommissioning)."""

    def backends(self, state: RolloutState) -> dict[str, Backend]:
        """``{"candidate": Backend, "stable": Backend}`` for analysis providers."""
        return {"candidate": Backend(self.backend_name(state.candidate), state.candidate),
                **({"stable": Backend(self.backend_name(state.stable), state.stable)} if state.stable else {})}

    @staticmethod
    def keeps_previous(state: RolloutState) -> bool:
        """Whether a promotion keeps the replaced version deployed, scaled down, for a fast rollback later
        (``BlueGreenStrategy.keep_previous``; canaries keep it too). Older versions are always retired."""
        return bool(state.strategy.get("keep_previous", True))

    def backend_name(self, version: str) -> str:
        """The name of a version's backend at this target."""
        return f"v{version}"

    def read_state(self) -> RolloutState | None:
        """The persisted state with the weight the target actually applies."""
        state = self.load_state()
        if state is None:
            return None
        return replace(state, weight=self.observed_weight(state))

    def settled(self) -> bool:
        """Whether the target can take a traffic change now (see :class:`TargetBusy`)."""
        return True

    def describe(self) -> dict[str, Any]:
        """Where this target is, for logs and records."""
        return {"kind": self.kind}

    def analysis_settings(self) -> dict[str, Any]:
        """Provider settings this target knows (e.g. the local router's URL)."""
        return {}


def check_target_kind(kind: str) -> str:
    """Validate a target kind (raises SpecError naming the field and the allowed values)."""
    if kind not in TARGET_KINDS:
        raise SpecError("target.kind", f"one of {TARGET_KINDS}", kind)
    return kind
