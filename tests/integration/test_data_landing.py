"""Training starts when data lands: S3 ObjectCreated -> SQS -> the Asset watcher's trigger -> mlops_training_data.

Real boto3 against a moto server over HTTP: moto's S3 sends the bucket's notifications to its SQS queue as S3 does
(the ``s3:TestEvent`` on configuration, URL-encoded keys), and the trigger's real ``run()`` polls that queue through
the amazon provider's hook and SQS trigger code, with the connection from an ``AIRFLOW_CONN_...`` variable. The
path from a trigger event to the asset event the pipeline reads runs Airflow's own code (DAG sync, watcher
registration, ``Trigger.submit_event``) on a fresh SQLite metadata DB in a child process. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from airflow_mlops.assets import TRAINING_DATA, TRAINING_DATA_WATCHER, landing_watch_settings, training_data_watchers
from airflow_mlops.triggers.data_landing import S3DataLandingTrigger, parse_notification, region_of
from tests.aws import use_moto

ROOT = Path(__file__).resolve().parents[2]
CONN_ID = "mlops_landing_aws"
PARQUET_KEY = "landing/churn 2026-11 été+q.parquet"  # spaces, unicode and a literal '+': URL-encoded by S3


@dataclass
class Landing:
    s3: Any
    sqs: Any
    bucket: str
    queue_url: str

    def pending(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def landing(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Landing:
    """A bucket whose ObjectCreated notifications go to an SQS queue (as docs/data-landing.md sets up), and the
    Airflow connection the trigger uses, pointed at moto."""
    import boto3

    use_moto(monkeypatch, moto_url, CONN_ID)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_url)
    suffix = uuid.uuid4().hex[:8]
    bucket = f"landing-{suffix}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"training-data-{suffix}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"Id": "training-data", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    return Landing(s3=s3, sqs=sqs, bucket=bucket, queue_url=queue_url)


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"spend": [1.0, 2.0, 3.0], "target": [0, 1, 0]}), buf)
    return buf.getvalue()


def _land(landing: Landing, everything: bool = False) -> dict[str, bytes]:
    """Uploads two data files and three that must start nothing; returns the data files (or all) by key."""
    data = {PARQUET_KEY: _parquet(), "landing/2026/12/extra.csv": b"spend,target\n1.0,0\n2.0,1\n"}
    other = {"landing/_SUCCESS": b"", "landing/readme.txt": b"hi", "elsewhere/other.parquet": _parquet()}
    for key, body in {**data, **other}.items():
        landing.s3.put_object(Bucket=landing.bucket, Key=key, Body=body)
    return {**data, **other} if everything else data


def _receive_all(landing: Landing) -> list[dict[str, Any]]:
    """Every message in the queue, left in it (visibility timeout 0)."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(5):
        for m in landing.sqs.receive_message(QueueUrl=landing.queue_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=0).get("Messages", []):
            seen[m["MessageId"]] = m
    return list(seen.values())


def test_the_bucket_notifies_the_queue_as_s3_does(landing: Landing) -> None:
    """The premise of the trigger: the test event first, then one ObjectCreated record per upload, keys encoded."""
    uploaded = _land(landing, everything=True)
    bodies = [json.loads(m["Body"]) for m in _receive_all(landing)]
    assert [b.get("Event") for b in bodies if "Event" in b] == ["s3:TestEvent"]
    records = [b["Records"][0] for b in bodies if "Records" in b]
    assert all(r["eventName"] == "ObjectCreated:Put" for r in records)
    keys = {r["s3"]["object"]["key"] for r in records}
    # Form-encoded as S3 does (space '+', '+' '%2B', UTF-8 escapes); moto also escapes '/', which S3 keeps.
    assert any("churn+2026-11+%C3%A9t%C3%A9%2Bq.parquet" in k for k in keys), keys
    assert {unquote_plus(k) for k in keys} == set(uploaded)


def _serialized_round_trip(trigger: S3DataLandingTrigger) -> S3DataLandingTrigger:
    """The trigger as the triggerer builds it: from its classpath and JSON-stored kwargs."""
    from airflow.sdk.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    rebuilt = import_string(classpath)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    return rebuilt


