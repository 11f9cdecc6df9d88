"""The KServe target: one ``InferenceService`` (serving.kserve.io/v1beta1); the canary is ``canaryTrafficPercent``.

KServe keeps the previous rolled-out revision serving while a new predictor spec carries
``canaryTrafficPercent``: the candidate is the new spec at 0% (deploy), traffic moves by patching the percentage,
promote removes ``canaryTrafficPercent`` (the new spec becomes the default), rollback sets it to 0 (the previous
revision takes everything at once) and then restores the previous predictor spec, kept in an annotation.

State lives in annotations (``mlops.airflow-mlops.io/*``): the rollout state JSON, the version of the predictor
spec, the version that was fully rolled out, and the previous predictor spec. Every change is one API call that
carries the state and the spec change together, so they cannot drift apart.

``observed_weight`` reads ``.status.components.predictor.traffic`` (the ``latestRevision`` entries' percent), as
the KServe controller reports it, when the status is current (``status.observedGeneration`` >= the object's
generation). Without a current status (no controller has reconciled yet, or none runs, as in the kmock fake
cluster of the tests) it falls back to the spec's desired ``canaryTrafficPercent`` and says so in the log.

Versions are served either by the serving image (``docker/serving.Dockerfile``: ``MODEL_URI=models:/<model>/<v>``
and ``MLFLOW_TRACKING_URI`` in the container env; a custom predictor) or, with ``storage_uri``, by KServe's own
MLflow runtime (``modelFormat: mlflow``, ``storageUri`` rendered from ``{model}`` and ``{version}``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import RolloutState
from airflow_mlops.rollout.targets.base import Backend, RolloutTarget

log = logging.getLogger(__name__)

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
PREFIX = "mlops.airflow-mlops.io"
STATE = f"{PREFIX}/rollout-state"
PREDICTOR_VERSION = f"{PREFIX}/predictor-version"
SERVING_VERSION = f"{PREFIX}/serving-version"
PREVIOUS_PREDICTOR = f"{PREFIX}/previous-predictor"
PREVIOUS_REVISION = f"{PREFIX}/previous-revision"


class KServeTarget(RolloutTarget):
    """Rollout target on a KServe InferenceService.

    :param name: the InferenceService's name.
    :param namespace: its namespace.
    :param kubernetes_conn_id: Airflow Kubernetes connection (through the cncf provider's KubernetesHook).
    :param model: registered model name (default: the rollout state's model; needed for ``deploy_initial``).
    :param image: the serving image (custom predictor); or :param storage_uri: a template such as
        ``s3://models/{model}/{version}/artifacts`` for KServe's MLflow runtime.
    :param tracking_uri: the MLflow tracking URI the serving container loads models from (image mode).
    :param protocol_version: KServe inference protocol for the MLflow runtime (``v2``).
    :param resources: container resources (requests/limits); :param env: extra container env (image mode).
    :param service_account: the predictor's service account (credentials for S3 / MLflow).
    :param kubeconfig: a kubeconfig file to use instead of the Airflow connection (tests, local clusters).
    """

    kind = "kserve"

    def __init__(self, name: str, namespace: str = "default", kubernetes_conn_id: str | None = "kubernetes_default",
                 model: str | None = None, image: str | None = None, storage_uri: str | None = None,
                 tracking_uri: str | None = None, protocol_version: str = "v2",
                 resources: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 service_account: str | None = None, kubeconfig: str | None = None) -> None:
        import re

        if not isinstance(name, str) or not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise SpecError("target.name", "a DNS-1035 label (lowercase letters, digits, '-'; max 63)", name)
        if bool(image) == bool(storage_uri):
            raise SpecError("target.image", "exactly one of image (serving image) or storage_uri (KServe MLflow "
                                            "runtime)", {"image": image, "storage_uri": storage_uri})
        if storage_uri and "{version}" not in storage_uri:
            raise SpecError("target.storage_uri", "a template with {version} (and usually {model})", storage_uri)
        if image and not tracking_uri and not (env or {}).get("MLFLOW_TRACKING_URI"):
            raise SpecError("target.tracking_uri", "the MLflow tracking URI the serving image loads models:/ URIs "
                                                   "from (or env.MLFLOW_TRACKING_URI)", tracking_uri)
        if protocol_version not in ("v1", "v2"):
            raise SpecError("target.protocol_version", "one of ('v1', 'v2')", protocol_version)
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.model = model
        self.image = image
        self.storage_uri = storage_uri
        self.tracking_uri = tracking_uri
        self.protocol_version = protocol_version
        self.resources = dict(resources or {"requests": {"cpu": "500m", "memory": "1Gi"},
                                            "limits": {"cpu": "1", "memory": "2Gi"}})
        self.env = dict(env or {})
        self.service_account = service_account
        self.kubeconfig = kubeconfig
        self._api: Any = None
        self._said_spec = False

    # -- API -----------------------------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """CustomObjectsApi of ``kubernetes_conn_id`` (through the cncf provider's KubernetesHook)."""
        if self._api is None and self.kubeconfig:
            from kubernetes import client, config

            self._api = client.CustomObjectsApi(config.new_client_from_config(config_file=self.kubeconfig))
        elif self._api is None:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            self._api = KubernetesHook(conn_id=self.kubernetes_conn_id).custom_object_client
        return self._api

    def get(self) -> dict[str, Any] | None:
        """The InferenceService (None: not there)."""
        from kubernetes.client.rest import ApiException

        try:
            return dict(self.api.get_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _patch(self, body: Mapping[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name, dict(body))

    # -- manifests -----------------------------------------------------------------------------------------

    def predictor(self, version: str, model: str | None = None) -> dict[str, Any]:
        """The predictor spec that serves ``version``."""
        model = model or self.model
        if not model:
            raise SpecError("target.model", "the registered model name (needed to build the predictor)", model)
        spec: dict[str, Any] = {"minReplicas": 1}
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        if self.storage_uri:
            spec["model"] = {"modelFormat": {"name": "mlflow"}, "protocolVersion": self.protocol_version,
                             "storageUri": self.storage_uri.format(model=model, version=version),
                             "resources": copy.deepcopy(self.resources)}
            return spec
        env = {**self.env, "MODEL_URI": f"models:/{model}/{version}"}
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        spec["containers"] = [{
            "name": "kserve-container", "image": self.image,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 5},
            "resources": copy.deepcopy(self.resources)}]
        return spec

    def manifest(self, version: str, model: str | None = None,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The InferenceService serving ``version`` alone."""
        return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": "InferenceService",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "airflow-mlops"},
                             "annotations": {"serving.kserve.io/enable-tag-routing": "true", **(annotations or {})}},
                "spec": {"predictor": self.predictor(version, model)}}

    @staticmethod
    def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
        return dict((obj.get("metadata") or {}).get("annotations") or {})

    @classmethod
    def _status_traffic(cls, obj: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The predictor's traffic entries when the status describes the current spec.

        Current: ``observedGeneration`` caught up with the object's generation and, while a candidate spec is
        pending, the latest created revision is not the one recorded when that spec was written (an API server
        that does not bump ``generation``, like the test emulator, cannot make a stale status look current).
        """
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation") or 0
        if (status.get("observedGeneration") or 0) < generation:
            return None
        predictor = (status.get("components") or {}).get("predictor") or {}
        previous = cls._annotations(obj).get(PREVIOUS_REVISION)
        if previous and predictor.get("latestCreatedRevision") == previous:
            return None
        traffic = predictor.get("traffic")
        return list(traffic) if traffic else None

    # -- the contract --------------------------------------------------------------------------------------

    def serving_version(self) -> str | None:
        obj = self.get()
        if obj is None:
            return None
        notes = self._annotations(obj)
        percent = self._weight_of(obj)
        if percent >= 100:
            return notes.get(PREDICTOR_VERSION)
        if percent <= 0 and notes.get(SERVING_VERSION) != notes.get(PREDICTOR_VERSION):
            return notes.get(SERVING_VERSION)
        return None

    def deploy_initial(self, version: str) -> None:
        notes = {PREDICTOR_VERSION: version, SERVING_VERSION: version}
        obj = self.get()
        if obj is None:
            self.api.create_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL,
                                                     self.manifest(version, annotations=notes))
            log.info("InferenceService %s/%s created serving v%s", self.namespace, self.name, version)
            return
        obj["spec"]["predictor"] = self.predictor(version)
        obj["metadata"]["annotations"] = {**self._annotations(obj), **notes}
        obj["metadata"]["annotations"].pop(PREVIOUS_PREDICTOR, None)
        self.api.replace_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name, obj)

    def deploy_candidate(self, state: RolloutState) -> None:
        obj = self.get()
        state_note = json.dumps(state.to_dict(), separators=(",", ":"))
        if obj is None:  # first deployment: the candidate alone (the engine promotes it)
            self.api.create_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL,
                self.manifest(state.candidate, state.model, {PREDICTOR_VERSION: state.candidate, STATE: state_note}))
            return
        notes = self._annotations(obj)
        if notes.get(PREDICTOR_VERSION) == state.candidate:
            self.save_state(state)  # a resumed rollout: the candidate spec is already there
            return
        previous = {k: v for k, v in obj["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
        revision = (((obj.get("status") or {}).get("components") or {}).get("predictor") or {}).get(
            "latestCreatedRevision") or ""
        obj["spec"]["predictor"] = {**self.predictor(state.candidate, state.model), "canaryTrafficPercent": 0}
        obj["metadata"]["annotations"] = {**notes, STATE: state_note, PREDICTOR_VERSION: state.candidate,
                                          SERVING_VERSION: notes.get(PREDICTOR_VERSION) or str(state.stable),
                                          PREVIOUS_PREDICTOR: json.dumps(previous, separators=(",", ":")),
                                          PREVIOUS_REVISION: revision}
        # replace (with the resourceVersion read above): a concurrent writer gets a 409, not a silent merge
        self.api.replace_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name, obj)
        log.info("InferenceService %s/%s: candidate v%s at canaryTrafficPercent 0 beside v%s", self.namespace,
                 self.name, state.candidate, state.stable)

    def candidate_ready(self, state: RolloutState) -> bool:
        obj = self.get()
        notes = self._annotations(obj) if obj else {}
        if obj is None or notes.get(PREDICTOR_VERSION) != state.candidate:
            return False
        status = obj.get("status") or {}
        if (status.get("observedGeneration") or 0) < ((obj.get("metadata") or {}).get("generation") or 0):
            return False
        predictor = (status.get("components") or {}).get("predictor") or {}
        ready = any(c.get("type") == "PredictorReady" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        latest = predictor.get("latestReadyRevision")
        # a new revision (not the one serving when the candidate spec was written) is created and ready
        return ready and bool(latest) and latest == predictor.get("latestCreatedRevision") and \
            latest != notes.get(PREVIOUS_REVISION)

    def _weight_of(self, obj: Mapping[str, Any]) -> int:
        """The latest predictor spec's share of traffic: from the status when current, else the spec's."""
        traffic = self._status_traffic(obj)
        if traffic is not None:
            return int(sum(int(t.get("percent") or 0) for t in traffic if t.get("latestRevision")))
        percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
        if not self._said_spec:  # once per target: the trigger asks every poll
            log.info("InferenceService %s/%s has no current status (no KServe controller has reconciled it): "
                     "reading the desired weight from spec.predictor.canaryTrafficPercent", self.namespace, self.name)
            self._said_spec = True
        return 100 if percent is None else int(percent)

    def observed_weight(self, state: RolloutState) -> int:
        obj = self.get()
        if obj is None or self._annotations(obj).get(PREDICTOR_VERSION) != state.candidate:
            return 0
        return self._weight_of(obj)

    def apply_weight(self, state: RolloutState) -> None:
        self._patch({"metadata": {"annotations": {STATE: json.dumps(state.to_dict(), separators=(",", ":"))}},
                     "spec": {"predictor": {"canaryTrafficPercent": int(state.weight)}}})
        log.info("InferenceService %s/%s: canaryTrafficPercent %d", self.namespace, self.name, state.weight)

    def promote(self, state: RolloutState) -> None:
        self._patch({"metadata": {"annotations": {STATE: json.dumps(state.to_dict(), separators=(",", ":")),
                                                  SERVING_VERSION: state.candidate, PREVIOUS_PREDICTOR: None,
                                                  PREVIOUS_REVISION: None}},
                     "spec": {"predictor": {"canaryTrafficPercent": None}}})
        log.info("InferenceService %s/%s: v%s promoted (canaryTrafficPercent removed)", self.namespace, self.name,
                 state.candidate)

    def rollback(self, state: RolloutState) -> None:
        note = json.dumps(state.to_dict(), separators=(",", ":"))
        obj = self.get()
        if obj is None:
            return
        notes = self._annotations(obj)
        if notes.get(PREDICTOR_VERSION) != state.candidate or not notes.get(PREVIOUS_PREDICTOR):
            self.save_state(state)
            return
        # 1. the previous revision takes all traffic at once; 2. the previous spec becomes the predictor again
        self._patch({"metadata": {"annotations": {STATE: note}}, "spec": {"predictor": {"canaryTrafficPercent": 0}}})
        obj = self.get()
        assert obj is not None
        obj["spec"]["predictor"] = json.loads(notes[PREVIOUS_PREDICTOR])
        annotations = {**self._annotations(obj), STATE: note,
                       PREDICTOR_VERSION: notes.get(SERVING_VERSION) or str(state.stable)}
        annotations.pop(PREVIOUS_PREDICTOR, None)
        annotations.pop(PREVIOUS_REVISION, None)
        obj["metadata"]["annotations"] = annotations
        self.api.replace_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name, obj)
        log.warning("InferenceService %s/%s: rolled back to v%s's predictor spec", self.namespace, self.name,
                    state.stable)

    def load_state(self) -> RolloutState | None:
        obj = self.get()
        note = self._annotations(obj).get(STATE) if obj else None
        return RolloutState.from_dict(json.loads(note)) if note else None

    def save_state(self, state: RolloutState) -> None:
        self._patch({"metadata": {"annotations": {STATE: json.dumps(state.to_dict(), separators=(",", ":"))}}})

    def read_state(self) -> RolloutState | None:
        obj = self.get()
        note = self._annotations(obj).get(STATE) if obj else None
        if obj is None or not note:
            return None
        state = RolloutState.from_dict(json.loads(note))
        weight = self._weight_of(obj) if self._annotations(obj).get(PREDICTOR_VERSION) == state.candidate else 0
        return replace(state, weight=weight)

    def backends(self, state: RolloutState) -> dict[str, Backend]:
        found = super().backends(state)
        obj = self.get()
        urls: dict[str, str] = {}
        for entry in (self._status_traffic(obj) or []) if obj else []:
            if entry.get("url"):
                urls["candidate" if entry.get("latestRevision") else "stable"] = str(entry["url"])
        return {role: replace(b, url=urls.get(role)) for role, b in found.items()}

    def cleanup(self) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.api.delete_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name)
        except ApiException as err:
            if err.status != 404:
                raise

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "inferenceservice": f"{self.namespace}/{self.name}",
                "kubernetes_conn_id": self.kubernetes_conn_id}
