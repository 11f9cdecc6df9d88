"""Kubernetes target: a Deployment and a Service per model version, traffic by Gateway API HTTPRoute weights
(or by replica ratio where there is no Gateway API), blue-green by switching the active Service's selector,
rollout state in an annotation on the active Service.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.podspec import DEFAULT_CONTAINER_SECURITY_CONTEXT, DEFAULT_POD_SECURITY_CONTEXT
from airflow_mlops.core.rollout import RolloutState
from airflow_mlops.rollout.targets.base import Backend, RolloutTarget

GROUP = "gateway.networking.k8s.io"
STATE_ANNOTATION = "mlops.airflow-mlops.io/rollout-state"
APP = "app.kubernetes.io/name"
VERSION = "mlops.airflow-mlops.io/model-version"
MANAGED = {"app.kubernetes.io/managed-by": "airflow-mlops"}
TRAFFIC_MODES = ("gateway", "replicas")
#: Requests and limits of one scoring-server container unless the target config gives ``resources``.
DEFAULT_SERVING_RESOURCES: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "1Gi"},
                                             "limits": {"memory": "2Gi"}}


def _dns(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:50]


def deployment_manifest(name: str, model: str, version: str, image: str, tracking_uri: str, replicas: int,
                        port: int, resources: dict[str, Any] | None = None,
                        mlflow_secret: str | None = None, service_account: str | None = None) -> dict[str, Any]:
    """The Deployment serving one model version with the MLflow scoring server.

    Pods pass the ``restricted`` Pod Security Standard (the namespace in ``infra/k8s`` enforces it): non-root,
    no privilege escalation, all capabilities dropped, RuntimeDefault seccomp. MLflow credentials come from
    the Secret ``mlflow_secret`` (keys MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, each optional), never literal.
    """
    labels = {APP: name, VERSION: version, **MANAGED}
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}]
    if mlflow_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": mlflow_secret, "key": key, "optional": True}}}
                for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    pod_spec: dict[str, Any] = {
        "securityContext": dict(DEFAULT_POD_SECURITY_CONTEXT),
        "containers": [{
            "name": "server", "image": image,
            "args": ["mlflow", "models", "serve", "-m", f"models:/{model}/{version}", "--env-manager",
                     "local", "-h", "0.0.0.0", "-p", str(port)],
            "env": env,
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/ping", "port": port}, "periodSeconds": 5},
            "resources": dict(resources or DEFAULT_SERVING_RESOURCES),
            "securityContext": dict(DEFAULT_CONTAINER_SECURITY_CONTEXT),
        }],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-v{version}", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {APP: name, VERSION: version}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def service_manifest(name: str, selector: dict[str, str], port: int, service_name: str | None = None,
                     annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A ClusterIP Service: per version (``<name>-v<version>``) or the active one (``<name>``)."""
    meta: dict[str, Any] = {"name": service_name or name, "labels": {APP: name, **MANAGED}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": port}]}}


def route_manifest(name: str, gateway: str, weights: dict[str, int]) -> dict[str, Any]:
    """The HTTPRoute splitting traffic between per-version Services by backendRef weight."""
    return {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "labels": {APP: name, **MANAGED}},
            "spec": {"parentRefs": [{"name": gateway}],
                     "rules": [{"backendRefs": [{"name": f"{name}-v{v}", "port": 80, "weight": w}
                                                for v, w in weights.items()]}]}}


