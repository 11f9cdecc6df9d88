"""A fake Kubernetes cluster for integration tests: a kmock API server, a test kubelet and a Job controller.

``FakeCluster`` runs kmock's ``KubernetesEmulator`` (a real aiohttp HTTP server with an in-memory object
store) on its own asyncio event loop in a background thread, so synchronous callers (the ``kubernetes``
client, ``KubernetesPodOperator`` / ``KubernetesJobOperator`` in a synchronous test) and asynchronous ones
(``kubernetes_asyncio`` in the cncf provider's triggers) all talk to it over real HTTP.

On top of kmock, it adds what the API server, the kubelet and the Job controller do in a real cluster:

* API server: uid / resourceVersion / creationTimestamp / generateName on create, defaulting of Pods,
  Jobs, Services and Secrets (``stringData``), ``labelSelector`` / ``fieldSelector`` on list and watch,
  ``timeoutSeconds`` / ``resourceVersion`` on watch, PUT as replace, namespaces, ``pods/log``.
* kubelet: moves each new pod through its phases according to a :class:`Behaviour` and, for :data:`RUN`,
  executes the containers' ``command + args`` as local subprocesses with the env resolved like the
  kubelet does (literal values, Secret / ConfigMap refs, ``fieldRef`` on pod metadata, ``$(VAR)``
  expansion). The combined stdout/stderr becomes the container log, served with ``follow`` /
  ``timestamps`` / ``tailLines`` / ``sinceSeconds``. It also writes the Events a kubelet / scheduler writes.
* Job controller: creates pods from ``spec.template`` (NonIndexed and Indexed completion modes, with
  the labels, annotations, hostname, ownerReferences and ``JOB_COMPLETION_INDEX`` env a real
  controller sets), retries failures up to ``backoffLimit`` (honouring a basic ``podFailurePolicy``),
  and sets the ``Complete`` / ``Failed`` conditions.

The kubelet and the controller run as tasks on the server's event loop (not as separate polling
threads): they react to creations/deletions immediately, and every status change they make goes
through the same store as API writes, so it is visible to GET, LIST and WATCH.

Limitations, on purpose: no restarts (``restartPolicy`` is treated as ``Never``), no exec / attach /
port-forward (so no KPO ``do_xcom_push``), no strategic-merge semantics for lists in PATCH (lists are
replaced), no admission validation beyond names, and objects written straight into
``emulator.objects`` bypass the kubelet and the controller.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import kmock

log = logging.getLogger(__name__)

NODE_NAME = "fake-node-1"
HOST_IP = "10.0.0.11"
DEFAULT_NAMESPACE = "default"

# The resources served by the fake API server, with the discovery information clients may ask for.
PODS = kmock.resource("", "v1", "pods")
EVENTS = kmock.resource("", "v1", "events")
SECRETS = kmock.resource("", "v1", "secrets")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
SERVICES = kmock.resource("", "v1", "services")
SERVICEACCOUNTS = kmock.resource("", "v1", "serviceaccounts")
PVCS = kmock.resource("", "v1", "persistentvolumeclaims")
NAMESPACES = kmock.resource("", "v1", "namespaces")
JOBS = kmock.resource("batch", "v1", "jobs")

_VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
_RESOURCE_INFO: dict[kmock.resource, kmock.ResourceInfo] = {
    PODS: kmock.ResourceInfo(
        kind="Pod",
        singular="pod",
        namespaced=True,
        verbs=_VERBS,
        shortnames={"po"},
        subresources={"status", "log", "exec", "attach", "portforward"},
    ),
    EVENTS: kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs=_VERBS, shortnames={"ev"}
    ),
    SECRETS: kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True, verbs=_VERBS),
    CONFIGMAPS: kmock.ResourceInfo(
        kind="ConfigMap", singular="configmap", namespaced=True, verbs=_VERBS, shortnames={"cm"}
    ),
    SERVICES: kmock.ResourceInfo(
        kind="Service",
        singular="service",
        namespaced=True,
        verbs=_VERBS,
        shortnames={"svc"},
        subresources={"status"},
    ),
    SERVICEACCOUNTS: kmock.ResourceInfo(
        kind="ServiceAccount", singular="serviceaccount", namespaced=True, verbs=_VERBS, shortnames={"sa"}
    ),
    PVCS: kmock.ResourceInfo(
        kind="PersistentVolumeClaim",
        singular="persistentvolumeclaim",
        namespaced=True,
        verbs=_VERBS,
        shortnames={"pvc"},
        subresources={"status"},
    ),
    NAMESPACES: kmock.ResourceInfo(
        kind="Namespace",
        singular="namespace",
        namespaced=False,
        verbs=_VERBS,
        shortnames={"ns"},
        subresources={"status"},
    ),
    JOBS: kmock.ResourceInfo(
        kind="Job", singular="job", namespaced=True, verbs=_VERBS, categories={"all"}, subresources={"status"}
    ),
}
_BY_PLURAL: dict[str, kmock.resource] = {str(res.plural): res for res in _RESOURCE_INFO}

ResourceLike = str | kmock.resource


# --------------------------------------------------------------------------------------------------
# Behaviours: what the fake kubelet does with a pod.
# --------------------------------------------------------------------------------------------------

_B = TypeVar("_B", bound="Behaviour")


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """Base of what the fake kubelet does with a pod; call an instance to get a tweaked copy.

    ``FAIL(3)`` or ``FAIL(exit_code=3)`` returns a copy of ``FAIL`` with ``exit_code=3``: positional
    arguments map to the dataclass fields in their declaration order.
    """

    def __call__(self: _B, *args: Any, **overrides: Any) -> _B:
        names = [field.name for field in dataclasses.fields(self)]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        overrides.update(zip(names, args, strict=False))
        return dataclasses.replace(self, **overrides)


@dataclasses.dataclass(frozen=True)
class Run(Behaviour):
    """Run the containers' ``command + args`` as local subprocesses; the exit code decides the phase.

    Exit code 0 ends as phase Succeeded (container reason ``Completed``), anything else as Failed
    (reason ``Error``). A container without a command exits 0 at once with an empty log.
    """


@dataclasses.dataclass(frozen=True)
class OOMKilled(Behaviour):
    """Run for ``run_for`` seconds writing ``log``, then die with reason ``OOMKilled`` and exit code 137."""

    log: str = "Loading model weights...\nAllocating batch on device...\n"
    run_for: float = 0.3


@dataclasses.dataclass(frozen=True)
class Evicted(Behaviour):
    """Run for ``run_for`` seconds, then get evicted: pod phase Failed with ``reason`` / ``message``.

    Containers end terminated with exit code 137. When ``disruption_reason`` is set, the pod also gets
    the ``DisruptionTarget`` condition real clusters add (``TerminationByKubelet`` for node-pressure
    evictions and node shutdowns, ``PreemptionByScheduler`` for scheduler preemption) -- this is what a
    Job's ``podFailurePolicy`` ``onPodConditions`` matches.
    """

    reason: str = "Evicted"
    message: str = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
    disruption_reason: str | None = "TerminationByKubelet"
    log: str = ""
    run_for: float = 0.3
    #: When set, the main container really runs its command and is evicted (process group killed) as soon
    #: as its log contains this text: a spot interruption in the middle of training.
    evict_on_log: str | None = None


@dataclasses.dataclass(frozen=True)
class ImagePullBackOff(Behaviour):
    """Stay Pending forever: the container waits with ``ErrImagePull`` then ``ImagePullBackOff``.

    Writes the kubelet's ``Pulling`` / ``Failed`` / ``BackOff`` Events, ``Failed`` carrying
    ``Failed to pull image "<image>": ...: <detail>``.
    """

    detail: str = "not found"


@dataclasses.dataclass(frozen=True)
class Unschedulable(Behaviour):
    """Stay Pending forever: ``PodScheduled=False`` (reason ``Unschedulable``), a FailedScheduling Event."""

    message: str = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."


@dataclasses.dataclass(frozen=True)
class Fail(Behaviour):
    """Run nothing: after ``run_for`` seconds the containers terminate with reason Error and ``exit_code``."""

    exit_code: int = 1
    log: str = "Traceback (most recent call last):\nRuntimeError: simulated failure\n"
    run_for: float = 0.0


RUN = Run()
OOM = OOMKilled()
EVICTED = Evicted()
#: A spot/preemptible node going away (GKE/EKS graceful node shutdown), as the kubelet reports it.
PREEMPTED = Evicted(
    reason="Terminated",
    message="Pod was terminated in response to imminent node shutdown.",
    disruption_reason="TerminationByKubelet",
)
IMAGE_PULL = ImagePullBackOff()
UNSCHEDULABLE = Unschedulable()
FAIL = Fail()

BehaviourPolicy = Callable[[dict[str, Any]], Behaviour]


@dataclasses.dataclass
class RanCommand:
    """One container executed by the fake kubelet: its argv, the env from its spec, and the outcome.

    ``env`` holds only the variables the pod spec defines (resolved); the process also inherits
    ``os.environ`` (plus ``PYTHONUNBUFFERED=1``), which is not repeated here.
    """

    namespace: str
    pod: str
    container: str
    argv: list[str]
    env: dict[str, str]
    exit_code: int | None = None
    output: str = ""


# --------------------------------------------------------------------------------------------------
# Small pure helpers: selectors, timestamps, images, env expansion.
# --------------------------------------------------------------------------------------------------

_SELECTOR_TERMS = re.compile(r",(?![^()]*\))")
_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(\S*)\s*$")
_FIELD_REF_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_PYTHON = re.compile(r"^(?:.*/)?python(?:\d+(?:\.\d+)?)?$")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generateName suffixes


class _BadRequest(kmock.KubernetesError):
    """A 400 error with the Kubernetes ``BadRequest`` reason."""


def _k8s_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or {})


def matches_label_selector(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    """Whether ``labels`` satisfy a Kubernetes label selector string.

    Supports ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)`` and ``k notin (a,b)``,
    comma-separated (all must hold), like the API server.
    """
    labels = labels or {}
    for raw_term in _SELECTOR_TERMS.split(selector or ""):
        term = raw_term.strip()
        if not term:
            continue
        if match := _SET_TERM.match(term):
            key, op = match.group(1), match.group(2)
            values = {value.strip() for value in match.group(3).split(",") if value.strip()}
            ok = labels.get(key) in values if op == "in" else labels.get(key) not in values
        elif match := _EQ_TERM.match(term):
            key, op, value = match.group(1), match.group(2), match.group(3)
            ok = labels.get(key) == value if op != "!=" else labels.get(key) != value
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _lookup(obj: Any, path: str) -> Any:
    """Follow a dotted path (``status.phase``) through nested dicts; None where it breaks off."""
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def matches_field_selector(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Whether ``obj`` satisfies a field selector such as ``involvedObject.name=x,status.phase!=Failed``.

    Any dotted path is accepted (the real API server allows only a per-kind list); a missing field
    compares as the empty string.
    """
    for raw_term in (selector or "").split(","):
        term = raw_term.strip()
        if not term:
            continue
        match = _EQ_TERM.match(term)
        if not match:
            raise _BadRequest(status=400, reason="BadRequest", message=f"invalid field selector: {term!r}")
        path, op, value = match.group(1), match.group(2), match.group(3)
        actual = _lookup(obj, path)
        text = "" if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
        if (text == value) != (op != "!="):
            return False
    return True


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ts(moment: datetime | None = None) -> str:
    """RFC 3339 with seconds, as Kubernetes writes object timestamps."""
    return (moment or _now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_ts(moment: datetime) -> bytes:
    """RFC 3339 with nanoseconds, as the kubelet prefixes log lines with ``timestamps=true``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _api_version(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


def _image_parts(image: str) -> tuple[str, str, str]:
    """Split an image reference into its normalized repository, tag and digest (Docker's rules)."""
    name, _, digest = image.partition("@")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1 or not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = ["docker.io", *(["library"] if len(parts) == 1 else []), *parts]
    return "/".join(parts), tag or ("" if digest else "latest"), digest


def image_status(image: str) -> tuple[str, str]:
    """The ``image`` and ``imageID`` a container status reports, the digest derived from the image."""
    repo, tag, digest = _image_parts(image)
    digest = digest or f"sha256:{hashlib.sha256(image.encode()).hexdigest()}"
    return (f"{repo}:{tag}" if tag else f"{repo}@{digest}"), f"{repo}@{digest}"


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes a ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(substitute, text)


def _compress_indexes(indexes: Iterable[int]) -> str:
    """Format ``{0, 1, 2, 5}`` as ``"0-2,5"`` like ``status.completedIndexes``."""
    ranges: list[list[int]] = []
    for index in sorted(indexes):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (None deletes a key; lists are replaced)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, Mapping) and isinstance(old[key], Mapping):
            if sub := _merge_diff(old[key], value):
                patch[key] = sub
        elif value != old[key]:
            patch[key] = value
    return patch


def _qos_class(containers: Sequence[Mapping[str, Any]]) -> str:
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        r.get("limits", {}).get(kind)
        and (r.get("requests") or r.get("limits", {})).get(kind) == r.get("limits", {}).get(kind)
        for r in resources
        for kind in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _condition(
    kind: str, status: bool, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": _ts(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


# --------------------------------------------------------------------------------------------------
# The API server: kmock's emulator plus the API-server semantics that kmock leaves out.
# --------------------------------------------------------------------------------------------------


class _StopWatch:
    """A bus item that ends one watch stream (``token``), or all of them (``token=None``)."""

    def __init__(self, token: object | None) -> None:
        self.token = token


class _ApiServer(kmock.KubernetesEmulator):
    """kmock's ``KubernetesEmulator`` with the API-server behaviour the fake cluster needs.

    Must be created and used on the server's event loop. ``setup()`` wires it to its ``FakeCluster``,
    whose ``_on_created`` / ``_on_deleted`` hooks run the kubelet and the Job controller.
    The ``a*`` methods (``acreate``, ``apatch``, ...) are the in-process store API; they keep the
    resourceVersion counter and the watch streams consistent with HTTP writes.
    """

    def setup(self, cluster: FakeCluster, namespaces: Iterable[str]) -> None:
        """Declare the resources, the namespaces and the extra endpoints (``pods/log``, exec)."""
        self.cluster = cluster
        self.resource_version = 0
        self.closing = False
        self.rng = random.Random(0)
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.unexpected_errors: list[BaseException] = []
        for res, info in _RESOURCE_INFO.items():
            self.resources[res] = info
        for name in namespaces:
            self._add_namespace({"metadata": {"name": name}})
        is_log = lambda request: request.resource == PODS and request.subresource == "log"  # noqa: E731
        is_exec = lambda request: request.subresource in ("exec", "attach", "portforward")  # noqa: E731
        self[kmock.method.GET][is_log] << self._serve_log
        self[is_exec] << self._serve_unsupported
        is_version = lambda request: request.url.path == "/version/"  # noqa: E731  # the client adds a slash
        self[kmock.method.GET][is_version] << self._serve_server_version

    # ---- the in-process store API (event loop only) ----

    def next_resource_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _find(self, res: kmock.resource, namespace: str | None, name: str) -> Any:
        key = (res, namespace, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj

    async def aget(self, res: kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The current state of one object, or None."""
        async with self._lock:
            obj = self._find(res, namespace, name)
            return obj.raw if obj is not None else None

    async def alist(
        self,
        res: kmock.resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The current objects of a resource (all namespaces if None), filtered by the selectors."""
        async with self._lock:
            return [
                obj.raw
                for (obj_res, obj_ns, _), obj in self.objects.items()
                if obj_res == res and (namespace is None or obj_ns == namespace) and not obj.deleted
                if self._selected(obj.raw, label_selector, field_selector)
            ]

    @staticmethod
    def _selected(raw: Mapping[str, Any], label_selector: str | None, field_selector: str | None) -> bool:
        labels = (raw.get("metadata") or {}).get("labels")
        return matches_label_selector(labels, label_selector) and matches_field_selector(raw, field_selector)

    async def acreate(
        self, res: kmock.resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create an object as a POST would (defaulting, conflict check, ADDED event, controller hooks)."""
        body = copy.deepcopy(body)
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        async with self._lock:
            self.admit_create(res, body, namespace)
            key = (res, body["metadata"].get("namespace"), body["metadata"]["name"])
            if key in self.objects and not self.objects[key].deleted:
                raise _k8s_error(409, "AlreadyExists", f'{res.plural} "{key[2]}" already exists')
            if key in self.objects:
                self.objects[key].create(body)
            else:
                self.objects[key] = body
            raw = self.objects[key].raw
            await self._buses[res].put({"type": "ADDED", "object": raw})
        await self.cluster._on_created(res, raw)
        return raw

    async def apatch(
        self, res: kmock.resource, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch an object (a MODIFIED event); None if it does not exist (any more)."""
        async with self._lock:
            obj = self._find(res, namespace, name)
            if obj is None:
                return None
            metadata = dict(patch.get("metadata") or {}, resourceVersion=self.next_resource_version())
            obj.patch(dict(patch, metadata=metadata))
            raw = obj.raw
            await self._buses[res].put({"type": "MODIFIED", "object": raw})
            return raw

    async def adelete(
        self, res: kmock.resource, namespace: str | None, name: str, policy: str | None = None
    ) -> bool:
        """Delete an object at once (a DELETED event, controller hooks); False if it did not exist."""
        async with self._lock:
            obj = self._find(res, namespace, name)
            if obj is None:
                return False
            raw = obj.raw
            obj.delete()
            await self._buses[res].put({"type": "DELETED", "object": raw})
        await self.cluster._on_deleted(res, raw, policy)
        return True

    async def emit_event(
        self,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Write a core/v1 Event about ``obj``, as the kubelet, scheduler or a controller would."""
        meta = obj.get("metadata") or {}
        now = _ts()
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        event = {
            "metadata": {
                "name": f"{meta.get('name')}.{self.rng.getrandbits(64):016x}",
                "namespace": meta.get("namespace") or DEFAULT_NAMESPACE,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME if component == "kubelet" else "",
        }
        await self.acreate(EVENTS, event)

    # ---- admission: what the API server adds to objects on create ----

    def admit_create(self, res: kmock.resource, body: dict[str, Any], namespace: str | None) -> None:
        """Default a new object in place: name, namespace, uid, resourceVersion, kind, per-kind defaults."""
        info = self.resources[res] if res in self.resources else kmock.ResourceInfo()
        meta = body.setdefault("metadata", {}) or {}
        body["metadata"] = meta
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _k8s_error(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + "".join(self.rng.choice(_NAME_CHARS) for _ in range(5))
        if info.namespaced is not False:
            meta["namespace"] = namespace or meta.get("namespace") or DEFAULT_NAMESPACE
            if meta["namespace"] not in self.namespaces:
                raise _k8s_error(
                    404,
                    "NotFound",
                    f'namespaces "{meta["namespace"]}" not found',
                    name=meta["namespace"],
                    kind="namespaces",
                )
        meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        meta["resourceVersion"] = self.next_resource_version()
        meta["creationTimestamp"] = _ts()
        meta.setdefault("generation", 1)
        body.setdefault("apiVersion", _api_version(res))
        if info.kind:
            body.setdefault("kind", info.kind)
        if res == PODS:
            self._default_pod(body)
        elif res == JOBS:
            self._default_job(body)
        elif res == SERVICES:
            spec = body.setdefault("spec", {})
            if spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
                spec.setdefault("clusterIP", f"10.96.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}")
            spec.setdefault("type", "ClusterIP")
            body.setdefault("status", {"loadBalancer": {}})
        elif res == SECRETS:
            data = dict(body.get("data") or {})
            for key, value in (body.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            body["data"] = data
            body.setdefault("type", "Opaque")

    @staticmethod
    def _default_pod(pod: dict[str, Any]) -> None:
        spec = pod.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("enableServiceLinks", True)
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault(
                "imagePullPolicy",
                "Always"
                if container.get("image", "").endswith(":latest")
                or ":" not in container.get("image", "").rsplit("/", 1)[-1]
                else "IfNotPresent",
            )
        pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec.get("containers") or [])}

    @staticmethod
    def _default_job(job: dict[str, Any]) -> None:
        meta = job["metadata"]
        uid, name = meta["uid"], meta["name"]
        controller_labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec = job.setdefault("spec", {})
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        spec.setdefault("manualSelector", False)
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template = spec.setdefault("template", {})
        template_meta = template.setdefault("metadata", {}) or {}
        template["metadata"] = template_meta
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **controller_labels}
        meta["labels"] = {**controller_labels, **(meta.get("labels") or {})}
        job["status"] = {}

    # ---- the HTTP side ----

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve namespaces here: kmock cannot parse ``/api/v1/namespaces[/name]`` as resource URLs."""
        match = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", raw_request.path)
        if match and raw_request.method in ("GET", "POST"):
            return await self._serve_namespaces(raw_request, match.group(1))
        return await super().__call__(raw_request)

    def _add_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise _k8s_error(422, "Invalid", "metadata.name is required")
        if name in self.namespaces:
            raise _k8s_error(409, "AlreadyExists", f'namespaces "{name}" already exists')
        self.namespaces[name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                **(body.get("metadata") or {}),
                "uid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "resourceVersion": self.next_resource_version(),
                "creationTimestamp": _ts(),
                "labels": {
                    **((body.get("metadata") or {}).get("labels") or {}),
                    "kubernetes.io/metadata.name": name,
                },
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        return self.namespaces[name]

    async def _serve_namespaces(
        self, raw_request: aiohttp.web.BaseRequest, name: str | None
    ) -> aiohttp.web.Response:
        try:
            if raw_request.method == "POST":
                return aiohttp.web.json_response(self._add_namespace(await raw_request.json()), status=201)
            if name is None:
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "NamespaceList",
                        "metadata": {"resourceVersion": str(self.resource_version)},
                        "items": list(self.namespaces.values()),
                    }
                )
            if name not in self.namespaces:
                raise _k8s_error(
                    404, "NotFound", f'namespaces "{name}" not found', name=name, kind="namespaces"
                )
            return aiohttp.web.json_response(self.namespaces[name])
        except kmock.KubernetesError as exc:
            response = await self._render_error(exc)
            assert isinstance(response, aiohttp.web.Response)
            return response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Pre-process writes (defaulting, resourceVersion, PUT), delegate to kmock, then run hooks."""
        res = request.resource
        deleted: dict[str, Any] | None = None
        if res is not None and res.plural and request.subresource is None:
            if request.method == "GET" and _is_true(request.params.get("watch")):
                # The sync `kubernetes` client sends `watch=True`; kmock only recognizes `watch=true`.
                object.__setattr__(request, "action", kmock.action.WATCH)
            if request.action == kmock.action.CREATE:
                if not isinstance(request.data, dict):
                    raise _k8s_error(400, "BadRequest", "the request body must be a JSON object")
                async with self._lock:
                    self.admit_create(res, request.data, request.namespace)
            elif request.action == kmock.action.DELETE and request.name:
                deleted = await self.aget(res, request.namespace, request.name)
        if res is not None and res.plural and request.name:
            if request.method == "PUT" and isinstance(request.data, dict):
                # A replace: express it as a merge patch from the current state.
                current = await self.aget(res, request.namespace, request.name)
                if current is None:
                    raise _k8s_error(404, "NotFound", f'{res.plural} "{request.name}" not found')
                object.__setattr__(request, "action", kmock.action.UPDATE)
                object.__setattr__(request, "data", _merge_diff(current, request.data))
            if request.action == kmock.action.UPDATE:
                rv = self.next_resource_version()
                if isinstance(request.data, dict):
                    request.data.setdefault("metadata", {})
                    request.data["metadata"] = dict(request.data["metadata"] or {}, resourceVersion=rv)
                elif isinstance(request.data, list):
                    request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})

        response = await super()._handle(request)

        if res is not None and response.status < 300 and request.subresource is None:
            if request.action == kmock.action.CREATE:
                meta = request.data["metadata"]
                created = await self.aget(res, meta.get("namespace"), meta["name"])
                if created is not None:
                    await self.cluster._on_created(res, created)
            elif deleted is not None and request.action == kmock.action.DELETE:
                options = request.data if isinstance(request.data, dict) else {}
                policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
                await self.cluster._on_deleted(res, deleted, policy)
        return response

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        items = await self.alist(
            request.resource,
            request.namespace,
            request.params.get("labelSelector"),
            request.params.get("fieldSelector"),
        )
        kind = self.resources[request.resource].kind if request.resource in self.resources else None
        return {
            "apiVersion": _api_version(request.resource),
            "kind": f"{kind or 'Object'}List",
            "metadata": {"resourceVersion": str(self.resource_version)},
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        """Stream ADDED for the current objects, then live changes; honours selectors and timeoutSeconds."""
        yield b""  # send the headers now, even if nothing happens for a while
        res = request.resource
        assert res is not None
        params = request.params
        label_selector, field_selector = params.get("labelSelector"), params.get("fieldSelector")
        since = (
            int(params.get("resourceVersion") or 0) if (params.get("resourceVersion") or "0").isdigit() else 0
        )
        bus = self._buses[res]
        marker = await bus.mark()
        token = object()
        timer: asyncio.TimerHandle | None = None
        try:
            async with self._lock:
                snapshot_rv = self.resource_version
                snapshot = [
                    obj.raw
                    for (obj_res, obj_ns, obj_name), obj in self.objects.items()
                    if obj_res == res and not obj.deleted
                    if request.namespace is None or obj_ns == request.namespace
                    if request.name is None or obj_name == request.name
                ]
            for raw in snapshot:
                is_new = int(raw["metadata"].get("resourceVersion") or 0) > since
                if is_new and self._selected(raw, label_selector, field_selector):
                    yield {"type": "ADDED", "object": raw}
            if params.get("timeoutSeconds"):
                loop = asyncio.get_running_loop()
                timer = loop.call_later(
                    float(params["timeoutSeconds"]),
                    lambda: loop.create_task(bus.put(_StopWatch(token))),
                )
            if self.closing:
                return
            async for event in bus.stream(since=marker):
                if isinstance(event, _StopWatch):
                    if event.token is None or event.token is token:
                        return
                    continue
                raw = event["object"]
                meta = raw.get("metadata") or {}
                if event["type"] != "DELETED" and int(meta.get("resourceVersion") or 0) <= snapshot_rv:
                    continue  # already sent in the snapshot
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if request.name is not None and meta.get("name") != request.name:
                    continue
                if self._selected(raw, label_selector, field_selector):
                    yield event
        finally:
            if timer is not None:
                timer.cancel()
            await bus.unmark(marker)

    async def _serve_log(self, request: kmock.Request) -> kmock.Payload:
        """``GET pods/{name}/log``: container, follow, timestamps, tailLines, sinceSeconds."""
        pod = await self.aget(PODS, request.namespace, request.name or "")
        if pod is None:
            raise _k8s_error(
                404, "NotFound", f'pods "{request.name}" not found', name=request.name, kind="pods"
            )
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        container = request.params.get("container")
        if not container:
            if len(names) != 1:
                raise _BadRequest(
                    status=400,
                    reason="BadRequest",
                    message=(
                        f"a container name must be specified for pod {request.name}, choose one of: {names}"
                    ),
                )
            container = names[0]
        if container not in names + init_names:
            raise _BadRequest(
                status=400,
                reason="BadRequest",
                message=f"container {container} is not valid for pod {request.name}",
            )
        buffer = self.cluster._kubelet.logs.get((request.namespace or "", request.name or "", container))
        if buffer is None or buffer.pod_uid != pod["metadata"]["uid"]:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            waiting = next((s["state"].get("waiting") for s in statuses if s.get("name") == container), None)
            reason = (waiting or {}).get("reason") or "ContainerCreating"
            raise _BadRequest(
                status=400,
                reason="BadRequest",
                message=(f'container "{container}" in pod "{request.name}" is waiting to start: {reason}'),
            )
        params = request.params
        timestamps = _is_true(params.get("timestamps"))
        start = buffer.start_index(
            since_seconds=int(params["sinceSeconds"]) if params.get("sinceSeconds") else None,
            tail_lines=int(params["tailLines"]) if params.get("tailLines") else None,
        )
        if not _is_true(params.get("follow")):
            return buffer.render(start, len(buffer.lines), timestamps)
        return self._follow_log(buffer, start, timestamps)

    async def _follow_log(self, buffer: _LogBuffer, start: int, timestamps: bool) -> AsyncIterator[bytes]:
        yield b""  # send the headers now
        index = start
        while True:
            end = len(buffer.lines)
            if index < end:
                yield buffer.render(index, end, timestamps)
                index = end
            if buffer.done or self.closing:
                return
            async with buffer.changed:
                await buffer.changed.wait_for(functools.partial(self._log_advanced, buffer, index))

    def _log_advanced(self, buffer: _LogBuffer, index: int) -> bool:
        return len(buffer.lines) > index or buffer.done or self.closing

    async def _serve_unsupported(self, request: kmock.Request) -> kmock.Payload:
        raise _k8s_error(
            405,
            "MethodNotAllowed",
            f"pods/{request.subresource} is not supported by the fake Kubernetes cluster",
        )

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """Render errors as a Kubernetes Status with conventional reasons; remember unexpected ones."""
        if not isinstance(exc, kmock.KubernetesError):
            self.unexpected_errors.append(exc)
            log.error("Fake Kubernetes API server error", exc_info=exc)
            return await super()._render_error(exc)
        reasons = {
            400: "BadRequest",
            404: "NotFound",
            405: "MethodNotAllowed",
            409: "AlreadyExists",
            422: "Invalid",
        }
        reason = exc.reason if exc.reason and " " not in exc.reason else reasons.get(exc.status, exc.reason)
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": exc.status,
                "reason": reason,
                "message": exc.message or reason,
                "details": exc.details
                if isinstance(exc.details, dict) and "traceback" not in exc.details
                else {},
            },
            status=exc.status,
        )


# --------------------------------------------------------------------------------------------------
# The kubelet: pod phases, container processes, logs.
# --------------------------------------------------------------------------------------------------


class _ConfigError(Exception):
    """A container's env references a missing Secret/ConfigMap (CreateContainerConfigError)."""


class _LogBuffer:
    """The log lines of one container, with their arrival times; followers wait on ``changed``."""

    def __init__(self, pod_uid: str) -> None:
        self.pod_uid = pod_uid
        self.lines: list[tuple[datetime, bytes]] = []
        self.done = False
        self.changed = asyncio.Condition()
        self._partial = b""

    async def write(self, data: bytes) -> None:
        """Append output; complete lines become log entries, a trailing partial line waits for more."""
        now = _now()
        *complete, self._partial = (self._partial + data).split(b"\n")
        if complete:
            self.lines.extend((now, line) for line in complete)
            async with self.changed:
                self.changed.notify_all()

    async def close(self) -> None:
        """Flush a trailing partial line and end the followers' streams."""
        if self._partial:
            self.lines.append((_now(), self._partial))
            self._partial = b""
        self.done = True
        async with self.changed:
            self.changed.notify_all()

    def start_index(self, *, since_seconds: int | None, tail_lines: int | None) -> int:
        start = 0
        if since_seconds is not None:
            threshold = _now() - timedelta(seconds=since_seconds)
            start = next(
                (i for i, (moment, _) in enumerate(self.lines) if moment >= threshold), len(self.lines)
            )
        if tail_lines is not None:
            start = max(start, len(self.lines) - tail_lines)
        return start

    def render(self, start: int, end: int, timestamps: bool) -> bytes:
        return b"".join(
            (_log_ts(moment) + b" " if timestamps else b"") + line + b"\n"
            for moment, line in self.lines[start:end]
        )

    def text(self) -> str:
        data = b"".join(line + b"\n" for _, line in self.lines) + self._partial
        return data.decode(errors="replace")


class _Kubelet:
    """Drives pods through their phases on the server's loop, one task per pod, per its behaviour."""

    def __init__(self, cluster: FakeCluster, api: _ApiServer) -> None:
        self.cluster = cluster
        self.api = api
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.done: dict[tuple[str, str], asyncio.Future[str]] = {}
        self.logs: dict[tuple[str, str, str], _LogBuffer] = {}
        self.pod_ips = iter(f"10.244.0.{i}" for i in range(2, 100_000))

    def start(self, pod: dict[str, Any], behaviour: Behaviour) -> asyncio.Future[str]:
        """Start driving a new pod; the future resolves to its final phase (or ``Deleted``)."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.done[key] = asyncio.get_running_loop().create_future()
        self.tasks[key] = asyncio.get_running_loop().create_task(self._drive(key, pod, behaviour))
        return self.done[key]

    async def stop(self, namespace: str, name: str) -> None:
        """The pod was deleted: kill its processes, end its logs, resolve its future as ``Deleted``."""
        key = (namespace, name)
        task = self.tasks.pop(key, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        future = self.done.get(key)
        if future is not None and not future.done():
            future.set_result("Deleted")

    async def shutdown(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for buffer in self.logs.values():
            await buffer.close()

    # ---- status plumbing ----

    async def _patch_status(self, key: tuple[str, str], status: Mapping[str, Any], **extra: Any) -> None:
        await self.api.apatch(PODS, key[0], key[1], {"status": dict(status), **extra})

    @staticmethod
    def _container_status(
        pod: Mapping[str, Any], container: Mapping[str, Any], state: Mapping[str, Any]
    ) -> dict[str, Any]:
        image, image_id = image_status(container.get("image") or "")
        waiting = "waiting" in state
        status: dict[str, Any] = {
            "name": container["name"],
            "image": image,
            "imageID": "" if waiting else image_id,
            "ready": "running" in state,
            "started": "running" in state,
            "restartCount": 0,
            "lastState": {},
            "state": dict(state),
        }
        if not waiting:
            digest = hashlib.sha256(f"{pod['metadata']['uid']}/{container['name']}".encode()).hexdigest()
            status["containerID"] = f"containerd://{digest}"
        return status

    def _statuses(
        self, pod: Mapping[str, Any], states: Mapping[str, Mapping[str, Any]], init: bool = False
    ) -> list[dict[str, Any]]:
        containers = (pod["spec"].get("initContainers") if init else pod["spec"].get("containers")) or []
        return [self._container_status(pod, c, states[c["name"]]) for c in containers if c["name"] in states]

    @staticmethod
    def _conditions(
        stage: str, not_ready: Sequence[str] = (), extra: Sequence[dict[str, Any]] = ()
    ) -> list[dict[str, Any]]:
        """The pod conditions at a stage: ``scheduled``, ``initializing``, ``running`` or ``finished``."""
        running = stage == "running"
        reason = "PodCompleted" if stage == "finished" else None if running else "ContainersNotReady"
        message = (
            None if running or stage == "finished" else f"containers with unready status: {list(not_ready)}"
        )
        return [
            *extra,
            _condition("PodReadyToStartContainers", stage in ("initializing", "running")),
            _condition(
                "Initialized",
                stage != "initializing",
                None if stage != "initializing" else "ContainersNotInitialized",
            ),
            _condition("Ready", running, reason, message),
            _condition("ContainersReady", running, reason, message),
            _condition("PodScheduled", True),
        ]

    # ---- the lifecycle ----

    async def _drive(self, key: tuple[str, str], pod: dict[str, Any], behaviour: Behaviour) -> None:
        delay = self.cluster.phase_delay
        spec = pod["spec"]
        containers: list[dict[str, Any]] = spec.get("containers") or []
        inits: list[dict[str, Any]] = spec.get("initContainers") or []
        names = [c["name"] for c in containers]
        try:
            await asyncio.sleep(delay)
            if isinstance(behaviour, Unschedulable):
                await self._patch_status(
                    key,
                    {
                        "phase": "Pending",
                        "conditions": [_condition("PodScheduled", False, "Unschedulable", behaviour.message)],
                    },
                )
                await self.api.emit_event(
                    pod, "FailedScheduling", behaviour.message, type="Warning", component="default-scheduler"
                )
                return

            pod_ip = next(self.pod_ips)
            init_states = {c["name"]: {"waiting": {"reason": "PodInitializing"}} for c in inits}
            waiting_reason = "PodInitializing" if inits else "ContainerCreating"
            states: dict[str, dict[str, Any]] = {n: {"waiting": {"reason": waiting_reason}} for n in names}
            await self._patch_status(
                key,
                {
                    "phase": "Pending",
                    "conditions": self._conditions("scheduled", names),
                    "hostIP": HOST_IP,
                    "hostIPs": [{"ip": HOST_IP}],
                    "podIP": pod_ip,
                    "podIPs": [{"ip": pod_ip}],
                    "startTime": _ts(),
                    "initContainerStatuses": self._statuses(pod, init_states, init=True),
                    "containerStatuses": self._statuses(pod, states),
                },
                spec={"nodeName": NODE_NAME},
            )
            await self.api.emit_event(
                pod,
                "Scheduled",
                f"Successfully assigned {key[0]}/{key[1]} to {NODE_NAME}",
                component="default-scheduler",
            )
            pod = await self.api.aget(PODS, *key) or pod
            await asyncio.sleep(delay)

            if isinstance(behaviour, ImagePullBackOff):
                await self._image_pull_backoff(key, pod, behaviour, states)
                return

            envs: dict[str, dict[str, str]] = {}
            runs_command = isinstance(behaviour, Run) or (
                isinstance(behaviour, Evicted) and behaviour.evict_on_log is not None
            )
            if runs_command:
                try:
                    for container in [*inits, *containers]:
                        envs[container["name"]] = await self._resolve_env(pod, container)
                except _ConfigError as exc:
                    for name in names:
                        states[name] = {
                            "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                        }
                    await self._patch_status(key, {"containerStatuses": self._statuses(pod, states)})
                    await self.api.emit_event(pod, "Failed", f"Error: {exc}", type="Warning")
                    return

            for container in inits:  # sequentially, each to completion, before the main containers
                name = container["name"]
                code, reason, message = 0, "Completed", None
                if isinstance(behaviour, Run):
                    buffer = self._new_buffer(key, pod, name)
                    started = _ts()
                    init_states[name] = {"running": {"startedAt": started}}
                    await self._patch_status(
                        key,
                        {
                            "conditions": self._conditions("initializing", names),
                            "initContainerStatuses": self._statuses(pod, init_states, init=True),
                        },
                    )
                    code, reason, message = await self._run(pod, container, envs[name], buffer)
                    await buffer.close()
                else:
                    started = _ts()
                init_states[name] = {"terminated": self._terminated(code, reason, started, message)}
                if code != 0:
                    for main in names:
                        states[main] = {"waiting": {"reason": "PodInitializing"}}
                    await self._finish(key, pod, "Failed", states, init_states)
                    return

            for container in containers:
                self._new_buffer(key, pod, container["name"])
                for reason, message in (
                    ("Pulled", f'Container image "{container.get("image")}" already present on machine'),
                    ("Created", f"Created container {container['name']}"),
                    ("Started", f"Started container {container['name']}"),
                ):
                    await self.api.emit_event(
                        pod, reason, message, field_path=f"spec.containers{{{container['name']}}}"
                    )
            started = _ts()
            states = {name: {"running": {"startedAt": started}} for name in names}
            await self._patch_status(
                key,
                {
                    "phase": "Running",
                    "conditions": self._conditions("running"),
                    "initContainerStatuses": self._statuses(pod, init_states, init=True),
                    "containerStatuses": self._statuses(pod, states),
                },
            )

            if isinstance(behaviour, Run):
                await asyncio.gather(
                    *(self._run_main(key, pod, c, envs[c["name"]], states, init_states) for c in containers)
                )
                failed = any(s["terminated"]["exitCode"] != 0 for s in states.values())
                await self._finish(key, pod, "Failed" if failed else "Succeeded", states, init_states)
            elif isinstance(behaviour, (OOMKilled, Evicted, Fail)):
                if names and behaviour.log:
                    await self.logs[(key[0], key[1], names[0])].write(behaviour.log.encode())
                if isinstance(behaviour, Evicted) and behaviour.evict_on_log is not None and containers:
                    await self._run_until_log(key, pod, containers[0], envs[names[0]], behaviour.evict_on_log)
                else:
                    await asyncio.sleep(behaviour.run_for)
                if isinstance(behaviour, OOMKilled):
                    code, reason = 137, "OOMKilled"
                elif isinstance(behaviour, Evicted):
                    code, reason = 137, "Error"
                else:
                    code, reason = behaviour.exit_code, "Error" if behaviour.exit_code else "Completed"
                states = {name: {"terminated": self._terminated(code, reason, started)} for name in names}
                if isinstance(behaviour, Evicted):
                    extra = (
                        [_condition("DisruptionTarget", True, behaviour.disruption_reason, behaviour.message)]
                        if behaviour.disruption_reason
                        else []
                    )
                    await self._finish(
                        key,
                        pod,
                        "Failed",
                        states,
                        init_states,
                        reason=behaviour.reason,
                        message=behaviour.message,
                        extra_conditions=extra,
                    )
                    await self.api.emit_event(pod, behaviour.reason, behaviour.message, type="Warning")
                else:
                    await self._finish(key, pod, "Failed" if code else "Succeeded", states, init_states)
            else:
                raise TypeError(f"Unknown behaviour: {behaviour!r}")
        except Exception as exc:  # a bug in the harness: surface it via FakeCluster.errors
            self.api.unexpected_errors.append(exc)
            log.exception("The fake kubelet failed on pod %s/%s", *key)
        finally:
            for name in [c["name"] for c in [*inits, *containers]]:
                leftover = self.logs.get((key[0], key[1], name))
                if leftover is not None and leftover.pod_uid == pod["metadata"]["uid"]:
                    await leftover.close()

    async def _run_until_log(self, key: tuple[str, str], pod: Mapping[str, Any], container: Mapping[str, Any],
                             env: dict[str, str], pattern: str) -> None:
        """Run the container's command until its log shows ``pattern``, then kill it (an eviction)."""
        buffer = self.logs[(key[0], key[1], container["name"])]
        task = asyncio.ensure_future(self._run(pod, container, env, buffer))
        while not task.done() and pattern not in buffer.text():
            await asyncio.sleep(0.05)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _new_buffer(self, key: tuple[str, str], pod: Mapping[str, Any], container: str) -> _LogBuffer:
        buffer = self.logs[(key[0], key[1], container)] = _LogBuffer(pod["metadata"]["uid"])
        return buffer

    @staticmethod
    def _terminated(code: int, reason: str, started: str, message: str | None = None) -> dict[str, Any]:
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": _ts()}
        if message:
            terminated["message"] = message
        return terminated

    async def _finish(
        self,
        key: tuple[str, str],
        pod: Mapping[str, Any],
        phase: str,
        states: Mapping[str, Mapping[str, Any]],
        init_states: Mapping[str, Mapping[str, Any]],
        *,
        reason: str | None = None,
        message: str | None = None,
        extra_conditions: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Write the terminal status (and only then close the logs), resolve the pod's future."""
        conditions = self._conditions("finished", extra=extra_conditions)
        if phase == "Failed":
            for condition in conditions:
                if condition["type"] in ("Ready", "ContainersReady"):
                    condition["reason"] = "PodFailed"
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "initContainerStatuses": self._statuses(pod, init_states, init=True),
            "containerStatuses": self._statuses(pod, states),
        }
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        await self._patch_status(key, status)
        for buffer_key, buffer in self.logs.items():
            if buffer_key[:2] == key and buffer.pod_uid == pod["metadata"]["uid"]:
                await buffer.close()
        future = self.done.get(key)
        if future is not None and not future.done():
            future.set_result(phase)

    async def _image_pull_backoff(
        self,
        key: tuple[str, str],
        pod: Mapping[str, Any],
        behaviour: ImagePullBackOff,
        states: dict[str, dict[str, Any]],
    ) -> None:
        containers = pod["spec"].get("containers") or []
        for container in containers:
            image = container.get("image") or ""
            repo, tag, digest = _image_parts(image)
            ref = f"{repo}:{tag}" if tag else f"{repo}@{digest}"
            detail = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
                f'failed to resolve reference "{ref}": {ref}: {behaviour.detail}'
            )
            field_path = f"spec.containers{{{container['name']}}}"
            await self.api.emit_event(pod, "Pulling", f'Pulling image "{image}"', field_path=field_path)
            await self.api.emit_event(
                pod,
                "Failed",
                f'Failed to pull image "{image}": {detail}',
                type="Warning",
                field_path=field_path,
            )
            await self.api.emit_event(
                pod, "Failed", "Error: ErrImagePull", type="Warning", field_path=field_path
            )
            states[container["name"]] = {"waiting": {"reason": "ErrImagePull", "message": detail}}
        await self._patch_status(key, {"containerStatuses": self._statuses(pod, states)})
        await asyncio.sleep(self.cluster.phase_delay)
        for container in containers:
            image = container.get("image") or ""
            field_path = f"spec.containers{{{container['name']}}}"
            await self.api.emit_event(
                pod, "BackOff", f'Back-off pulling image "{image}"', field_path=field_path
            )
            await self.api.emit_event(
                pod, "Failed", "Error: ImagePullBackOff", type="Warning", field_path=field_path
            )
            states[container["name"]] = {
                "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
            }
        await self._patch_status(key, {"containerStatuses": self._statuses(pod, states)})

    async def _run_main(
        self,
        key: tuple[str, str],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        env: dict[str, str],
        states: dict[str, dict[str, Any]],
        init_states: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Run one main container; on exit, publish its terminated state (the pod may still run)."""
        name = container["name"]
        started = states[name]["running"]["startedAt"]
        code, reason, message = await self._run(pod, container, env, self.logs[(key[0], key[1], name)])
        states[name] = {"terminated": self._terminated(code, reason, started, message)}
        if any("running" in state for state in states.values()):
            await self._patch_status(key, {"containerStatuses": self._statuses(pod, states)})

    async def _run(
        self, pod: Mapping[str, Any], container: Mapping[str, Any], env: dict[str, str], buffer: _LogBuffer
    ) -> tuple[int, str, str | None]:
        """Execute ``command + args`` locally; return (exit code, terminated reason, message).

        The process inherits ``os.environ`` plus ``PYTHONUNBUFFERED=1`` (so Python output streams as it
        comes, like most training images set) and ``HOSTNAME``; a leading ``python``/``python3`` is
        replaced with ``sys.executable`` (or the image's interpreter from ``FakeCluster.image_runtimes``);
        ``workingDir`` is honoured only if it exists on this machine.
        """
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        hostname = pod["spec"].get("hostname") or key[1]
        argv = [
            _expand(str(part), env)
            for part in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        record = RanCommand(key[0], key[1], container["name"], list(argv), dict(env))
        self.cluster.ran_commands.append(record)
        if not argv:
            record.exit_code = 0
            return 0, "Completed", None
        interpreter, image_env = self.cluster.image_runtimes.get(str(container.get("image")), (sys.executable, {}))
        if _PYTHON.match(argv[0]):
            argv[0] = interpreter
        workdir = container.get("workingDir")
        process_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOSTNAME": hostname, **image_env, **env}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=process_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                cwd=workdir if workdir and os.path.isdir(workdir) else None,
            )
        except OSError as exc:
            message = (
                f'failed to create containerd task: exec: "{argv[0]}": '
                f"{'executable file not found in $PATH' if isinstance(exc, FileNotFoundError) else exc}"
            )
            await buffer.write(message.encode() + b"\n")
            record.exit_code, record.output = 128, message
            return 128, "StartError", message
        try:
            assert process.stdout is not None
            while chunk := await process.stdout.read(65536):
                await buffer.write(chunk)
            code = await process.wait()
        except asyncio.CancelledError:  # the pod was deleted: kill the whole process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            record.exit_code, record.output = 137, buffer.text()
            raise
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal number, like a shell
        record.exit_code, record.output = code, buffer.text()
        return code, "Completed" if code == 0 else "Error", None

    # ---- env resolution, as the kubelet does it ----

    async def _resolve_env(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for kind, ref_key in (("secret", "secretRef"), ("configmap", "configMapRef")):
                if ref_key in source:
                    ref = source[ref_key]
                    data = await self._data_of(
                        kind, namespace, ref.get("name", ""), bool(ref.get("optional"))
                    )
                    env.update({prefix + key: value for key, value in (data or {}).items()})
        for item in container.get("env") or []:
            name, value_from = item["name"], item.get("valueFrom")
            if not value_from:
                env[name] = _expand(item.get("value") or "", env)
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                kind = "secret" if "secretKeyRef" in value_from else "configmap"
                ref = value_from.get("secretKeyRef") or value_from.get("configMapKeyRef")
                optional = bool(ref.get("optional"))
                data = await self._data_of(kind, namespace, ref.get("name", ""), optional)
                if data is not None and ref["key"] in data:
                    env[name] = data[ref["key"]]
                elif not optional:
                    what = "Secret" if kind == "secret" else "ConfigMap"
                    raise _ConfigError(
                        f"couldn't find key {ref['key']} in {what} {namespace}/{ref.get('name')}"
                    )
            elif "fieldRef" in value_from:
                path = value_from["fieldRef"]["fieldPath"]
                if match := _FIELD_REF_KEY.match(path):
                    value = (pod["metadata"].get(match.group(1)) or {}).get(match.group(2))
                else:
                    value = _lookup(pod, path)
                env[name] = "" if value is None else str(value)
            elif "resourceFieldRef" in value_from:
                ref = value_from["resourceFieldRef"]
                target = next(
                    (
                        c
                        for c in pod["spec"].get("containers") or []
                        if c["name"] == (ref.get("containerName") or container["name"])
                    ),
                    container,
                )
                value = _lookup(target.get("resources") or {}, ref["resource"])
                env[name] = "" if value is None else str(value)
        return env

    async def _data_of(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        res = SECRETS if kind == "secret" else CONFIGMAPS
        obj = await self.api.aget(res, namespace, name)
        if obj is None:
            if optional:
                return None
            raise _ConfigError(f'{kind} "{name}" not found')
        if res == SECRETS:
            decoded = {
                k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()
            }
            return {**decoded, **{k: str(v) for k, v in (obj.get("stringData") or {}).items()}}
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}


# --------------------------------------------------------------------------------------------------
# The Job controller.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _JobRun:
    """The controller's bookkeeping for one Job."""

    job: dict[str, Any]
    pending: deque[int | None]
    active: dict[str, tuple[int | None, asyncio.Future[str]]] = dataclasses.field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    completed_indexes: set[int] = dataclasses.field(default_factory=set)
    task: asyncio.Task[None] | None = None


class _JobController:
    """Runs batch/v1 Jobs: pods from the template, retries up to backoffLimit, final conditions."""

    def __init__(self, cluster: FakeCluster, api: _ApiServer) -> None:
        self.cluster = cluster
        self.api = api
        self.runs: dict[tuple[str, str], _JobRun] = {}

    async def start(self, job: dict[str, Any]) -> None:
        """Create the first wave of pods right away (before the create call returns), then manage."""
        spec = job["spec"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        count = completions if completions is not None else spec.get("parallelism", 1)
        pending: deque[int | None] = deque(range(count) if indexed else [None] * count)
        run = _JobRun(job=job, pending=pending)
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        self.runs[key] = run
        if spec.get("suspend"):
            return
        await self._update(run, start=True)
        await self._fill(run)
        await self._update(run)
        run.task = asyncio.get_running_loop().create_task(self._manage(run))

    async def stop(self, job: Mapping[str, Any], policy: str | None) -> None:
        """The Job was deleted: stop managing it; cascade to its pods unless orphaning (the default)."""
        run = self.runs.pop((job["metadata"]["namespace"], job["metadata"]["name"]), None)
        if run is not None and run.task is not None:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        if policy in ("Foreground", "Background"):
            selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
            for pod in await self.api.alist(PODS, job["metadata"]["namespace"], selector):
                await self.api.adelete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    async def shutdown(self) -> None:
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _pod_for(self, job: Mapping[str, Any], index: int | None) -> dict[str, Any]:
        """The pod a real Job controller would create from the template (for ``index`` if Indexed)."""
        meta, spec = job["metadata"], job["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        pod_meta = template.get("metadata") or {}
        pod_spec = template.get("spec") or {}
        labels = {
            **(pod_meta.get("labels") or {}),
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
        annotations = dict(pod_meta.get("annotations") or {})
        generate_name = f"{meta['name']}-"
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
            generate_name = f"{meta['name']}-{index}-"
            pod_spec.setdefault("hostname", f"{meta['name']}-{index}")
            index_env = {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            }
            for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in container.get("env") or []):
                    container["env"] = [*(container.get("env") or []), dict(index_env)]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **{k: v for k, v in pod_meta.items() if k not in ("name", "labels", "annotations")},
                "generateName": generate_name,
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }

    async def _fill(self, run: _JobRun) -> None:
        parallelism = run.job["spec"].get("parallelism", 1)
        while run.pending and len(run.active) < parallelism:
            index = run.pending.popleft()
            pod = await self.api.acreate(PODS, self._pod_for(run.job, index))
            name = pod["metadata"]["name"]
            run.active[name] = (index, self.cluster._kubelet.done[(pod["metadata"]["namespace"], name)])
            await self.api.emit_event(
                run.job, "SuccessfulCreate", f"Created pod: {name}", component="job-controller"
            )

    async def _update(
        self, run: _JobRun, *, start: bool = False, conditions: Sequence[dict[str, Any]] = ()
    ) -> None:
        status: dict[str, Any] = {
            "active": len(run.active) or None,
            "succeeded": run.succeeded or None,
            "failed": run.failed or None,
            "terminating": 0,
            "ready": 0,
            "uncountedTerminatedPods": {},
        }
        if start:
            status["startTime"] = _ts()
        if run.job["spec"].get("completionMode") == "Indexed" and run.completed_indexes:
            status["completedIndexes"] = _compress_indexes(run.completed_indexes)
        if conditions:
            status["conditions"] = list(conditions)
        meta = run.job["metadata"]
        job = await self.api.apatch(JOBS, meta["namespace"], meta["name"], {"status": status})
        if job is not None:
            run.job = job

    async def _manage(self, run: _JobRun) -> None:
        spec = run.job["spec"]
        backoff_limit = spec.get("backoffLimit", 6)
        completions = spec.get("completions")
        try:
            while True:
                if not run.active:
                    return
                finished, _ = await asyncio.wait(
                    [f for _, f in run.active.values()], return_when=asyncio.FIRST_COMPLETED
                )
                failure: tuple[str, str] | None = None
                for name, (index, future) in list(run.active.items()):
                    if future not in finished:
                        continue
                    del run.active[name]
                    if future.result() == "Succeeded":
                        run.succeeded += 1
                        if index is not None:
                            run.completed_indexes.add(index)
                        continue
                    pod = await self.api.aget(PODS, run.job["metadata"]["namespace"], name)
                    action, rule = self._failure_action(spec.get("podFailurePolicy"), pod)
                    if action == "Ignore":
                        run.pending.append(index)
                        continue
                    run.failed += 1
                    if action in ("FailJob", "FailIndex"):
                        failure = (
                            "PodFailurePolicy",
                            f"Pod {run.job['metadata']['namespace']}/{name} "
                            f"matched the {action} rule at index {rule}",
                        )
                    elif run.failed > backoff_limit:
                        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                    else:
                        run.pending.append(index)
                if failure:
                    await self._fail(run, *failure)
                    return
                done = run.succeeded >= completions if completions is not None else run.succeeded > 0
                if done and not run.active:
                    await self._complete(run)
                    return
                if not done:
                    await self._fill(run)
                await self._update(run)
        except Exception as exc:  # a bug in the harness: surface it via FakeCluster.errors
            self.api.unexpected_errors.append(exc)
            log.exception("The fake Job controller failed on %s", run.job["metadata"]["name"])

    @staticmethod
    def _failure_action(
        policy: Mapping[str, Any] | None, pod: Mapping[str, Any] | None
    ) -> tuple[str, int | None]:
        """Match a failed pod against ``podFailurePolicy`` rules: (action, rule index) or (Count, None)."""
        if not policy or pod is None:
            return "Count", None
        status = pod.get("status") or {}
        for index, rule in enumerate(policy.get("rules") or []):
            if on_codes := rule.get("onExitCodes"):
                values = set(on_codes.get("values") or [])
                for container in status.get("containerStatuses") or []:
                    if on_codes.get("containerName") not in (None, container["name"]):
                        continue
                    code = (container.get("state", {}).get("terminated") or {}).get("exitCode")
                    if code and (code in values) == (on_codes.get("operator", "In") == "In"):
                        return rule["action"], index
            for pattern in rule.get("onPodConditions") or []:
                if any(
                    c.get("type") == pattern.get("type") and c.get("status") == pattern.get("status", "True")
                    for c in status.get("conditions") or []
                ):
                    return rule["action"], index
        return "Count", None

    async def _complete(self, run: _JobRun) -> None:
        message = "Reached expected number of succeeded pods"
        await self._update(
            run,
            conditions=[
                _condition("SuccessCriteriaMet", True, "CompletionsReached", message),
                _condition("Complete", True, "CompletionsReached", message),
            ],
        )
        meta = run.job["metadata"]
        await self.api.apatch(JOBS, meta["namespace"], meta["name"], {"status": {"completionTime": _ts()}})
        await self.api.emit_event(run.job, "Completed", "Job completed", component="job-controller")

    async def _fail(self, run: _JobRun, reason: str, message: str) -> None:
        for name in list(run.active):  # a failed Job's remaining pods are terminated
            await self.api.adelete(PODS, run.job["metadata"]["namespace"], name)
        run.active.clear()
        await self._update(
            run,
            conditions=[
                _condition("FailureTarget", True, reason, message),
                _condition("Failed", True, reason, message),
            ],
        )
        await self.api.emit_event(run.job, reason, message, type="Warning", component="job-controller")


# --------------------------------------------------------------------------------------------------
# The public face: a context manager running all of the above in a background thread.
# --------------------------------------------------------------------------------------------------

_T = TypeVar("_T")


class FakeCluster:
    """A fake Kubernetes cluster served over real HTTP from a background thread.

    Usage::

        with FakeCluster() as cluster:
            cluster.write_kubeconfig(tmp_path / "kubeconfig")
            os.environ.update(cluster.airflow_conn_env(tmp_path / "kubeconfig"))
            cluster.queue_behaviours([EVICTED, RUN])  # the next two pods, in creation order
            ...  # run KubernetesPodOperator / KubernetesJobOperator / the kubernetes client
            assert cluster.ran_commands[-1].exit_code == 0

    Pods get their behaviour from :meth:`queue_behaviours` first, then from :attr:`behaviour`
    (a :class:`Behaviour`, or a callable taking the pod dict and returning one; default :data:`RUN`).
    ``phase_delay`` is the pause between pod phases, so pollers and triggers observe Running.
    Pod logs stay readable through :meth:`logs` after the pod is deleted.
    """

    def __init__(
        self,
        *,
        phase_delay: float = 0.3,
        namespaces: Iterable[str] = (DEFAULT_NAMESPACE,),
        behaviour: Behaviour | BehaviourPolicy = RUN,
        host: str = "127.0.0.1",
    ) -> None:
        self.phase_delay = phase_delay
        self.behaviour = behaviour  # type: ignore[assignment]  # normalized by the property
        self.pods_created: list[dict[str, Any]] = []
        self.jobs_created: list[dict[str, Any]] = []
        self.services_created: list[dict[str, Any]] = []
        self.ran_commands: list[RanCommand] = []
        # What an image holds, for images whose Python is not the test's own (e.g. the pinned checks image):
        # image -> (interpreter, extra env). Other images run ``python`` as ``sys.executable``.
        self.image_runtimes: dict[str, tuple[str, dict[str, str]]] = {}
        self._namespaces = list(namespaces)
        self._host = host
        self._port: int | None = None
        self._queue: deque[Behaviour] = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._api: _ApiServer | None = None
        self._kubelet: _Kubelet
        self._jobs: _JobController
        self._tmpdir: str | None = None

    # ---- lifecycle ----

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeCluster:
        """Start the API server, the kubelet and the Job controller; return once it accepts requests."""
        if self._thread is not None:
            raise RuntimeError("The fake cluster is already started.")
        self._ready, self._startup_error = threading.Event(), None
        self._thread = threading.Thread(target=self._thread_main, name="fake-kubernetes", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("The fake Kubernetes API server did not start in 30 seconds.")
        if self._startup_error is not None:
            raise RuntimeError("The fake Kubernetes API server failed to start.") from self._startup_error
        return self

    def stop(self) -> None:
        """End streams, kill container processes, stop the server and the loop (idempotent)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            log.warning("The fake Kubernetes cluster thread did not stop in 30 seconds.")
        self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                log.exception("The fake Kubernetes cluster crashed.")
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        api = _ApiServer()
        api.setup(self, self._namespaces)
        self._api = api
        self._kubelet = _Kubelet(self, api)
        self._jobs = _JobController(self, api)
        async with api:
            server = aiohttp.test_utils.RawTestServer(api, host=self._host, port=0)
            await server.start_server(access_log=None)
            try:
                self._port = server.port
                self._ready.set()
                await self._stopping.wait()
                api.closing = True
                for bus in list(api._buses.values()):
                    await bus.put(_StopWatch(None))
                await self._jobs.shutdown()
                await self._kubelet.shutdown()
            finally:
                await server.close()

    def _call(self, coro: Awaitable[_T], timeout: float = 30) -> _T:
        """Run a coroutine on the server's loop from the calling (test) thread and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("The fake cluster is not started.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    # ---- connection details ----

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The fake cluster is not started.")
        return self._port

    @property
    def url(self) -> str:
        """The API server's base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self._host}:{self.port}"

    def kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig dict: cluster ``fake`` (plain http), a token user, context ``fake`` (ns default)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": DEFAULT_NAMESPACE},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write :meth:`kubeconfig` (JSON, which is valid YAML) to ``path`` (default: a temp file)."""
        if path is None:
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="fake-kubernetes-")
            path = Path(self._tmpdir) / "kubeconfig"
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.kubeconfig(), indent=2))
        return target

    def airflow_conn_extra(self, kubeconfig_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The ``kubernetes`` connection extra that KubernetesHook / AsyncKubernetesHook read."""
        path = Path(kubeconfig_path) if kubeconfig_path else self.write_kubeconfig()
        return {"kube_config_path": str(path), "namespace": DEFAULT_NAMESPACE}

    def airflow_conn_uri(self, kubeconfig_path: str | os.PathLike[str] | None = None) -> str:
        """The value for ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` (Airflow's JSON connection format)."""
        return json.dumps({"conn_type": "kubernetes", "extra": self.airflow_conn_extra(kubeconfig_path)})

    def airflow_conn_env(
        self, kubeconfig_path: str | os.PathLike[str] | None = None, conn_id: str = "kubernetes_default"
    ) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": <json>}`` to put into the environment (e.g. via monkeypatch)."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.airflow_conn_uri(kubeconfig_path)}

    # ---- behaviours ----

    @property
    def behaviour(self) -> BehaviourPolicy:
        """The policy for pods not queued by :meth:`queue_behaviours`: ``callable(pod) -> Behaviour``."""
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour | BehaviourPolicy) -> None:
        if isinstance(value, Behaviour):
            self._behaviour: BehaviourPolicy = lambda pod, fixed=value: fixed  # type: ignore[misc]
        elif callable(value):
            self._behaviour = value
        else:
            raise TypeError(f"Expected a Behaviour or a callable, got {value!r}")

    def queue_behaviours(self, behaviours: Iterable[Behaviour]) -> None:
        """Queue behaviours for the next pods, consumed one per pod in creation order (Job pods too)."""
        for behaviour in behaviours:
            if not isinstance(behaviour, Behaviour):
                raise TypeError(f"Expected a Behaviour, got {behaviour!r}")
            self._queue.append(behaviour)

    # ---- hooks called by the API server (on the loop) ----

    async def _on_created(self, res: kmock.resource, obj: dict[str, Any]) -> None:
        if res == PODS:
            self.pods_created.append(copy.deepcopy(obj))
            behaviour = self._queue.popleft() if self._queue else self._behaviour(copy.deepcopy(obj))
            if not isinstance(behaviour, Behaviour):
                raise TypeError(f"The behaviour policy returned {behaviour!r}, not a Behaviour")
            self._kubelet.start(obj, behaviour)
        elif res == JOBS:
            self.jobs_created.append(copy.deepcopy(obj))
            await self._jobs.start(obj)
        elif res == SERVICES:
            self.services_created.append(copy.deepcopy(obj))

    async def _on_deleted(self, res: kmock.resource, obj: dict[str, Any], policy: str | None) -> None:
        if res == PODS:
            await self._kubelet.stop(obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif res == JOBS:
            await self._jobs.stop(obj, policy)

    # ---- reading and writing objects from tests (thread-safe) ----

    @staticmethod
    def _res(kind: ResourceLike) -> kmock.resource:
        if isinstance(kind, kmock.resource):
            return kind
        return _BY_PLURAL.get(kind) or kmock.resource(kind)

    @property
    def emulator(self) -> kmock.KubernetesEmulator:
        """The underlying kmock emulator (``.requests``, ``.objects``); touch it only while idle."""
        if self._api is None:
            raise RuntimeError("The fake cluster is not started.")
        return self._api

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the fake API server (bugs in the harness), for assertions."""
        return list(self._api.unexpected_errors) if self._api is not None else []

    def get(
        self, kind: ResourceLike, name: str, namespace: str | None = DEFAULT_NAMESPACE
    ) -> dict[str, Any] | None:
        """The current object (a deep copy), or None. ``kind``: a plural (``"pods"``) or a kmock resource."""
        assert self._api is not None
        return copy.deepcopy(self._call(self._api.aget(self._res(kind), namespace, name)))

    def list_objects(
        self,
        kind: ResourceLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The current objects of a kind (all namespaces by default), in creation order."""
        assert self._api is not None
        items = self._call(self._api.alist(self._res(kind), namespace, label_selector, field_selector))
        return copy.deepcopy(items)

    def create(
        self, kind: ResourceLike, body: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create an object as the API would (pods start running, Jobs start their pods)."""
        assert self._api is not None
        return copy.deepcopy(self._call(self._api.acreate(self._res(kind), dict(body), namespace)))

    def patch(
        self,
        kind: ResourceLike,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = DEFAULT_NAMESPACE,
    ) -> dict[str, Any] | None:
        """Merge-patch an object (None deletes a key, lists are replaced); None if it does not exist."""
        assert self._api is not None
        return copy.deepcopy(self._call(self._api.apatch(self._res(kind), namespace, name, patch)))

    def delete(
        self,
        kind: ResourceLike,
        name: str,
        namespace: str | None = DEFAULT_NAMESPACE,
        policy: str | None = None,
    ) -> bool:
        """Delete an object at once (kills a pod's processes); False if it did not exist."""
        assert self._api is not None
        return self._call(self._api.adelete(self._res(kind), namespace, name, policy))

    def create_secret(
        self, name: str, data: Mapping[str, str], namespace: str = DEFAULT_NAMESPACE, type: str = "Opaque"
    ) -> dict[str, Any]:
        """Create a Secret from plain-text values (stored base64-encoded in ``data``)."""
        return self.create(
            SECRETS, {"metadata": {"name": name}, "type": type, "stringData": dict(data)}, namespace
        )

    def create_namespace(self, name: str) -> dict[str, Any]:
        """Create a namespace (objects can only be created in existing namespaces)."""
        assert self._api is not None

        async def add() -> dict[str, Any]:
            return self._api._add_namespace({"metadata": {"name": name}})  # type: ignore[union-attr]

        return copy.deepcopy(self._call(add()))

    def events(
        self, involved_name: str | None = None, namespace: str | None = None, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Events (oldest first), optionally about one object and/or with one reason."""
        selector = f"involvedObject.name={involved_name}" if involved_name else None
        return [
            e
            for e in self.list_objects(EVENTS, namespace, field_selector=selector)
            if reason is None or e.get("reason") == reason
        ]

    def logs(self, pod: str, container: str | None = None, namespace: str = DEFAULT_NAMESPACE) -> str:
        """A container's log so far (the first container by default), even after the pod is deleted."""
        if container is None:
            created = [
                p
                for p in self.pods_created
                if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, pod)
            ]
            if not created:
                raise KeyError(f"No pod {namespace}/{pod} was created")
            container = created[-1]["spec"]["containers"][0]["name"]

        async def read() -> str:
            buffer = self._kubelet.logs.get((namespace, pod, str(container)))
            if buffer is None:
                raise KeyError(f"No logs for container {container} of {namespace}/{pod} (not started?)")
            return buffer.text()

        return self._call(read())

    def wait_for(
        self,
        kind: ResourceLike,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Poll until the object exists and ``predicate(obj)`` holds; return it (TimeoutError if not)."""
        deadline = _now() + timedelta(seconds=timeout)
        last: dict[str, Any] | None = None
        while True:
            last = self.get(kind, name, namespace)
            if last is not None and predicate(last):
                return last
            if _now() > deadline:
                raise TimeoutError(f"{kind} {namespace}/{name} did not get there in {timeout}s; last: {last}")
            time.sleep(0.05)

    def wait_for_pod_phase(
        self, name: str, *phases: str, namespace: str = DEFAULT_NAMESPACE, timeout: float = 10
    ) -> dict[str, Any]:
        """Wait until a pod is in one of ``phases`` (default: Succeeded or Failed)."""
        wanted = set(phases or ("Succeeded", "Failed"))
        return self.wait_for(
            PODS,
            name,
            lambda pod: (pod.get("status") or {}).get("phase") in wanted,
            namespace=namespace,
            timeout=timeout,
        )

    def wait_for_job(
        self, name: str, *, namespace: str = DEFAULT_NAMESPACE, timeout: float = 10
    ) -> dict[str, Any]:
        """Wait until a Job has a ``Complete`` or ``Failed`` condition."""

        def finished(job: dict[str, Any]) -> bool:
            conditions = (job.get("status") or {}).get("conditions") or []
            return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)

        return self.wait_for(JOBS, name, finished, namespace=namespace, timeout=timeout)
