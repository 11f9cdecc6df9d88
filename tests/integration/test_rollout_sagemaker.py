"""The SageMaker target against a real moto server over HTTP (``ThreadedMotoServer``), through the amazon
provider's hooks and an Airflow ``aws_default`` connection with ``extra.endpoint_url``; the rollout operator
under ``dag.test()`` with CloudWatch GetMetricData analysis against the same moto server.

What moto 5.2.5 cannot run, said precisely:

* ``UpdateEndpoint`` is not implemented by moto (no ``update_endpoint`` in ``moto/sagemaker/responses.py``).
  :func:`moto_update_endpoint` adds it to moto's own SageMaker backend with the documented AWS behaviour
  (the endpoint takes the new config's production variants and is ``Updating`` until the new fleet is up,
  here 0.3 s). ``test_moto_still_lacks_update_endpoint`` fails once moto implements it, so the patch goes.
* moto's ``AddTags`` appends a second tag with the same key instead of overwriting it (AWS overwrites), and
  its ``ListTags`` pagination (unique attribute ``Key``) then loops forever once duplicates pass a page (50).
  :func:`moto_add_tags_overwrites` gives moto's backend AWS's overwrite semantics;
  ``test_moto_still_appends_duplicate_tags`` fails once moto fixes it.
* moto reports no ``CurrentWeight`` for a variant created with weight 0 (real SageMaker reports 0.0).
* Nobody invokes the endpoint (moto runs no containers): :class:`VariantTraffic` plays SageMaker's data plane
  and publishes per-variant ``Invocations`` / ``Invocation5XXErrors`` / ``ModelLatency`` with
  ``PutMetricData``, split by the ``CurrentWeight`` the endpoint reports through ``DescribeEndpoint`` now.
* moto's metric math only resolves a bare query id (no arithmetic), so the 5xx rate is the ``Average`` of
  ``Invocation5XXErrors`` (SageMaker publishes it as 0/1 per request), not ``errors / invocations``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.aws import use_moto
from tests.dagfiles import load_dag

REGION = "us-east-1"
MODEL = "rollout_sm"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops-serving:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/mlops-sagemaker-execution"
UPDATE_SECONDS = 0.3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_update_endpoint() -> None:
    """Teach moto's SageMaker backend ``UpdateEndpoint`` (AWS semantics; moto 5.2.5 lacks it)."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: Any) -> Any:
        backend = self.sagemaker_backend
        name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{name}'.")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint '{endpoint.arn}'.")
        config = backend.describe_endpoint_config(config_name)
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.endpoint_status = "Updating"
        endpoint.last_modified_time = utcnow()

        def in_service() -> None:
            endpoint.endpoint_status = "InService"

        threading.Timer(UPDATE_SECONDS, in_service).start()
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]


def _moto_add_tags_appends() -> bool:
    from moto.sagemaker.models import SageMakerModelBackend

    class Resource:
        tags = [{"Key": "k", "Value": "1"}]

    backend = SageMakerModelBackend.__new__(SageMakerModelBackend)
    backend._get_resource_from_arn = lambda arn: Resource  # type: ignore[method-assign]
    return len(SageMakerModelBackend.add_tags(backend, "arn", [{"Key": "k", "Value": "2"}])) == 2


def moto_add_tags_overwrites() -> Any:
    """Give moto's SageMaker ``AddTags`` AWS's semantics (an existing key gets the new value); returns the original."""
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.add_tags

    def add_tags(self: Any, arn: str, tags: list[dict[str, str]]) -> list[dict[str, str]]:
        resource = self._get_resource_from_arn(arn)
        new = {t["Key"]: t["Value"] for t in tags}
        resource.tags = [t for t in resource.tags if t["Key"] not in new] + [{"Key": k, "Value": v}
                                                                              for k, v in new.items()]
        return list(resource.tags)

    SageMakerModelBackend.add_tags = add_tags  # type: ignore[method-assign]
    return original


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on a free port, for this module (with the two AWS behaviours moto lacks, see module doc)."""
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto request otherwise
    lacked = not hasattr(SageMakerResponse, "update_endpoint")
    if lacked:
        moto_update_endpoint()
    original_add_tags = moto_add_tags_overwrites() if _moto_add_tags_appends() else None
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    if lacked:
        del SageMakerResponse.update_endpoint  # type: ignore[attr-defined]
    if original_add_tags is not None:
        SageMakerModelBackend.add_tags = original_add_tags  # type: ignore[method-assign]


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> dict[str, Any]:
    """``aws_default`` pointing at moto (reset for each test), and boto3 clients for assertions."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10)
    use_moto(monkeypatch, moto_url, "aws_default", REGION)
    kwargs = {"endpoint_url": moto_url, "region_name": REGION}
    return {"url": moto_url, "sagemaker": boto3.client("sagemaker", **kwargs),
            "cloudwatch": boto3.client("cloudwatch", **kwargs)}


