"""Reads the configuration surface from Airflow Variables (see ``core.config.SETTINGS``)."""

from __future__ import annotations

import os
import subprocess

from airflow_mlops.core.config import MlopsConfig


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


def load_config() -> MlopsConfig:
    """Resolve settings at task run time (never at parse time: Variable reads are I/O)."""
    return MlopsConfig.resolve(_variable)


def detect_git_sha(path: str) -> str | None:
    """The git sha of the checkout holding ``path``, when it is one (laptop); None elsewhere (MWAA)."""
    sha = os.environ.get("MLOPS_GIT_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(path)), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
