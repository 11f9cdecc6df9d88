"""Data landing: S3 ``ObjectCreated`` notifications read from SQS, as one trigger event per landed data file.

The trigger is an Asset watcher's (``BaseEventTrigger``): it runs in the triggerer for as long as the watched asset
is scheduled on by an active DAG, and every event it yields becomes an Asset event. Airflow stores the event's
payload under the asset event's ``extra["payload"]`` (``Trigger.submit_event`` in ``airflow/models/trigger.py``),
which :func:`airflow_mlops.assets.training_data_uri` reads.

Polling is the amazon provider's: each poll is ``SqsSensorTrigger.poke`` (receive, then delete what was received).
The provider drives it with an aiobotocore client, which cannot be installed beside the botocore our stack pins
(no aiobotocore release accepts botocore 1.44.8); here the same ``poke`` gets the provider hook's boto3 client with
each call run in a worker thread, so the triggerer's event loop never blocks.

Nothing here imports boto3 or the amazon provider at module level: DAG files build this trigger at parse time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

#: What the training pipeline can read (its ``dataset_uri`` param accepts the same formats).
DEFAULT_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
#: Back-off after a failed poll, doubling up to the cap: the watcher outlives outages instead of dying.
ERROR_BACKOFF = (1.0, 300.0)
_SQS_HOST = re.compile(r"^https://(?:sqs[.-](?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?/")


@dataclass(frozen=True)
class LandedObject:
    """One object an S3 ``ObjectCreated`` notification announced (key decoded)."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    event_name: str
    event_time: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def payload(self) -> dict[str, Any]:
        """The trigger event's payload (JSON values only: the triggerer persists it)."""
        return {"uri": self.uri, "bucket": self.bucket, "key": self.key, "size": self.size, "etag": self.etag,
                "event_name": self.event_name, "event_time": self.event_time}


def parse_notification(body: str) -> list[LandedObject]:
    """The objects an SQS message body from S3 announces: ``ObjectCreated`` records only.

    Reads S3's own message (``{"Records": [...]}``), the same wrapped in an SNS envelope (SNS -> SQS without raw
    delivery). The ``s3:TestEvent`` S3 sends when notifications are configured, other event types and bodies that
    are not S3 notifications give no objects. Keys arrive URL-encoded (``+`` for spaces); they are decoded.
    """
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return []
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_notification(doc["Message"])
    if not isinstance(doc, dict) or not isinstance(doc.get("Records"), list):
        return []  # s3:TestEvent ({"Service": "Amazon S3", "Event": "s3:TestEvent", ...}) or not from S3
    found = []
    for record in doc["Records"]:
        if not isinstance(record, dict):
            continue
        name = str(record.get("eventName") or "")
        s3 = record.get("s3") or {}
        bucket, obj = (s3.get("bucket") or {}).get("name"), s3.get("object") or {}
        if not name.startswith("ObjectCreated:") or not bucket or not obj.get("key"):
            continue
        size = obj.get("size")
        found.append(LandedObject(bucket=str(bucket), key=unquote_plus(str(obj["key"])),
                                  size=int(size) if isinstance(size, int | float) else None,
                                  etag=obj.get("eTag") or None, event_name=name,
                                  event_time=record.get("eventTime")))
    return found


def region_of(queue_url: str) -> str | None:
    """The region an AWS SQS queue URL names (``https://sqs.eu-west-1.amazonaws.com/...``); None for others."""
    match = _SQS_HOST.match(queue_url)
    return (match.group("a") or match.group("b")) if match else None


