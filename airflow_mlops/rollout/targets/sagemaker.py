"""The SageMaker target: one real-time endpoint, one production variant (and one Model) per MLflow model version.

* A version is a SageMaker Model running the serving image (``docker/serving.Dockerfile``) with
  ``MODEL_URI=models:/<model>/<version>`` and ``MLFLOW_TRACKING_URI`` in its environment; its production variant
  is named ``v<version>`` (the backend name analysis providers use as CloudWatch's ``VariantName``).
* The candidate joins the stable version through a new two-variant endpoint config and ``UpdateEndpoint``
  (candidate weight 0); traffic moves with ``UpdateEndpointWeightsAndCapacities`` (DesiredWeight per variant).
  Promote: candidate 100%, then a single-variant config swapped in with ``UpdateEndpoint``. Rollback: stable
  100%, then the stable-only config (the candidate variant is removed). What a swap retires (the old config, the
  retired version's Model) is deleted at the next change once the endpoint is InService, or by ``cleanup``:
  an updating endpoint may still need it. Blue-green uses the same
  moves: the preview is the weight-0 candidate variant, the switch is weight 100, and the final config swap
  retires the old version after the scale-down delay.
* Rollout state lives in the endpoint's **tags**. A tag value holds at most 256 characters, so the state JSON
  is zlib-compressed, base64-encoded and split over ``mlops:rollout:state:<i>`` tags (count in
  ``mlops:rollout:state:n``), written with one ``AddTags`` call. If it still does not fit in ``MAX_STATE_TAGS``
  tags, measurements of finished steps are dropped oldest first (the engine only reads the current step's).
* ``observed_weight`` is the candidate's share of the variants' ``CurrentWeight`` from ``DescribeEndpoint``
  (weights are relative in SageMaker; a variant without ``CurrentWeight`` counts as 0).

Clients come from the amazon provider's hooks (``SageMakerHook``, ``AwsBaseHook`` for CloudWatch) with
``aws_conn_id``; boto3 is imported inside methods only.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.rollout import RolloutState
from airflow_mlops.rollout.targets.base import RolloutTarget, TargetBusy

log = logging.getLogger(__name__)

STATE_TAG = "mlops:rollout:state"
MANAGED_TAG = "mlops:rollout:endpoint"
TAG_VALUE_MAX = 256
MAX_STATE_TAGS = 40  # SageMaker allows 50 tags per resource: leave room for the user's own
NAME_MAX = 63


def encode_state(data: Mapping[str, Any], chunk: int = TAG_VALUE_MAX) -> list[str]:
    """The state as tag values: compact JSON, zlib, base64 (tag-safe characters), cut in ``chunk``-sized pieces."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    text = base64.b64encode(zlib.compress(raw, 9)).decode()
    return [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]


def decode_state(chunks: list[str]) -> dict[str, Any]:
    """Back from :func:`encode_state`'s pieces."""
    return dict(json.loads(zlib.decompress(base64.b64decode("".join(chunks)))))


def fit_state(state: RolloutState, max_chunks: int = MAX_STATE_TAGS) -> tuple[RolloutState, list[str]]:
    """The state (trimmed if needed) and its tag values: drop finished steps' measurements, oldest first."""
    chunks = encode_state(state.to_dict())
    measurements = list(state.measurements)
    while len(chunks) > max_chunks:
        old = next((i for i, m in enumerate(measurements) if not m.background and m.step < state.step), None)
        if old is None:
            raise ValueError(f"rollout state needs {len(chunks)} tags of {TAG_VALUE_MAX} characters, more than "
                             f"{max_chunks}, even without finished steps' measurements")
        del measurements[old]
        state = replace(state, measurements=tuple(measurements))
        chunks = encode_state(state.to_dict())
    return state, chunks


