"""A step: an image, a command or module, args, env, compute and a timeout. Runtime-independent."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.gpu import GpuSpec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_STEP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

RUNTIMES = ("local", "kubernetes")


def check_runtime(name: str, field_name: str = "runtime") -> str:
    """Return the runtime name if known; raise SpecError listing the allowed ones otherwise."""
    if name not in RUNTIMES:
        raise SpecError(field_name, f"one of {list(RUNTIMES)}", name)
    return name


@dataclass(frozen=True)
class SecretEnvRef:
    """An env var whose value comes from a Kubernetes Secret key: the value never enters the pod spec.

    :param env: the environment variable name inside the container.
    :param secret_name: the Secret's name in the pod's namespace.
    :param key: the key inside the Secret.
    """

    env: str
    secret_name: str
    key: str

    def __post_init__(self) -> None:
        if not _ENV_NAME.match(self.env):
            raise SpecError("SecretEnvRef.env", "an environment variable name", self.env)
        if not _SECRET_NAME.match(self.secret_name):
            raise SpecError("SecretEnvRef.secret_name", "a DNS-1123 subdomain (a Secret name)", self.secret_name)
        if not self.key or not re.match(r"^[-._a-zA-Z0-9]+$", self.key):
            raise SpecError("SecretEnvRef.key", "a Secret data key ([-._a-zA-Z0-9]+)", self.key)


@dataclass(frozen=True)
class StepSpec:
    """What to run, independent of where it runs.

    :param name: short step name (DNS label, <= 40 chars), used in pod/job names and labels.
    :param image: container image for the Kubernetes runtime (pin by digest in production).
    :param module: Python module run as ``python -m module``; exclusive with ``command``.
    :param command: explicit argv prefix; exclusive with ``module``.
    :param args: arguments appended to the module/command.
    :param env: plain environment variables (never secrets: use ``secret_env``).
    :param secret_env: env vars sourced from Kubernetes Secrets.
    :param compute: GPUs, CPU, memory, placement, workers.
    :param timeout_seconds: wall-clock limit for the step (local: killed; Kubernetes: activeDeadlineSeconds
        unless the compute spec sets its own).
    :param python: interpreter for the local runtime (e.g. the checks venv); default: the worker's own.
    :param container_security_context: replaces the secure default container securityContext.
    :param pod_security_context: replaces the secure default pod securityContext.
    :param image_pull_policy: Kubernetes imagePullPolicy.
    """

    name: str
    image: str
    module: str | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnvRef, ...] = ()
    compute: GpuSpec = field(default_factory=GpuSpec)
    timeout_seconds: int = 6 * 3600
    python: str | None = None
    container_security_context: Mapping[str, Any] | None = None
    pod_security_context: Mapping[str, Any] | None = None
    image_pull_policy: str = "IfNotPresent"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _STEP_NAME.match(self.name):
            raise SpecError("StepSpec.name", "a DNS label of at most 40 chars (a-z, 0-9, '-')", self.name)
        if not self.image or not isinstance(self.image, str) or any(c.isspace() for c in self.image):
            raise SpecError("StepSpec.image", "a container image reference", self.image)
        if (self.module is None) == (self.command is None):
            raise SpecError("StepSpec.module/command", "exactly one of module or command", (self.module, self.command))
        if self.command is not None:
            object.__setattr__(self, "command", _str_tuple("StepSpec.command", self.command, non_empty=True))
        object.__setattr__(self, "args", _str_tuple("StepSpec.args", self.args))
        for key, value in self.env.items():
            if not _ENV_NAME.match(key):
                raise SpecError(f"StepSpec.env[{key!r}]", "an environment variable name", key)
            if not isinstance(value, str):
                raise SpecError(f"StepSpec.env[{key!r}]", "a string value", value)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        refs = tuple(self.secret_env)
        for ref in refs:
            if not isinstance(ref, SecretEnvRef):
                raise SpecError("StepSpec.secret_env", "SecretEnvRef items", ref)
        clash = {r.env for r in refs} & set(self.env)
        if clash:
            raise SpecError("StepSpec.secret_env", "names not also set in env", sorted(clash))
        object.__setattr__(self, "secret_env", refs)
        if not isinstance(self.compute, GpuSpec):
            raise SpecError("StepSpec.compute", "a GpuSpec", self.compute)
        if isinstance(self.timeout_seconds, bool) or not isinstance(self.timeout_seconds, int) \
                or self.timeout_seconds <= 0:
            raise SpecError("StepSpec.timeout_seconds", "an integer > 0", self.timeout_seconds)
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SpecError("StepSpec.image_pull_policy", "one of ['Always', 'IfNotPresent', 'Never']",
                            self.image_pull_policy)

    def argv(self, python: str = "python") -> list[str]:
        """The process argv; ``python`` is the interpreter used for module steps."""
        if self.module is not None:
            return [python, "-m", self.module, *self.args]
        assert self.command is not None
        return [*self.command, *self.args]


def _str_tuple(field_name: str, value: Sequence[str] | str, non_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise SpecError(field_name, "a list of strings", value)
    if non_empty and not value:
        raise SpecError(field_name, "a non-empty list of strings", value)
    return tuple(value)