async def _run(trigger: S3DataLandingTrigger, landing: Landing, want: int, timeout: float = 15.0) -> list[dict]:
    """Runs the trigger until it fired ``want`` events and the queue is empty, then one more poll; cancels it."""
    events: list[dict] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    task = asyncio.create_task(consume())
    try:
        async def settled() -> None:
            while len(events) < want or await asyncio.to_thread(landing.pending):
                await asyncio.sleep(0.1)
            await asyncio.sleep(trigger.wait_time_seconds + 0.5)  # an extra event would show up by now

        await asyncio.wait_for(settled(), timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return events


def test_each_landed_data_file_is_one_event_with_its_s3_uri(landing: Landing) -> None:
    data = _land(landing)
    landing.sqs.send_message(QueueUrl=landing.queue_url, MessageBody="not an S3 notification")
    trigger = _serialized_round_trip(S3DataLandingTrigger(
        sqs_queue=landing.queue_url, aws_conn_id=CONN_ID, bucket=landing.bucket, prefix="landing/",
        wait_time_seconds=1))
    events = asyncio.run(_run(trigger, landing, want=len(data)))

    assert sorted(e["uri"] for e in events) == sorted(f"s3://{landing.bucket}/{k}" for k in data), \
        "one event per data file; the test event, the marker, the .txt, the other prefix and junk start nothing"
    for event in events:
        body = data[event["key"]]
        assert event["bucket"] == landing.bucket and event["size"] == len(body)
        assert event["etag"] == hashlib.md5(body).hexdigest() and event["event_name"] == "ObjectCreated:Put"
        got = landing.s3.get_object(Bucket=event["bucket"], Key=event["key"])["Body"].read()
        assert got == body, "the decoded key names the uploaded object"
    assert json.loads(json.dumps(events)) == events, "payloads are plain JSON (the triggerer persists them)"
    assert landing.pending() == 0, "every message consumed was deleted, skipped ones too"


def test_a_failing_poll_is_retried_not_fatal(landing: Landing, capfd: pytest.CaptureFixture[str]) -> None:
    """A queue that does not exist (or a denied receive) logs and backs off; the watcher keeps running."""
    gone = landing.queue_url + "-missing"
    trigger = S3DataLandingTrigger(sqs_queue=gone, aws_conn_id=CONN_ID, wait_time_seconds=0)

    async def run_briefly() -> bool:
        task = asyncio.create_task(anext(aiter(trigger.run())))
        await asyncio.sleep(1.5)
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alive

    assert asyncio.run(run_briefly()), "the trigger must outlive a failed poll"
    logged = capfd.readouterr()
    assert f"Polling {gone} failed (QueueDoesNotExist" in logged.out + logged.err


def test_notification_parsing() -> None:
    record = {"eventName": "ObjectCreated:CompleteMultipartUpload", "eventTime": "2026-12-01T00:00:00.000Z",
              "s3": {"bucket": {"name": "b"}, "object": {"key": "a/x+y%C3%A9.parquet", "size": 7, "eTag": "e"}}}
    (obj,) = parse_notification(json.dumps({"Records": [record]}))
    assert obj.uri == "s3://b/a/x yé.parquet" and obj.size == 7 and obj.etag == "e"
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [record]})}
    assert [o.uri for o in parse_notification(json.dumps(sns))] == [obj.uri], "SNS -> SQS without raw delivery"
    removed = {**record, "eventName": "ObjectRemoved:Delete"}
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    for body in (json.dumps({"Records": [removed]}), json.dumps(test_event), "junk", "[]", "{}"):
        assert parse_notification(body) == [], body
    trigger = S3DataLandingTrigger(sqs_queue="https://sqs.eu-west-1.amazonaws.com/1/q", prefix="a/")
    assert trigger.wanted(obj) and trigger.region_name == "eu-west-1"
    assert not trigger.wanted(parse_notification(json.dumps({"Records": [
        {**record, "s3": {"bucket": {"name": "b"}, "object": {"key": "a/X.PARQUET.tmp"}}}]}))[0])
    assert region_of("https://us-east-2.queue.amazonaws.com/1/q") == "us-east-2"
    assert region_of("http://127.0.0.1:5000/1/q") is None
    for bad in ({"sqs_queue": "my-queue"}, {"sqs_queue": "https://x/q", "max_messages": 11},
                {"sqs_queue": "https://x/q", "suffixes": []}):
        with pytest.raises(ValueError, match=next(iter(bad)) if len(bad) == 1 else "max_messages|suffixes"):
            S3DataLandingTrigger(**bad)