class SageMakerTarget(RolloutTarget):
    """Rollout target on a SageMaker real-time endpoint (two production variants while a rollout runs).

    :param name: the endpoint's name; Models are ``<name>-v<version>``, endpoint configs ``<name>-<millis>``.
    :param image: the serving image URI in ECR (built from ``docker/serving.Dockerfile``).
    :param execution_role_arn: the role SageMaker assumes to pull the image and reach MLflow / S3.
    :param tracking_uri: the MLflow tracking URI **the containers** load models from.
    :param model: registered model name (default: the rollout state's model; needed for ``deploy_initial``).
    :param aws_conn_id: Airflow AWS connection (region, credentials, ``endpoint_url``).
    :param region_name: overrides the connection's region.
    :param instance_type: instance type per variant; :param instance_count: instances per variant.
    :param env: extra container environment.
    :param data_capture_uri: S3 prefix for endpoint Data Capture (request + response, what the drift monitor's
        inference-log collector reads); None: no capture.
    :param data_capture_percent: share of requests captured.
    :param settle_timeout_s: how long a traffic change waits in the worker for an ``Updating`` endpoint before
        raising :class:`TargetBusy`, so the operator defers until it is InService (an update takes minutes).
    :param poll_s: seconds between those status checks.
    """

    kind = "sagemaker"

    def __init__(self, name: str, image: str, execution_role_arn: str, tracking_uri: str | None = None,
                 model: str | None = None, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 instance_type: str = "ml.m5.large", instance_count: int = 1, env: Mapping[str, str] | None = None,
                 settle_timeout_s: float = 10.0, poll_s: float = 2.0, data_capture_uri: str | None = None,
                 data_capture_percent: int = 100) -> None:
        for field, value in (("name", name), ("image", image), ("execution_role_arn", execution_role_arn)):
            if not isinstance(value, str) or not value:
                raise SpecError(f"target.{field}", "a non-empty string", value)
        if len(name) > NAME_MAX - 14:
            raise SpecError("target.name", f"an endpoint name of at most {NAME_MAX - 14} characters "
                                           "(room for the config and model suffixes)", name)
        if isinstance(instance_count, bool) or not isinstance(instance_count, int) or instance_count < 1:
            raise SpecError("target.instance_count", "an integer >= 1", instance_count)
        if not tracking_uri and not (env or {}).get("MLFLOW_TRACKING_URI"):
            raise SpecError("target.tracking_uri", "the MLflow tracking URI the serving containers load "
                                                   "models:/ URIs from (or env.MLFLOW_TRACKING_URI)", tracking_uri)
        if data_capture_uri is not None and not str(data_capture_uri).startswith("s3://"):
            raise SpecError("target.data_capture_uri", "an s3:// prefix or None", data_capture_uri)
        if isinstance(data_capture_percent, bool) or not isinstance(data_capture_percent, int) \
                or not 0 < data_capture_percent <= 100:
            raise SpecError("target.data_capture_percent", "an integer in (0, 100]", data_capture_percent)
        self.name = name
        self.image = image
        self.execution_role_arn = execution_role_arn
        self.tracking_uri = tracking_uri
        self.model = model
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.env = dict(env or {})
        self.settle_timeout_s = settle_timeout_s
        self.poll_s = poll_s
        self.data_capture_uri = data_capture_uri
        self.data_capture_percent = data_capture_percent
        self._sm: Any = None
        self._cw: Any = None

    # -- clients (hooks own connections) -------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The SageMaker client of ``aws_conn_id`` (through the amazon provider's SageMakerHook)."""
        if self._sm is None:
            from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

            self._sm = SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).conn
        return self._sm

    def cloudwatch_client(self) -> Any:
        """A CloudWatch client of the same connection (for the CloudWatch analysis provider)."""
        if self._cw is None:  # the trigger asks at every measurement: one client per target
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            self._cw = AwsBaseHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                                   client_type="cloudwatch").conn
        return self._cw

    @staticmethod
    def _missing(err: Exception) -> bool:
        text = str(err)
        return "Could not find" in text or "does not exist" in text or "ResourceNotFound" in text

    # -- naming ----------------------------------------------------------------------------------------

    def model_name(self, version: str) -> str:
        """The SageMaker Model of one version."""
        return f"{self.name}-v{version}"[:NAME_MAX]

    def version_of(self, variant: str) -> str:
        """The model version a variant serves."""
        return variant[1:] if variant.startswith("v") else variant

    # -- endpoint ----------------------------------------------------------------------------------------

    def describe_endpoint(self) -> dict[str, Any] | None:
        """``DescribeEndpoint`` (None: no endpoint)."""
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.describe_endpoint(EndpointName=self.name))
        except ClientError as err:
            if self._missing(err):
                return None
            raise

    def weights(self, described: Mapping[str, Any] | None = None) -> dict[str, float]:
        """``{variant: CurrentWeight}`` as the endpoint applies them now."""
        described = self.describe_endpoint() if described is None else described
        if not described:
            return {}
        return {v["VariantName"]: float(v.get("CurrentWeight") or 0.0) for v in described.get("ProductionVariants", [])}

    def _arn(self) -> str:
        described = self.describe_endpoint()
        if described is None:
            raise RuntimeError(f"SageMaker endpoint {self.name} does not exist")
        return str(described["EndpointArn"])

    def _ensure_model(self, version: str, model: str | None) -> str:
        from botocore.exceptions import ClientError

        name = self.model_name(version)
        try:
            self.client.describe_model(ModelName=name)
            return name
        except ClientError as err:
            if not self._missing(err):
                raise
        model = model or self.model
        if not model:
            raise SpecError("target.model", "the registered model name (needed to create a SageMaker Model)", model)
        env = {**self.env, "MODEL_URI": f"models:/{model}/{version}"}
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        self.client.create_model(ModelName=name, ExecutionRoleArn=self.execution_role_arn,
                                 PrimaryContainer={"Image": self.image, "Environment": env},
                                 Tags=[{"Key": MANAGED_TAG, "Value": self.name}])
        log.info("SageMaker model %s: %s serving %s", name, self.image, env["MODEL_URI"])
        return name

    def _new_config(self, variants: list[tuple[str, float]]) -> str:
        """A new endpoint config with ``(version, weight)`` variants; returns its name."""
        name = f"{self.name}-{int(time.time() * 1000)}"
        extra: dict[str, Any] = {}
        if self.data_capture_uri:
            # every config carries the capture settings: a config swap must not silently stop the drift log
            extra["DataCaptureConfig"] = {
                "EnableCapture": True, "InitialSamplingPercentage": self.data_capture_percent,
                "DestinationS3Uri": self.data_capture_uri,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
        self.client.create_endpoint_config(
            EndpointConfigName=name, **extra,
            ProductionVariants=[{"VariantName": self.backend_name(version), "ModelName": self.model_name(version),
                                 "InitialInstanceCount": self.instance_count, "InstanceType": self.instance_type,
                                 "InitialVariantWeight": float(weight)} for version, weight in variants],
            Tags=[{"Key": MANAGED_TAG, "Value": self.name}])
        return name

    def _swap_config(self, variants: list[tuple[str, float]], model: str | None = None) -> None:
        """Point the endpoint at a new config with ``(version, weight)`` variants (``UpdateEndpoint``)."""
        described = self.describe_endpoint()
        if described is not None:
            described = self._settle()
            self.prune(keep_versions={version for version, _ in variants})
        for version, _ in variants:
            self._ensure_model(version, model)
        config = self._new_config(variants)
        if described is None:
            self.client.create_endpoint(EndpointName=self.name, EndpointConfigName=config,
                                        Tags=[{"Key": MANAGED_TAG, "Value": self.name}])
            log.info("SageMaker endpoint %s created with %s (%s)", self.name, config, variants)
            return
        self.client.update_endpoint(EndpointName=self.name, EndpointConfigName=config)
        log.info("SageMaker endpoint %s: UpdateEndpoint -> %s (%s)", self.name, config, variants)

    def prune(self, keep_versions: set[str] | frozenset[str] = frozenset()) -> None:
        """Delete this target's endpoint configs and Models the endpoint no longer uses.

        Only while the endpoint is InService: during an update the config (and its Models) being replaced may
        still be needed (AWS: never delete a config an updating endpoint uses; a failed update rolls back to it).
        So what a promote or rollback retires is deleted at the next change, or by ``cleanup``.
        """
        described = self.describe_endpoint()
        if described is None or described.get("EndpointStatus") != "InService":
            return
        current = str(described.get("EndpointConfigName") or "")
        in_use = {self.version_of(v["VariantName"]) for v in described.get("ProductionVariants", [])}
        state = self.load_state()
        if state is not None and state.phase == "promoted" and state.stable and self.keeps_previous(state):
            in_use.add(state.stable)  # keep_previous: the replaced version's Model stays for a fast rollback
        keep = {self.model_name(v) for v in in_use | set(keep_versions)}
        for config in self._owned("configs"):
            if config != current:
                self._delete("endpoint config", self.client.delete_endpoint_config, EndpointConfigName=config)
        for name in self._owned("models"):
            if name not in keep:
                self._delete("model", self.client.delete_model, ModelName=name)

    def _owned(self, what: str) -> list[str]:
        """Names of this target's endpoint configs (``<name>-<millis>``) or Models (``<name>-v<version>``)."""
        if what == "configs":
            pages = self.client.get_paginator("list_endpoint_configs").paginate(NameContains=self.name)
            names = [c["EndpointConfigName"] for page in pages for c in page.get("EndpointConfigs", [])]
            return [n for n in names if n.startswith(f"{self.name}-") and n[len(self.name) + 1:].isdigit()]
        pages = self.client.get_paginator("list_models").paginate(NameContains=self.name)
        return [m["ModelName"] for page in pages for m in page.get("Models", [])
                if m["ModelName"].startswith(f"{self.name}-v")]

    def _delete(self, what: str, call: Any, **kwargs: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            call(**kwargs)
        except ClientError as err:
            if not self._missing(err):
                raise
        else:
            log.info("deleted SageMaker %s %s", what, next(iter(kwargs.values())))

    def _settle(self) -> dict[str, Any]:
        """Wait (briefly, bounded) until the endpoint is not ``Updating``; it must then be InService."""
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            described = self.describe_endpoint()
            if described is None:
                raise RuntimeError(f"SageMaker endpoint {self.name} does not exist")
            status = described.get("EndpointStatus")
            if status == "InService":
                return described
            if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
                raise RuntimeError(f"SageMaker endpoint {self.name} is {status}: {described.get('FailureReason')}")
            if time.monotonic() > deadline:
                raise TargetBusy(f"SageMaker endpoint {self.name} is still {status} after {self.settle_timeout_s:g}s")
            log.info("SageMaker endpoint %s is %s: waiting", self.name, status)
            time.sleep(self.poll_s)

    def _set_weights(self, weights: Mapping[str, float]) -> None:
        described = self._settle()
        present = {v["VariantName"] for v in described.get("ProductionVariants", [])}
        desired = [{"VariantName": name, "DesiredWeight": float(w)} for name, w in weights.items() if name in present]
        if not desired:
            return
        self.client.update_endpoint_weights_and_capacities(EndpointName=self.name,
                                                           DesiredWeightsAndCapacities=desired)
        log.info("SageMaker endpoint %s: weights %s", self.name,
                 ", ".join(f"{d['VariantName']}={d['DesiredWeight']:g}" for d in desired))

    # -- the contract -----------------------------------------------------------------------------------

    def serving_version(self) -> str | None:
        weights = self.weights()
        total = sum(weights.values())
        full = [name for name, w in weights.items() if total > 0 and w == total]
        return self.version_of(full[0]) if full else None

    def deploy_initial(self, version: str) -> None:
        self._swap_config([(version, 1.0)])

    def deploy_candidate(self, state: RolloutState) -> None:
        described = self.describe_endpoint()
        if described is None:
            # First deployment: the endpoint is created with the candidate alone (the engine promotes it).
            self._swap_config([(state.candidate, 1.0)], state.model)
            self.save_state(state)
            return
        self.save_state(state)  # the owner is recorded before anything changes
        present = self.weights(described)
        if self.backend_name(state.candidate) in present:
            return  # a resumed rollout: the candidate variant is already there
        variants = [(self.version_of(name), w) for name, w in present.items() if w > 0]
        if state.stable and self.backend_name(state.stable) not in present:
            variants = [(state.stable, 1.0)]
        self._swap_config([*variants, (state.candidate, 0.0)], state.model)

    def settled(self) -> bool:
        described = self.describe_endpoint()
        if described is None:
            return True  # nothing to wait for: the next call creates it (or says it is gone)
        status = described.get("EndpointStatus")
        if status in ("Failed", "UpdateRollbackFailed"):
            raise RuntimeError(f"SageMaker endpoint {self.name} is {status}: {described.get('FailureReason')}")
        return status == "InService"

    def candidate_ready(self, state: RolloutState) -> bool:
        described = self.describe_endpoint()
        if described is None:
            return False
        status = described.get("EndpointStatus")
        if status == "Failed":
            raise RuntimeError(f"SageMaker endpoint {self.name} failed: {described.get('FailureReason')}")
        return status == "InService" and self.backend_name(state.candidate) in self.weights(described)

    def observed_weight(self, state: RolloutState) -> int:
        weights = self.weights()
        total = sum(weights.values())
        if total <= 0:
            return 0
        return round(100 * weights.get(self.backend_name(state.candidate), 0.0) / total)

    def apply_weight(self, state: RolloutState) -> None:
        self.save_state(state)
        weights = {self.backend_name(state.candidate): float(state.weight)}
        if state.stable:
            weights[self.backend_name(state.stable)] = float(100 - state.weight)
        self._set_weights(weights)

    def promote(self, state: RolloutState) -> None:
        self.save_state(state)
        weights = {self.backend_name(state.candidate): 100.0}
        if state.stable and state.stable != state.candidate:
            weights[self.backend_name(state.stable)] = 0.0
        self._set_weights(weights)
        if set(self.weights()) != {self.backend_name(state.candidate)}:
            self._swap_config([(state.candidate, 1.0)], state.model)

    def rollback(self, state: RolloutState) -> None:
        self.save_state(state)
        if not state.stable:
            log.warning("rollback of %s v%s: no stable version to return to; the endpoint is left as it is",
                        state.model, state.candidate)
            return
        present = self.weights()
        if self.backend_name(state.candidate) in present:
            self._set_weights({self.backend_name(state.stable): 100.0, self.backend_name(state.candidate): 0.0})
        if set(self.weights()) != {self.backend_name(state.stable)}:
            self._swap_config([(state.stable, 1.0)], state.model)

    def _tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        for page in self.client.get_paginator("list_tags").paginate(ResourceArn=arn):
            for tag in page.get("Tags", []):
                tags[tag["Key"]] = tag["Value"]  # last one wins, as AddTags overwrites
        return tags

    def load_state(self) -> RolloutState | None:
        described = self.describe_endpoint()
        if described is None:
            return None
        tags = self._tags(str(described["EndpointArn"]))
        if f"{STATE_TAG}:n" not in tags:
            return None
        count = int(tags[f"{STATE_TAG}:n"])
        chunks = [tags.get(f"{STATE_TAG}:{i}") for i in range(count)]
        if any(c is None for c in chunks):
            raise RuntimeError(f"rollout state tags on {self.name} are incomplete: expected {count} pieces")
        return RolloutState.from_dict(decode_state([c for c in chunks if c is not None]))

    def save_state(self, state: RolloutState) -> None:
        arn = self._arn()
        fitted, chunks = fit_state(state)
        if len(fitted.measurements) < len(state.measurements):
            log.warning("rollout state of %s: dropped %d finished steps' measurements to fit in %d tags",
                        self.name, len(state.measurements) - len(fitted.measurements), MAX_STATE_TAGS)
        tags = [{"Key": f"{STATE_TAG}:n", "Value": str(len(chunks))}]
        tags += [{"Key": f"{STATE_TAG}:{i}", "Value": chunk} for i, chunk in enumerate(chunks)]
        self.client.add_tags(ResourceArn=arn, Tags=tags)  # one call: the pieces change together
        stale = [key for key in self._tags(arn) if key.startswith(f"{STATE_TAG}:")
                 and key.rsplit(":", 1)[1].isdigit() and int(key.rsplit(":", 1)[1]) >= len(chunks)]
        if stale:
            self.client.delete_tags(ResourceArn=arn, TagKeys=stale)

    def cleanup(self) -> None:
        described = self.describe_endpoint()
        if described is not None:
            self._delete("endpoint", self.client.delete_endpoint, EndpointName=self.name)
        for config in self._owned("configs"):
            self._delete("endpoint config", self.client.delete_endpoint_config, EndpointConfigName=config)
        for model in self._owned("models"):
            self._delete("model", self.client.delete_model, ModelName=model)

    def analysis_settings(self) -> dict[str, Any]:
        return {"aws": {"client": self.cloudwatch_client()}, "sagemaker_endpoint": self.name}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "endpoint": self.name, "aws_conn_id": self.aws_conn_id,
                "region": self.region_name}