class _ThreadedSqsClient:
    """The two awaitable SQS calls ``SqsSensorTrigger.poke`` makes, on a boto3 client, each in a worker thread
    (a long poll holds its thread up to ``WaitTimeSeconds``; the event loop stays free)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def receive_message(self, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._client.receive_message, **kwargs)

    async def delete_message_batch(self, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._client.delete_message_batch, **kwargs)


class S3DataLandingTrigger(BaseEventTrigger):
    """Yields ``{"uri": "s3://bucket/key", "bucket", "key", "size", "etag", "event_name", "event_time"}`` for each
    data file S3 announces on an SQS queue, forever (an Asset watcher's trigger).

    Every message received is deleted from the queue, matching or not (a test event or a marker file would
    otherwise come back after its visibility timeout). Delivery is at most once: a message is deleted before its
    event is persisted, as the provider's SQS trigger does, so a triggerer killed in between loses that event.

    :param sqs_queue: the queue URL.
    :param aws_conn_id: AWS connection (credentials, region, ``endpoint_url``).
    :param region_name: region; default: the one the queue URL names, else the connection's.
    :param bucket: only objects of this bucket (empty: any bucket the queue hears from).
    :param prefix: only keys under this prefix, e.g. ``landing/``.
    :param suffixes: only keys ending with one of these (case-insensitive); a ``_SUCCESS`` marker starts nothing.
    :param max_messages: messages per receive (1-10).
    :param wait_time_seconds: SQS long-poll wait (0-20).
    :param poll_interval: seconds to sleep after an empty receive (long polling already waits).
    """

    def __init__(self, sqs_queue: str, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 bucket: str = "", prefix: str = "", suffixes: Iterable[str] = DEFAULT_SUFFIXES,
                 max_messages: int = 10, wait_time_seconds: int = 20, poll_interval: float = 0.0) -> None:
        super().__init__()
        if not sqs_queue.startswith(("https://", "http://")):
            raise ValueError(f"sqs_queue: a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), "
                             f"got {sqs_queue!r}")
        if not 1 <= max_messages <= 10:
            raise ValueError(f"max_messages: 1 to 10 (an SQS limit), got {max_messages!r}")
        if not 0 <= wait_time_seconds <= 20:
            raise ValueError(f"wait_time_seconds: 0 to 20 (an SQS limit), got {wait_time_seconds!r}")
        suffixes = [suffixes] if isinstance(suffixes, str) else list(suffixes)
        if not suffixes or not all(isinstance(s, str) and s for s in suffixes):
            raise ValueError(f"suffixes: one or more non-empty file name endings, got {suffixes!r}")
        self.sqs_queue = sqs_queue
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name or region_of(sqs_queue)
        self.bucket = bucket
        self.prefix = prefix
        self.suffixes = [s.lower() for s in suffixes]
        self.max_messages = max_messages
        self.wait_time_seconds = wait_time_seconds
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"sqs_queue": self.sqs_queue, "aws_conn_id": self.aws_conn_id, "region_name": self.region_name,
                 "bucket": self.bucket, "prefix": self.prefix, "suffixes": list(self.suffixes),
                 "max_messages": self.max_messages, "wait_time_seconds": self.wait_time_seconds,
                 "poll_interval": self.poll_interval})

    def wanted(self, obj: LandedObject) -> bool:
        """Whether an announced object is training data by this trigger's bucket, prefix and suffix filters."""
        return ((not self.bucket or obj.bucket == self.bucket) and obj.key.startswith(self.prefix)
                and obj.key.lower().endswith(tuple(self.suffixes)))

    def landed(self, messages: Iterable[Mapping[str, Any]]) -> list[LandedObject]:
        """The wanted objects of received SQS messages, in message order; logs what it skips."""
        found = []
        for message in messages:
            objects = parse_notification(message.get("Body", ""))
            if not objects:
                self.log.info("Skipped SQS message %s: no ObjectCreated record (S3 test event or other)",
                              message.get("MessageId"))
            for obj in objects:
                if self.wanted(obj):
                    found.append(obj)
                else:
                    self.log.info("Skipped %s: not under prefix %r with a suffix in %s", obj.uri, self.prefix,
                                  self.suffixes)
        return found

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
        from asgiref.sync import sync_to_async

        sqs = SqsSensorTrigger(sqs_queue=self.sqs_queue, aws_conn_id=self.aws_conn_id, region_name=self.region_name,
                               max_messages=self.max_messages, num_batches=1,
                               wait_time_seconds=self.wait_time_seconds, delete_message_on_reception=True)
        self.log.info("Watching SQS queue %s for data under s3://%s/%s ending with %s", self.sqs_queue,
                      self.bucket or "*", self.prefix, self.suffixes)
        client: _ThreadedSqsClient | None = None
        backoff = ERROR_BACKOFF[0]
        while True:
            try:
                if client is None:
                    # The connection lookup goes through the triggerer's comms: as the provider's
                    # get_async_conn does, resolve it with sync_to_async.
                    client = _ThreadedSqsClient(await sync_to_async(sqs.hook.get_conn)())
                messages = await sqs.poke(client=client)
            except Exception as err:
                self.log.warning("Polling %s failed (%s: %s); next try in %.0f s", self.sqs_queue,
                                 type(err).__name__, err, backoff)
                client = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, ERROR_BACKOFF[1])
                continue
            backoff = ERROR_BACKOFF[0]
            for obj in self.landed(messages):
                self.log.info("Data landed: %s (%s bytes)", obj.uri, obj.size)
                yield TriggerEvent(obj.payload())
            if not messages and self.poll_interval:
                await asyncio.sleep(self.poll_interval)