def _target(name: str = "contract-ep") -> Any:
    from airflow_mlops.rollout.targets import make_target

    return make_target({"kind": "sagemaker", "name": name, "image": IMAGE, "execution_role_arn": ROLE,
                        "model": MODEL, "tracking_uri": "http://mlflow.internal:5000", "poll_s": 0.05,
                        "data_capture_uri": f"s3://mlops-capture/{name}"})


def _state(candidate: str = "2", stable: str | None = "1", **changes: Any) -> Any:
    from airflow_mlops.core.rollout import CanaryStrategy, RolloutState

    state = RolloutState(owner="dag/run/task", model=MODEL, stable=stable, candidate=candidate,
                         strategy=CanaryStrategy(steps=(25, 50, 100), pause_s=1).to_dict(), started_at=time.time())
    return replace(state, **changes)


def _variants(aws: dict[str, Any], name: str = "contract-ep") -> dict[str, float]:
    described = aws["sagemaker"].describe_endpoint(EndpointName=name)
    return {v["VariantName"]: float(v.get("CurrentWeight", 0.0)) for v in described["ProductionVariants"]}


def tags_now(aws: dict[str, Any], arn: str) -> dict[str, str]:
    """The resource's tags, last one wins (moto's AddTags appends duplicates)."""
    return {t["Key"]: t["Value"] for page in aws["sagemaker"].get_paginator("list_tags").paginate(ResourceArn=arn)
            for t in page["Tags"]}


def _models(aws: dict[str, Any]) -> set[str]:
    return {m["ModelName"] for m in aws["sagemaker"].list_models()["Models"]}


def _configs(aws: dict[str, Any]) -> list[str]:
    return [c["EndpointConfigName"] for c in aws["sagemaker"].list_endpoint_configs()["EndpointConfigs"]]


def _wait_ready(target: Any, state: Any) -> None:
    deadline = time.monotonic() + 10
    while not target.candidate_ready(state):
        assert time.monotonic() < deadline, "candidate never ready"
        time.sleep(0.05)


def test_moto_still_lacks_update_endpoint() -> None:
    """Guards the one piece added to moto: when moto implements UpdateEndpoint, drop ``moto_update_endpoint``."""
    import moto

    source = Path(moto.__file__).parent / "sagemaker" / "responses.py"
    assert "def update_endpoint(" not in source.read_text()


def test_moto_still_appends_duplicate_tags() -> None:
    """Guards the other piece: when moto's AddTags overwrites like AWS, drop ``moto_add_tags_overwrites``."""
    from moto.sagemaker.models import SageMakerModelBackend

    if SageMakerModelBackend.add_tags.__module__ == __name__:
        pytest.skip("patched by this module's moto server fixture; the check ran before patching")
    assert _moto_add_tags_appends()