class KubernetesTarget(RolloutTarget):
    """Roll out to Kubernetes.

    :param name: the endpoint (active Service and HTTPRoute name).
    :param model: registered model name.
    :param image: serving image (runs ``mlflow models serve``).
    :param tracking_uri: MLflow URI the servers load models from.
    :param namespace: namespace of everything.
    :param traffic: ``gateway`` (HTTPRoute weights) or ``replicas`` (replica ratio behind one Service).
    :param gateway: the Gateway the HTTPRoute attaches to.
    :param replicas: replicas per version (gateway), or in total (replicas mode: split by weight).
    :param port: container port.
    :param kubeconfig: kubeconfig file; else ``kubernetes_conn_id`` through the cncf provider's hook.
    :param kubernetes_conn_id: Airflow connection, when no kubeconfig is given.
    :param resources: container requests/limits of each scoring server (default: 500m/1Gi, 2Gi limit).
    :param mlflow_secret: Secret holding the servers' MLflow credentials (secretKeyRef, never literal).
    :param service_account: ServiceAccount of the serving pods (e.g. IRSA for S3 model artifacts).
    """

    kind = "kubernetes"

    def __init__(self, name: str, model: str, image: str = "airflow-mlops/serving:0.1.0", tracking_uri: str = "",
                 namespace: str = "default", traffic: str = "gateway", gateway: str = "mlops-gateway",
                 replicas: int = 2, port: int = 8080, kubeconfig: str | None = None,
                 kubernetes_conn_id: str | None = None, resources: dict[str, Any] | None = None,
                 mlflow_secret: str | None = None, service_account: str | None = None) -> None:
        if traffic not in TRAFFIC_MODES:
            raise SpecError("target.traffic", f"one of {TRAFFIC_MODES}", traffic)
        if replicas < 1:
            raise SpecError("target.replicas", "an integer >= 1", replicas)
        if not tracking_uri:
            raise SpecError("target.tracking_uri", "the MLflow tracking URI the serving pods load models:/ URIs "
                                                   "from (as the cluster reaches it, e.g. http://mlflow.mlops:5000)",
                            tracking_uri)
        self.name, self.model, self.image, self.tracking_uri = _dns(name), model, image, tracking_uri
        self.namespace, self.traffic, self.gateway = namespace, traffic, gateway
        self.replicas, self.port = replicas, port
        self.kubeconfig, self.kubernetes_conn_id = kubeconfig, kubernetes_conn_id
        if resources is not None and (not isinstance(resources, dict)
                                      or not set(resources) <= {"requests", "limits"}):
            raise SpecError("target.resources", "a dict with 'requests' and/or 'limits'", resources)
        self.resources, self.mlflow_secret, self.service_account = resources, mlflow_secret, service_account
        self._api: Any = None

    # -- clients -----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._api is None:
            if self.kubeconfig:
                from kubernetes import config

                self._api = config.new_client_from_config(config_file=self.kubeconfig)
            else:
                from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

                self._api = KubernetesHook(conn_id=self.kubernetes_conn_id or "kubernetes_default").api_client
        return self._api

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._client())

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self._client())

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._client())

    @staticmethod
    def _missing(err: Exception) -> bool:
        return getattr(err, "status", None) == 404

    def _read(self, kind: str, name: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Service":
                return self._core().read_namespaced_service(name, self.namespace)
            if kind == "Deployment":
                return self._apps().read_namespaced_deployment(name, self.namespace)
            return self._custom().get_namespaced_custom_object(GROUP, "v1", self.namespace, "httproutes", name)
        except ApiException as err:
            if self._missing(err):
                return None
            raise

    def _apply(self, manifest: dict[str, Any]) -> None:
        """Create, or replace the spec (and merge the metadata) of, one object."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        exists = self._read(kind, name) is not None
        if kind == "Service":
            if exists:
                # A patch merges map keys: a selector that drops the version (replica-ratio canary selects every
                # version's pods) must delete the key explicitly, or the Service keeps selecting one version only.
                selector = dict(manifest["spec"].get("selector") or {})
                patch = {**manifest, "spec": {**manifest["spec"], "selector": {VERSION: None, **selector}}}
                self._core().patch_namespaced_service(name, self.namespace, patch)
            else:
                self._core().create_namespaced_service(self.namespace, manifest)
        elif kind == "Deployment":
            if exists:
                self._apps().patch_namespaced_deployment(name, self.namespace, manifest)
            else:
                self._apps().create_namespaced_deployment(self.namespace, manifest)
        elif exists:
            self._custom().patch_namespaced_custom_object(GROUP, "v1", self.namespace, "httproutes", name, manifest)
        else:
            self._custom().create_namespaced_custom_object(GROUP, "v1", self.namespace, "httproutes", manifest)

    def _delete(self, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Service":
                self._core().delete_namespaced_service(name, self.namespace)
            elif kind == "Deployment":
                self._apps().delete_namespaced_deployment(name, self.namespace)
            else:
                self._custom().delete_namespaced_custom_object(GROUP, "v1", self.namespace, "httproutes", name)
        except ApiException as err:
            if not self._missing(err):
                raise

    # -- manifests ---------------------------------------------------------------------------------

    def _deployment(self, version: str, replicas: int) -> dict[str, Any]:
        return deployment_manifest(self.name, self.model, version, self.image, self.tracking_uri, replicas,
                                   self.port, resources=self.resources, mlflow_secret=self.mlflow_secret,
                                   service_account=self.service_account)

    def _version_service(self, version: str) -> dict[str, Any]:
        return service_manifest(self.name, {APP: self.name, VERSION: version}, self.port,
                                service_name=f"{self.name}-v{version}")

    def _active_service(self, version: str | None, state: RolloutState | None = None) -> dict[str, Any]:
        selector = {APP: self.name} if self.traffic == "replicas" and version is None else \
            {APP: self.name, VERSION: str(version)}
        annotations = {STATE_ANNOTATION: json.dumps(state.to_dict(), separators=(",", ":"))} if state else None
        return service_manifest(self.name, selector, self.port, annotations=annotations)

    def manifests(self, state: RolloutState) -> list[dict[str, Any]]:
        """Every object this state implies (for validation and for apply)."""
        candidate_share = state.weight
        objects = []
        versions = [v for v in (state.stable, state.candidate) if v]
        for v in versions:
            share = candidate_share if v == state.candidate else 100 - candidate_share
            objects.append(self._deployment(v, self._replicas_for(share)))
            objects.append(self._version_service(v))
        objects.append(self._active_service(self._active_version(state), state))
        if self.traffic == "gateway":
            objects.append(route_manifest(self.name, self.gateway, self._weights(state)))
        return objects

    def _weights(self, state: RolloutState) -> dict[str, int]:
        weights = {state.candidate: state.weight}
        if state.stable and state.stable != state.candidate:
            weights = {state.stable: 100 - state.weight, **weights}
        return weights

    def _replicas_for(self, share: int) -> int:
        if self.traffic == "gateway":
            return self.replicas  # each version keeps its full size; the route splits traffic
        if share <= 0:
            return 0
        # Replica granularity: a version with any share gets at least one pod (5% of 4 replicas is 1 pod).
        return max(1, round(self.replicas * share / 100))

    def _active_version(self, state: RolloutState) -> str | None:
        """Blue-green switches the active Service's selector; replica-ratio canaries select every version."""
        if state.strategy.get("kind") == "blue_green" or self.traffic == "gateway":
            return state.candidate if state.weight == 100 else state.stable
        return None

    # -- the contract ------------------------------------------------------------------------------

    def serving_version(self) -> str | None:
        service = self._read("Service", self.name)
        if service is None:
            return None
        state = self.load_state()
        if state is not None:
            if state.phase == "progressing":
                return None
            return state.candidate if state.phase == "promoted" else state.stable
        return (service.spec.selector or {}).get(VERSION)

    def deploy_initial(self, version: str) -> None:
        self._apply(self._deployment(version, self.replicas))
        self._apply(self._version_service(version))
        self._apply(self._active_service(version))
        if self.traffic == "gateway":
            self._apply(route_manifest(self.name, self.gateway, {version: 100}))

    def deploy_candidate(self, state: RolloutState) -> None:
        self.save_state(state)
        initial = 0 if self.traffic == "replicas" else self.replicas
        self._apply(self._deployment(state.candidate, max(initial, 1) if state.strategy.get("kind") == "blue_green"
                                     else initial if self.traffic == "replicas" else self.replicas))
        self._apply(self._version_service(state.candidate))

    def candidate_ready(self, state: RolloutState) -> bool:
        deployment = self._read("Deployment", f"{self.name}-v{state.candidate}")
        if deployment is None:
            return False
        if self.traffic == "replicas" and not deployment.spec.replicas:
            return True  # scaled to zero until its first step: ready when it gets replicas
        return bool(deployment.status and (deployment.status.ready_replicas or 0) >= 1)

    def observed_weight(self, state: RolloutState) -> int:
        if self.traffic == "gateway":
            route = self._read("HTTPRoute", self.name)
            if route is None:
                return 0
            refs = route["spec"]["rules"][0]["backendRefs"]
            total = sum(int(r.get("weight", 1)) for r in refs)
            mine = sum(int(r.get("weight", 1)) for r in refs if r["name"] == f"{self.name}-v{state.candidate}")
            return round(100 * mine / total) if total else 0
        if state.strategy.get("kind") == "blue_green":
            service = self._read("Service", self.name)
            return 100 if service and (service.spec.selector or {}).get(VERSION) == state.candidate else 0
        counts = {}
        for v in (state.stable, state.candidate):
            d = self._read("Deployment", f"{self.name}-v{v}") if v else None
            counts[v] = int(d.spec.replicas or 0) if d is not None else 0
        intended = {state.candidate: self._replicas_for(state.weight)}
        if state.stable and state.stable != state.candidate:
            intended[state.stable] = self._replicas_for(100 - state.weight)
        if all(counts.get(v) == n for v, n in intended.items()):
            return state.weight  # the replicas the recorded weight maps to (ratios are only that precise)
        total = sum(counts.values())
        return round(100 * counts[state.candidate] / total) if total else 0

    def apply_weight(self, state: RolloutState) -> None:
        self.save_state(state)
        if self.traffic == "replicas":
            # Scale the candidate up before the stable down, so capacity never dips.
            for v, share in ((state.candidate, state.weight), (state.stable, 100 - state.weight)):
                if v:
                    self._apps().patch_namespaced_deployment(f"{self.name}-v{v}", self.namespace,
                                                             {"spec": {"replicas": self._replicas_for(share)}})
        else:
            self._apply(route_manifest(self.name, self.gateway, self._weights(state)))
        self._apply(self._active_service(self._active_version(state), state))

    def promote(self, state: RolloutState) -> None:
        self.save_state(state)
        if self.traffic == "gateway":
            self._apply(route_manifest(self.name, self.gateway, {state.candidate: 100}))
        else:
            self._apps().patch_namespaced_deployment(f"{self.name}-v{state.candidate}", self.namespace,
                                                     {"spec": {"replicas": self.replicas}})
        self._apply(self._active_service(state.candidate, state))
        keep = {state.candidate}
        if state.stable and state.stable != state.candidate and self.keeps_previous(state):
            # Keep the previous version's Deployment at 0 replicas: a rollback is a scale-up, not a redeploy.
            self._apps().patch_namespaced_deployment(f"{self.name}-v{state.stable}", self.namespace,
                                                     {"spec": {"replicas": 0}})
            keep.add(state.stable)
        self._retire(keep)

    def _retire(self, keep: set[str]) -> None:
        """Delete the Deployments and per-version Services of every version not in ``keep``."""
        selector = f"{APP}={self.name},app.kubernetes.io/managed-by=airflow-mlops"
        for d in self._apps().list_namespaced_deployment(self.namespace, label_selector=selector).items:
            version = (d.metadata.labels or {}).get(VERSION)
            if version is not None and version not in keep:
                self._delete("Deployment", d.metadata.name)
                self._delete("Service", f"{self.name}-v{version}")

    def rollback(self, state: RolloutState) -> None:
        self.save_state(state)
        if state.stable:
            if self.traffic == "gateway":
                self._apply(route_manifest(self.name, self.gateway, {state.stable: 100}))
            else:
                self._apps().patch_namespaced_deployment(f"{self.name}-v{state.stable}", self.namespace,
                                                         {"spec": {"replicas": self.replicas}})
            self._apply(self._active_service(state.stable, state))
        if state.candidate != state.stable:
            self._delete("Deployment", f"{self.name}-v{state.candidate}")
            self._delete("Service", f"{self.name}-v{state.candidate}")

    def load_state(self) -> RolloutState | None:
        service = self._read("Service", self.name)
        raw = ((service.metadata.annotations or {}) if service is not None else {}).get(STATE_ANNOTATION)
        return RolloutState.from_dict(json.loads(raw)) if raw else None

    def save_state(self, state: RolloutState) -> None:
        service = self._read("Service", self.name)
        if service is None:
            self._apply(self._active_service(state.stable, state))
            return
        self._core().patch_namespaced_service(self.name, self.namespace, {"metadata": {"annotations": {
            STATE_ANNOTATION: json.dumps(state.to_dict(), separators=(",", ":"))}}})

    def backends(self, state: RolloutState) -> dict[str, Backend]:
        url = lambda v: f"http://{self.name}-v{v}.{self.namespace}.svc.cluster.local"  # noqa: E731
        found = {"candidate": Backend(f"{self.name}-v{state.candidate}", state.candidate, url(state.candidate))}
        if state.stable:
            found["stable"] = Backend(f"{self.name}-v{state.stable}", state.stable, url(state.stable))
        return found

    def cleanup(self) -> None:
        from kubernetes.client.exceptions import ApiException

        selector = f"{APP}={self.name}"
        for d in self._apps().list_namespaced_deployment(self.namespace, label_selector=selector).items:
            self._delete("Deployment", d.metadata.name)
        for s in self._core().list_namespaced_service(self.namespace, label_selector=selector).items:
            self._delete("Service", s.metadata.name)
        with contextlib.suppress(ApiException):  # no Gateway API installed: nothing to delete
            self._delete("HTTPRoute", self.name)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace, "traffic": self.traffic}