def test_the_variable_decides_whether_the_asset_has_a_watcher() -> None:
    assert "AIRFLOW_VAR_MLOPS_TRAINING_DATA_QUEUE" not in os.environ
    assert TRAINING_DATA.watchers == [], "on a laptop (no Variable) the asset has no watcher"
    assert training_data_watchers(None) == [] and training_data_watchers("  ") == []
    assert training_data_watchers("off") == [] and training_data_watchers("None") == []
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-training-data"
    (watcher,) = training_data_watchers(url)
    assert watcher.name == TRAINING_DATA_WATCHER
    assert watcher.trigger.serialize()[1]["aws_conn_id"] == "aws_default"
    spec = json.dumps({"queue_url": url, "aws_conn_id": "aws_landing", "prefix": "landing/", "suffixes": [".csv"]})
    (watcher,) = training_data_watchers(spec)
    kwargs = watcher.trigger.serialize()[1]
    assert (kwargs["aws_conn_id"], kwargs["prefix"], kwargs["suffixes"]) == ("aws_landing", "landing/", [".csv"])
    for bad, why in (("{not json", "a queue URL or a JSON object"), ('{"queue": "x"}', "needs queue_url"),
                     ("sqs-queue-name", "a queue URL"), (json.dumps({"queue_url": url, "suffixes": []}), "suffixes")):
        with pytest.raises(ValueError, match=f"mlops_training_data_queue: .*{why}"):
            training_data_watchers(bad)
    assert landing_watch_settings(url) == {"sqs_queue": url, "aws_conn_id": "aws_default"}


AIRFLOW_PATH = """
import json, sys
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "aiobotocore", "pandas"))
dag = bag.dags["mlops_training_pipeline"]
watchers = [w for a in dag.timetable.asset_condition.objects if getattr(a, "name", "") == "mlops_training_data"
            for w in a.watchers]

from sqlalchemy import select, update
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.dag import DagModel
from airflow.models.trigger import Trigger
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
from airflow.triggers.base import TriggerEvent
from airflow.utils.session import create_session

DagBundlesManager().sync_bundles_to_db()
sync_bag_to_db(bag, "dags-folder", None)
with create_session() as s:  # watchers only run for assets an active (unpaused) DAG is scheduled on
    s.execute(update(DagModel).where(DagModel.dag_id == dag.dag_id).values(is_paused=False))
sync_bag_to_db(bag, "dags-folder", None)
with create_session() as s:
    asset = s.scalar(select(AssetModel).where(AssetModel.name == "mlops_training_data"))
    registered = [(w.name, w.trigger.classpath, w.trigger.kwargs) for w in asset.watchers]
    trigger_id, asset_id = asset.watchers[0].trigger_id, asset.id
payload = json.loads(sys.argv[2])
Trigger.submit_event(trigger_id=trigger_id, event=TriggerEvent(payload))  # what the triggerer does with an event
with create_session() as s:
    event = s.scalar(select(AssetEvent).where(AssetEvent.asset_id == asset_id))
    queued = s.scalars(select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.asset_id == asset_id)).all()
    ref = AssetEventDagRunReferenceResult(
        asset={"name": asset.name, "uri": asset.uri, "extra": {}}, extra=event.extra, source_task_id=None,
        source_dag_id=None, source_run_id=None, source_map_index=None, source_aliases=[], timestamp=event.timestamp)
from airflow_mlops.assets import training_data_uri
print(json.dumps({"heavy": heavy, "n_watchers": len(watchers or []), "registered": registered,
                  "extra": event.extra, "queued": list(queued),
                  "uri": training_data_uri(TriggeringAssetEventsAccessor.build([ref]))}, default=str))
"""


def test_a_watcher_event_reaches_the_pipeline_as_its_training_data(tmp_path: Path) -> None:
    """With the Variable set, the pipeline DAG parses with the watcher (nothing heavy imported), Airflow registers
    the watcher's trigger, and an event from it becomes a mlops_training_data asset event whose URI the pipeline's
    ``training_data_uri`` macro returns, and queues a pipeline run. Fresh metadata DB in a child process."""
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/mlops-training-data"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_VAR_MLOPS_TRAINING_DATA_QUEUE": json.dumps({"queue_url": url, "prefix": "landing/"})}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    uri = f"s3://data-bucket/{PARQUET_KEY}"
    payload = {"uri": uri, "bucket": "data-bucket", "key": PARQUET_KEY, "size": 3, "etag": "e",
               "event_name": "ObjectCreated:Put", "event_time": None}
    proc = subprocess.run([sys.executable, "-c", AIRFLOW_PATH, str(ROOT / "dags" / "mlops_training_pipeline.py"),
                           json.dumps(payload)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], "parsing with the watcher imports nothing heavy"
    assert report["n_watchers"] == 1
    ((name, classpath, kwargs),) = report["registered"]
    assert (name, classpath) == (TRAINING_DATA_WATCHER, "airflow_mlops.triggers.data_landing.S3DataLandingTrigger")
    assert kwargs["sqs_queue"] == url and kwargs["prefix"] == "landing/" and kwargs["region_name"] == "eu-west-1"
    assert report["extra"] == {"from_trigger": True, "payload": payload}, "Trigger.submit_event's extra shape"
    assert report["queued"] == ["mlops_training_pipeline"]
    assert report["uri"] == uri