def test_contract_deploy_weights_state_promote(aws: dict[str, Any]) -> None:
    target = _target()
    assert target.serving_version() is None and target.read_state() is None
    target.deploy_initial("1")
    assert target.serving_version() == "1" and _variants(aws) == {"v1": 1.0}
    container = aws["sagemaker"].describe_model(ModelName="contract-ep-v1")["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["Environment"] == {"MODEL_URI": f"models:/{MODEL}/1",
                                        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}

    state = _state()
    target.deploy_candidate(state)
    assert set(_variants(aws)) == {"v1", "v2"} and target.observed_weight(state) == 0
    assert not target.candidate_ready(state)  # UpdateEndpoint in progress: Updating
    _wait_ready(target, state)
    assert target.read_state() == replace(state, weight=0)
    assert target.serving_version() == "1"

    for step, weight in enumerate((25, 50)):
        state = replace(state, step=step, weight=weight)
        target.apply_weight(state)
        assert _variants(aws) == {"v1": float(100 - weight), "v2": float(weight)}
        assert target.observed_weight(state) == weight and target.read_state() == state
    target.deploy_candidate(replace(state, weight=50))  # a resumed task: nothing is re-created
    assert _variants(aws) == {"v1": 50.0, "v2": 50.0}

    state = replace(state, phase="promoted", step=2, weight=100)
    target.promote(state)
    target.prune()  # the endpoint is Updating: the retired config and Model may still be needed, nothing goes
    assert _models(aws) == {"contract-ep-v1", "contract-ep-v2"} and len(_configs(aws)) == 2
    config = aws["sagemaker"].describe_endpoint(EndpointName="contract-ep")["EndpointConfigName"]
    capture = aws["sagemaker"].describe_endpoint_config(EndpointConfigName=config)["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["DestinationS3Uri"] == "s3://mlops-capture/contract-ep"
    _wait_ready(target, state)
    assert _variants(aws) == {"v2": 1.0} and target.serving_version() == "2"
    assert target.read_state() == state
    target.prune()  # InService now: the old config goes; keep_previous (the default) keeps v1's Model for a rollback
    assert _models(aws) == {"contract-ep-v1", "contract-ep-v2"} and _configs(aws) == [config]
    target.save_state(replace(state, strategy={**state.strategy, "keep_previous": False}))
    target.prune()  # without keep_previous the retired version's Model goes too
    assert _models(aws) == {"contract-ep-v2"} and _configs(aws) == [config]

    target.cleanup()
    assert target.describe_endpoint() is None
    assert not aws["sagemaker"].list_models()["Models"]
    assert not aws["sagemaker"].list_endpoint_configs()["EndpointConfigs"]


def test_contract_rollback_leaves_stable_at_100(aws: dict[str, Any]) -> None:
    target = _target()
    target.deploy_initial("1")
    state = _state(candidate="3")
    target.deploy_candidate(state)
    _wait_ready(target, state)
    state = replace(state, step=1, weight=50)
    target.apply_weight(state)
    assert target.read_state().weight == 50
    aborted = replace(state, phase="aborted", weight=0, reason="error_rate failed")
    target.rollback(aborted)
    assert _variants(aws) == {"v1": 1.0} and target.serving_version() == "1"
    assert target.observed_weight(aborted) == 0 and target.read_state() == aborted
    _wait_ready(target, replace(aborted, candidate="1"))
    target.prune()
    assert _models(aws) == {"contract-ep-v1"} and len(_configs(aws)) == 1
    target.cleanup()


def test_blue_green_preview_switch_then_post_promotion_rollback(aws: dict[str, Any]) -> None:
    """Blue-green as the engine drives it: preview (candidate variant at weight 0), switch (weight 100, the old
    variant kept warm for the scale-down delay), then a failed post-promotion analysis rolls back."""
    from airflow_mlops.core.rollout import BlueGreenStrategy

    target = _target()
    target.deploy_initial("1")
    state = _state(strategy=BlueGreenStrategy(preview_pause_s=1, scale_down_delay_s=1).to_dict())
    target.deploy_candidate(state)
    _wait_ready(target, state)
    state = replace(state, step=0, weight=0)
    target.apply_weight(state)
    assert _variants(aws) == {"v1": 100.0, "v2": 0.0} and target.serving_version() == "1"
    state = replace(state, step=1, weight=100)
    target.apply_weight(state)
    assert _variants(aws) == {"v1": 0.0, "v2": 100.0} and target.serving_version() == "2"
    assert target.observed_weight(state) == 100 and target.read_state() == state
    target.rollback(replace(state, phase="aborted", weight=0, reason="post-promotion analysis failed"))
    assert _variants(aws) == {"v1": 1.0} and target.serving_version() == "1"
    target.cleanup()


def test_first_deployment_creates_the_endpoint_with_the_candidate(aws: dict[str, Any]) -> None:
    target = _target("first-ep")
    state = _state(candidate="1", stable=None)
    target.deploy_candidate(state)
    assert target.candidate_ready(state) and _variants(aws, "first-ep") == {"v1": 1.0}
    assert target.read_state() == replace(state, weight=100)
    target.cleanup()


def test_state_is_compressed_and_split_over_tags(aws: dict[str, Any]) -> None:
    from airflow_mlops.core.rollout import Measurement
    from airflow_mlops.rollout.targets.sagemaker import MAX_STATE_TAGS, STATE_TAG, TAG_VALUE_MAX

    target = _target()
    target.deploy_initial("1")
    # 400 measurements with distinct messages: several KB of JSON even compressed
    many = tuple(Measurement("error_rate", i // 100, i / 1000, 0.0, "successful", 1.7e9 + i,
                             f"sample {i} {os.urandom(8).hex()}") for i in range(400))
    big = _state(step=3, weight=100, measurements=many)
    target.save_state(big)
    arn = aws["sagemaker"].describe_endpoint(EndpointName="contract-ep")["EndpointArn"]
    tags = {t["Key"]: t["Value"] for t in aws["sagemaker"].list_tags(ResourceArn=arn, MaxResults=100)["Tags"]}
    pieces = int(tags[f"{STATE_TAG}:n"])
    assert 1 < pieces <= MAX_STATE_TAGS and all(len(v) <= TAG_VALUE_MAX for v in tags.values())
    loaded = target.load_state()
    assert loaded.weight == 100 and loaded.step == 3
    # what did not fit was the oldest finished steps' measurements; the current step's are all there
    assert [m for m in loaded.measurements if m.step == 3] == [m for m in many if m.step == 3]
    small = _state(weight=25, step=0)
    target.save_state(small)
    assert target.load_state() == small
    keys = {t["Key"] for page in aws["sagemaker"].get_paginator("list_tags").paginate(ResourceArn=arn)
            for t in page["Tags"]}
    now = int(tags_now(aws, arn)[f"{STATE_TAG}:n"])
    assert now < pieces  # the stale pieces of the bigger state were deleted
    assert {k for k in keys if k.startswith(f"{STATE_TAG}:")} == {f"{STATE_TAG}:n"} | {
        f"{STATE_TAG}:{i}" for i in range(now)}
    target.cleanup()


def test_bad_config_names_the_field() -> None:
    from airflow_mlops.core.errors import SpecError
    from airflow_mlops.rollout.targets import make_target

    with pytest.raises(SpecError, match=r"target\.image"):
        make_target({"kind": "sagemaker", "name": "ep", "image": "", "execution_role_arn": ROLE})
    with pytest.raises(SpecError, match=r"target\.tracking_uri"):
        make_target({"kind": "sagemaker", "name": "ep", "image": IMAGE, "execution_role_arn": ROLE})
    with pytest.raises(SpecError, match=r"target\.instance_count"):
        make_target({"kind": "sagemaker", "name": "ep", "image": IMAGE, "execution_role_arn": ROLE,
                     "tracking_uri": "http://mlflow", "instance_count": 0})
    with pytest.raises(SpecError, match=r"target\.data_capture_uri"):
        make_target({"kind": "sagemaker", "name": "ep", "image": IMAGE, "execution_role_arn": ROLE,
                     "tracking_uri": "http://mlflow", "data_capture_uri": "/tmp/capture"})
    with pytest.raises(SpecError, match=r"target\.name"):
        make_target({"kind": "sagemaker", "name": "x" * 60, "image": IMAGE, "execution_role_arn": ROLE})


# -- the operator under dag.test() -----------------------------------------------------------------------


class VariantTraffic:
    """SageMaker's data plane for moto: per-variant metrics split by the endpoint's CurrentWeight, every 0.2 s.

    :param fail: 5xx rate per variant name (others 0).
    """

    def __init__(self, aws: dict[str, Any], endpoint: str, fail: dict[str, float], rate: float = 200.0) -> None:
        self.aws, self.endpoint, self.fail, self.rate = aws, endpoint, fail, rate
        self.served: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from botocore.exceptions import ClientError

        while not self.stop.wait(0.2):
            try:
                weights = _variants(self.aws, self.endpoint)
            except ClientError:
                continue
            total = sum(weights.values())
            data = []
            for variant, weight in weights.items():
                n = round(self.rate * 0.2 * weight / total) if total else 0
                if n <= 0:
                    continue
                self.served[variant] = self.served.get(variant, 0) + n
                errors = round(n * self.fail.get(variant, 0.0))
                dims = [{"Name": "EndpointName", "Value": self.endpoint}, {"Name": "VariantName", "Value": variant}]
                data += [
                    {"MetricName": "Invocations", "Dimensions": dims, "Value": float(n), "Unit": "None"},
                    {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Unit": "None",
                     "StatisticValues": {"SampleCount": n, "Sum": errors, "Minimum": 0.0,
                                         "Maximum": 1.0 if errors else 0.0}},
                    {"MetricName": "ModelLatency", "Dimensions": dims, "Unit": "Microseconds",
                     "StatisticValues": {"SampleCount": n, "Sum": 12000.0 * n, "Minimum": 8000.0,
                                         "Maximum": 20000.0}},
                ]
            if data:
                self.aws["cloudwatch"].put_metric_data(Namespace="AWS/SageMaker", MetricData=data)

    def __enter__(self) -> VariantTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def registry(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Three versions of one model in a real MLflow registry (SQLite); v1 is the champion."""
    import mlflow

    (mlops_home / "mlflow").mkdir(parents=True)
    uri = f"sqlite:///{mlops_home}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL)
    versions = [str(client.create_model_version(MODEL, f"s3://models/{MODEL}/{i}").version) for i in range(3)]
    client.set_registered_model_alias(MODEL, "champion", versions[0])
    yield {"uri": uri, "stable": versions[0], "good": versions[1], "bad": versions[2]}


@pytest.fixture
def endpoint(aws: dict[str, Any], registry: dict[str, str]) -> Iterator[Any]:
    """The DAG's endpoint serving the stable version at 100%; deleted afterwards."""
    from airflow_mlops.rollout.targets import make_target

    dag = load_dag("rollout_sagemaker_canary")
    config = {k: v for k, v in dag.get_task("canary").target.items() if "{{" not in str(v)}
    target = make_target({**config, "model": MODEL, "tracking_uri": "http://mlflow.internal:5000"})
    target.deploy_initial(registry["stable"])
    yield target
    target.cleanup()


def _run(candidate: str) -> Any:
    dag = load_dag("rollout_sagemaker_canary")
    when = dt.datetime.now(dt.timezone.utc)
    return dag.test(run_conf={"model": MODEL, "candidate": candidate}, logical_date=when, run_after=when)


def _xcom(dr: Any, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id="canary",
                                                 key=key).one_or_none()
        return None if row is None else (json.loads(row.value) if isinstance(row.value, str) else row.value)


@pytest.mark.slow
def test_good_canary_on_sagemaker_reaches_100(aws: dict[str, Any], registry: dict[str, str], endpoint: Any,
                                              trigger_runs: list[dict[str, Any]]) -> None:
    import mlflow

    good, stable = registry["good"], registry["stable"]
    with VariantTraffic(aws, endpoint.name, fail={}) as traffic:
        dr = _run(good)
    assert dr.state == "success"
    record = _xcom(dr)
    assert record["outcome"] == "promoted"
    assert [h["weight"] for h in record["history"]] == [25, 50, 100, 100]
    assert _variants(aws, endpoint.name) == {f"v{good}": 1.0} and endpoint.serving_version() == good
    for step in range(3):  # CloudWatch answered at every step, for the candidate and the stable baseline
        taken = [m for m in record["measurements"] if m["step"] == step and m["metric"] == "error_rate"]
        assert len(taken) >= 2 and taken[-1]["outcome"] == "successful" and taken[-1]["value"] == 0.0
    latency = [m for m in record["measurements"] if m["metric"] == "latency_us" and m["value"] is not None]
    assert latency and all(m["value"] == pytest.approx(12000.0) for m in latency)
    assert traffic.served[f"v{good}"] > 0 and traffic.served[f"v{stable}"] > 0
    steps_at = [h["at"] for h in record["history"]]
    for begin, end in itertools.pairwise(steps_at[:3]):  # every pause was waited out in a trigger
        assert any(begin <= r["start"] and r["end"] <= end for r in trigger_runs if not r["wait_ready"])
    assert any(r["wait_ready"] for r in trigger_runs)  # the Updating endpoint was waited out deferred too
    client = mlflow.MlflowClient()
    assert client.get_model_version(MODEL, good).tags["mlops.rollout.outcome"] == "promoted"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == good


@pytest.mark.slow
def test_bad_canary_on_sagemaker_is_rolled_back(aws: dict[str, Any], registry: dict[str, str],
                                                endpoint: Any) -> None:
    import mlflow

    bad, stable = registry["bad"], registry["stable"]
    with VariantTraffic(aws, endpoint.name, fail={f"v{bad}": 0.3}) as traffic:
        dr = _run(bad)
        served_before = dict(traffic.served)
        time.sleep(0.6)  # traffic after the rollback: all of it goes to the stable variant
        late = {k: v - served_before.get(k, 0) for k, v in traffic.served.items()}
    assert dr.state == "failed"
    record = _xcom(dr, key="rollout")
    assert record["outcome"] == "aborted" and "error_rate" in record["reason"]
    assert max(h["weight"] for h in record["history"]) == 25  # never past the first step
    failed = [m for m in record["measurements"] if m["outcome"] == "failed"]
    assert failed and failed[0]["value"] == pytest.approx(0.3, abs=0.05) and failed[0]["baseline"] == 0.0
    assert _variants(aws, endpoint.name) == {f"v{stable}": 1.0} and endpoint.serving_version() == stable
    assert endpoint.read_state().weight == 0 and endpoint.read_state().phase == "aborted"
    assert late.get(f"v{stable}", 0) > 0 and not late.get(f"v{bad}")
    _wait_ready(endpoint, replace(endpoint.read_state(), candidate=stable))
    endpoint.prune()
    assert _models(aws) == {endpoint.model_name(stable)}
    client = mlflow.MlflowClient()
    assert client.get_model_version(MODEL, bad).tags["mlops.rollout.outcome"] == "aborted"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == stable


@pytest.fixture
def sagemaker_contract_config(aws: dict[str, Any]) -> dict[str, Any]:
    """The SageMaker target's config for the shared contract suite (tests/integration/test_rollout_targets.py)."""
    return {"kind": "sagemaker", "name": "contract-sm", "image": IMAGE, "execution_role_arn": ROLE,
            "model": MODEL, "tracking_uri": "http://mlflow.internal:5000", "poll_s": 0.05}


KILL_SCRIPT = """
import datetime as dt, sys
from tests.dagfiles import load_dag
when = dt.datetime.fromisoformat(sys.argv[2])
load_dag("rollout_sagemaker_canary").test(run_conf={"model": "rollout_sm", "candidate": sys.argv[1]},
                                         logical_date=when, run_after=when)
"""


@pytest.mark.slow
def test_worker_killed_mid_rollout_then_retried_converges(aws: dict[str, Any], registry: dict[str, str],
                                                          endpoint: Any) -> None:
    """The first try runs in a child process (same Airflow DB, same moto server over HTTP) and is SIGKILLed at the
    second step; the retry (same run, same owner) reads the endpoint's tags and finishes the rollout."""
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    good, stable = registry["good"], registry["stable"]
    when = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    with VariantTraffic(aws, endpoint.name, fail={}):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, good, when.isoformat()], cwd=root,
                                env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                state = endpoint.load_state()
                if state is not None and state.step >= 1:
                    break
                assert proc.poll() is None, "the first try ended before reaching step 2"
                assert time.monotonic() < deadline, "the first try never reached step 2"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # the worker dies: no on_kill, no cleanup
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        interrupted = endpoint.read_state()
        assert interrupted.phase == "progressing" and interrupted.split  # traffic split, owner in the tags
        assert set(_variants(aws, endpoint.name)) == {f"v{stable}", f"v{good}"}
        dr = load_dag("rollout_sagemaker_canary").test(run_conf={"model": MODEL, "candidate": good},
                                                       logical_date=when, run_after=when)
    assert dr.state == "success"
    record = _xcom(dr)
    assert record["outcome"] == "promoted" and endpoint.serving_version() == good
    assert _variants(aws, endpoint.name) == {f"v{good}": 1.0}
    # resumed where it was: step 0 was entered once, not restarted
    assert [h["step"] for h in record["history"] if h["action"] == "SetWeight"].count(0) == 1
