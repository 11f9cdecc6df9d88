"""GPU/compute spec for one step: validated on construction, turned into pod fields by ``core.podspec``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.quantity import parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class CapacityType(str, Enum):
    """Node purchase option the step must land on."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class NodeLabelProfile:
    """How a cluster labels its GPU nodes: maps a GPU type name to node-label values.

    :param name: profile name, shown in error messages.
    :param gpu_label: node label carrying the GPU model.
    :param gpu_values: GPU type (lower case, e.g. ``a100``) -> accepted label values; a pod may land on any.
    :param capacity_label: node label carrying the capacity type (spot / on-demand).
    :param capacity_values: CapacityType value -> label value used by that label.
    """

    name: str
    gpu_label: str
    gpu_values: Mapping[str, tuple[str, ...]]
    capacity_label: str
    capacity_values: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.gpu_values:
            raise SpecError(f"NodeLabelProfile({self.name}).gpu_values", "at least one GPU type", {})
        for gpu_type, values in self.gpu_values.items():
            if gpu_type != gpu_type.lower() or not values:
                raise SpecError(
                    f"NodeLabelProfile({self.name}).gpu_values[{gpu_type!r}]",
                    "a lower-case GPU type mapped to a non-empty tuple of label values",
                    values,
                )
        missing = {c.value for c in CapacityType} - set(self.capacity_values)
        if missing:
            raise SpecError(
                f"NodeLabelProfile({self.name}).capacity_values",
                f"a value for each of {sorted(c.value for c in CapacityType)}",
                dict(self.capacity_values),
            )
        object.__setattr__(self, "gpu_values", MappingProxyType(dict(self.gpu_values)))
        object.__setattr__(self, "capacity_values", MappingProxyType(dict(self.capacity_values)))

    @property
    def gpu_types(self) -> list[str]:
        """The GPU type names this profile knows, sorted."""
        return sorted(self.gpu_values)


#: Karpenter on EKS labels nodes with the instance's GPU name in lower case.
KARPENTER = NodeLabelProfile(
    name="karpenter",
    gpu_label="karpenter.k8s.aws/instance-gpu-name",
    gpu_values={t: (t,) for t in ("a10g", "a100", "h100", "h200", "l4", "l40s", "t4", "v100", "b200")},
    capacity_label="karpenter.sh/capacity-type",
    capacity_values={"spot": "spot", "on-demand": "on-demand"},
)

#: NVIDIA GPU feature discovery (gpu-operator) labels the product name; one type spans several products.
GPU_FEATURE_DISCOVERY = NodeLabelProfile(
    name="gpu-feature-discovery",
    gpu_label="nvidia.com/gpu.product",
    gpu_values={
        "a10g": ("NVIDIA-A10G",),
        "a100": ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-80GB-PCIe"),
        "h100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"),
        "h200": ("NVIDIA-H200",),
        "l4": ("NVIDIA-L4",),
        "l40s": ("NVIDIA-L40S",),
        "t4": ("Tesla-T4",),
        "v100": ("Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-16GB"),
    },
    # GFD does not label capacity; managed node groups on EKS do.
    capacity_label="eks.amazonaws.com/capacityType",
    capacity_values={"spot": "SPOT", "on-demand": "ON_DEMAND"},
)

PROFILES: Mapping[str, NodeLabelProfile] = MappingProxyType(
    {p.name: p for p in (KARPENTER, GPU_FEATURE_DISCOVERY)}
)


def resolve_profile(profile: str | NodeLabelProfile) -> NodeLabelProfile:
    """Return a built-in profile by name, or the given profile; raise SpecError naming the known ones."""
    if isinstance(profile, NodeLabelProfile):
        return profile
    if profile not in PROFILES:
        raise SpecError("GpuSpec.node_labels", f"one of {sorted(PROFILES)} or a NodeLabelProfile", profile)
    return PROFILES[profile]


