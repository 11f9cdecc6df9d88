"""Rollout targets: one contract (``RolloutTarget``), four places to roll out to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.rollout.targets.base import TARGET_KINDS, Backend, RolloutTarget, TargetBusy, check_target_kind

__all__ = ["TARGET_KINDS", "Backend", "RolloutTarget", "TargetBusy", "check_target_kind", "make_target"]


def make_target(config: Mapping[str, Any]) -> RolloutTarget:
    """A target from its JSON config: ``{"kind": "local", "name": ..., "model": ..., ...}``.

    The config must be serializable: the operator hands it to its trigger, which rebuilds the target in the
    triggerer.
    """
    if not isinstance(config, Mapping):
        raise SpecError("target", f"a mapping with kind = one of {TARGET_KINDS}", config)
    kind = check_target_kind(str(config.get("kind")))
    options = {k: v for k, v in config.items() if k != "kind"}
    if kind == "local":
        from airflow_mlops.rollout.targets.local import LocalTarget

        return LocalTarget(**options)
    if kind == "kubernetes":
        from airflow_mlops.rollout.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(**options)
    if kind == "sagemaker":
        from airflow_mlops.rollout.targets.sagemaker import SageMakerTarget

        return SageMakerTarget(**options)
    if kind == "kserve":
        from airflow_mlops.rollout.targets.kserve import KServeTarget

        return KServeTarget(**options)
    raise SpecError("target.kind", f"one of {TARGET_KINDS}", kind)