def _check_int(field_name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(field_name, f"an integer >= {minimum}", value)
    return value


@dataclass(frozen=True)
class GpuSpec:
    """Compute for one step worker: GPUs, CPU/memory, shared memory, placement and scheduling.

    :param gpus: whole GPUs per worker (``nvidia.com/gpu`` limit); 0 for a CPU step.
    :param gpu_type: GPU model (e.g. ``a100``), mapped to node labels by ``node_labels``; needs gpus > 0.
    :param node_labels: profile name (``karpenter``, ``gpu-feature-discovery``) or a NodeLabelProfile.
    :param cpu_request: CPU request, Kubernetes quantity.
    :param cpu_limit: CPU limit; None leaves CPU unbounded (recommended for training).
    :param memory_request: memory request.
    :param memory_limit: memory limit; defaults to the request.
    :param shm_size: size of /dev/shm (emptyDir, medium Memory); counts against the memory limit.
    :param capacity_type: ``spot`` or ``on-demand``; None lets the scheduler choose.
    :param priority_class: PriorityClass name.
    :param queue_name: Kueue LocalQueue name (label ``kueue.x-k8s.io/queue-name``).
    :param service_account: ServiceAccount the pod runs as (IRSA / Pod Identity for S3).
    :param active_deadline_seconds: hard wall-clock limit enforced by Kubernetes.
    :param num_workers: workers; more than 1 runs an Indexed Job with torchrun rendezvous env.
    """

    gpus: int = 0
    gpu_type: str | None = None
    node_labels: str | NodeLabelProfile = "karpenter"
    cpu_request: str | int | float = "1"
    cpu_limit: str | int | float | None = None
    memory_request: str = "2Gi"
    memory_limit: str | None = None
    shm_size: str | None = None
    capacity_type: CapacityType | str | None = None
    priority_class: str | None = None
    queue_name: str | None = None
    service_account: str | None = None
    active_deadline_seconds: int | None = None
    num_workers: int = 1
    extra_tolerations: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_int("GpuSpec.gpus", self.gpus, 0)
        _check_int("GpuSpec.num_workers", self.num_workers, 1)
        profile = resolve_profile(self.node_labels)
        object.__setattr__(self, "node_labels", profile)
        if self.gpu_type is not None:
            gpu_type = str(self.gpu_type).lower()
            if gpu_type not in profile.gpu_values:
                raise SpecError(
                    "GpuSpec.gpu_type", f"one of {profile.gpu_types} (node label profile {profile.name!r})",
                    self.gpu_type,
                )
            if self.gpus == 0:
                raise SpecError("GpuSpec.gpu_type", "unset when gpus == 0 (a GPU type needs gpus >= 1)",
                                self.gpu_type)
            object.__setattr__(self, "gpu_type", gpu_type)
        cpu_req = parse_quantity(self.cpu_request, "GpuSpec.cpu_request")
        if cpu_req <= 0:
            raise SpecError("GpuSpec.cpu_request", "a quantity > 0", self.cpu_request)
        if self.cpu_limit is not None and parse_quantity(self.cpu_limit, "GpuSpec.cpu_limit") < cpu_req:
            raise SpecError("GpuSpec.cpu_limit", f">= cpu_request ({self.cpu_request})", self.cpu_limit)
        mem_req = parse_quantity(self.memory_request, "GpuSpec.memory_request")
        if mem_req <= 0:
            raise SpecError("GpuSpec.memory_request", "a quantity > 0", self.memory_request)
        mem_limit = mem_req
        if self.memory_limit is not None:
            mem_limit = parse_quantity(self.memory_limit, "GpuSpec.memory_limit")
            if mem_limit < mem_req:
                raise SpecError("GpuSpec.memory_limit", f">= memory_request ({self.memory_request})",
                                self.memory_limit)
        if self.shm_size is not None:
            shm = parse_quantity(self.shm_size, "GpuSpec.shm_size")
            if shm <= 0:
                raise SpecError("GpuSpec.shm_size", "a quantity > 0", self.shm_size)
            if shm > mem_limit:
                raise SpecError(
                    "GpuSpec.shm_size",
                    f"<= the memory limit ({self.memory_limit or self.memory_request}): /dev/shm is "
                    "memory-backed and counts against it",
                    self.shm_size,
                )
        if self.capacity_type is not None:
            try:
                object.__setattr__(self, "capacity_type", CapacityType(self.capacity_type))
            except ValueError as err:
                raise SpecError("GpuSpec.capacity_type", f"one of {[c.value for c in CapacityType]} or None",
                                self.capacity_type) from err
        if self.priority_class is not None and not _DNS_SUBDOMAIN.match(self.priority_class):
            raise SpecError("GpuSpec.priority_class", "a DNS-1123 subdomain (lower case, digits, '-', '.')",
                            self.priority_class)
        if self.queue_name is not None and not (_LABEL_VALUE.match(self.queue_name) and self.queue_name):
            raise SpecError("GpuSpec.queue_name", "a non-empty label value (<= 63 chars, alphanumeric, -_.)",
                            self.queue_name)
        if self.service_account is not None and not _DNS_SUBDOMAIN.match(self.service_account):
            raise SpecError("GpuSpec.service_account", "a DNS-1123 subdomain", self.service_account)
        if self.active_deadline_seconds is not None:
            _check_int("GpuSpec.active_deadline_seconds", self.active_deadline_seconds, 1)
        object.__setattr__(self, "extra_tolerations", tuple(dict(t) for t in self.extra_tolerations))

    @property
    def profile(self) -> NodeLabelProfile:
        """The resolved node label profile."""
        assert isinstance(self.node_labels, NodeLabelProfile)
        return self.node_labels

    @property
    def distributed(self) -> bool:
        """True when the step runs as several workers (Indexed Job + rendezvous)."""
        return self.num_workers > 1

    @property
    def effective_memory_limit(self) -> str:
        """The memory limit applied to the container (the request when no limit is given)."""
        return self.memory_limit or self.memory_request

    def describe(self) -> str:
        """One line for logs: ``2x a100 per worker, 2 workers, spot, 8 cpu, 64Gi``."""
        gpu = f"{self.gpus}x {self.gpu_type or 'any GPU'}" if self.gpus else "no GPU"
        parts = [gpu, f"{self.num_workers} worker(s)", f"cpu {self.cpu_request}",
                 f"memory {self.effective_memory_limit}"]
        if self.capacity_type:
            parts.append(CapacityType(self.capacity_type).value)
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GpuSpec:
        """Build from a plain dict (DAG params, templated JSON); unknown keys are named in the error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError("GpuSpec", f"keys among {sorted(known)}", unknown)
        values = dict(data)
        # Rendered templates are strings: accept "2" for integer fields (but not "1.5" or "two").
        for name in ("gpus", "num_workers", "active_deadline_seconds"):
            value = values.get(name)
            if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value, re.ASCII):
                values[name] = int(value)
        for name in ("gpu_type", "capacity_type", "priority_class", "queue_name", "service_account", "shm_size",
                     "memory_limit", "cpu_limit"):
            if values.get(name) in ("", "None", "none"):
                values[name] = None
        if "extra_tolerations" in values:
            values["extra_tolerations"] = tuple(values["extra_tolerations"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def is_dns_label(value: str) -> bool:
    """True when ``value`` is a DNS-1123 label (names of pods' hostnames, services, jobs)."""
    return bool(_DNS_LABEL.match(value))
