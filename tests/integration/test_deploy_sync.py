"""Incremental S3 sync of the DAGs folder against a real moto S3 server (HTTP) with a versioned bucket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.sync import MANIFEST_NAME, normalize_prefix, sync_dags

BUCKET = "mwaa-source"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real moto server on a free local port (boto3 talks HTTP to it)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client on a fresh versioned bucket, plus an object outside the DAGs prefix that must never change."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=BUCKET, Key="requirements.txt", Body=b"keep me\n")
    client.put_object(Bucket=BUCKET, Key="dags-old/x.py", Body=b"# a sibling prefix, not ours\n")
    yield client
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
    client.delete_bucket(Bucket=BUCKET)


class Calls:
    """Records S3 write calls in order, through botocore's event hooks on the real client."""

    def __init__(self, client: Any) -> None:
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        client.meta.events.register("provide-client-params.s3.PutObject", self._put)
        client.meta.events.register("provide-client-params.s3.DeleteObjects", self._delete)

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.log.append(("put", params["Key"]))

    def _delete(self, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.log.append(("delete", ""))

    def dag_puts(self) -> list[str]:
        return [k for op, k in self.log if op == "put" and not k.endswith(MANIFEST_NAME)]


def _outside(client: Any) -> list[tuple[str, str]]:
    """Every version of every key outside dags/: (key, version id)."""
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        out += [(v["Key"], v["VersionId"]) for v in page.get("Versions", []) if not v["Key"].startswith("dags/")]
    return sorted(out)


def _tree(root: Path, n: int) -> Path:
    dags = root / "dags"
    dags.mkdir(parents=True)
    for i in range(n):
        (dags / f"dag_{i:02d}.py").write_text(f"# dag {i}\n")
    (dags / "sql").mkdir()
    (dags / "sql" / "query.sql").write_text("select 1\n")
    return dags


def _quiet(line: str) -> None:
    pass


def _keys(client: Any) -> set[str]:
    resp = client.list_objects_v2(Bucket=BUCKET, Prefix="dags/")
    return {o["Key"] for o in resp.get("Contents", [])} - {"dags/" + MANIFEST_NAME}


def test_first_second_edit_remove(s3: Any, tmp_path: Path) -> None:
    dags = _tree(tmp_path, 5)
    outside = _outside(s3)
    calls = Calls(s3)

    first = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert len(first.uploaded) == 6 and len(first.plan.added) == 6
    assert _keys(s3) == {f"dags/dag_{i:02d}.py" for i in range(5)} | {"dags/sql/query.sql"}
    head = s3.head_object(Bucket=BUCKET, Key="dags/dag_00.py")
    assert len(head["Metadata"]["sha256"]) == 64  # the content hash travels as object metadata

    calls.log.clear()
    second = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert second.uploaded == () and second.deleted == () and calls.log == []  # not a single write

    # One edit: one upload, even though every file's mtime changed.
    for p in dags.glob("*.py"):
        p.touch()
    (dags / "dag_03.py").write_text("# dag 3, edited\n")
    calls.log.clear()
    third = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert third.plan.changed == ("dags/dag_03.py",) and third.uploaded == ("dags/dag_03.py",)
    assert calls.dag_puts() == ["dags/dag_03.py"]

    # A removed DAG (plus one added): deleted, and only after the upload.
    (dags / "dag_01.py").unlink()
    (dags / "dag_new.py").write_text("# new\n")
    calls.log.clear()
    fourth = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert fourth.deleted == ("dags/dag_01.py",)
    ops = [op for op, k in calls.log if not k.endswith(MANIFEST_NAME)]
    assert ops == ["put", "delete"]
    assert "dags/dag_01.py" not in _keys(s3) and "dags/dag_new.py" in _keys(s3)
    # Versioned bucket: the deleted DAG's content is still there to restore.
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="dags/dag_01.py")
    assert versions["Versions"] and versions["DeleteMarkers"]
    assert _outside(s3) == outside


def test_dry_run_prints_plan_and_writes_nothing(s3: Any, tmp_path: Path) -> None:
    dags = _tree(tmp_path, 2)
    sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    (dags / "dag_00.py").write_text("# changed\n")
    (dags / "dag_01.py").unlink()
    (dags / "dag_02.py").write_text("# added\n")
    lines: list[str] = []
    calls = Calls(s3)
    result = sync_dags(s3, BUCKET, "dags", dags, dry_run=True, log=lines.append)
    assert calls.log == []
    assert lines[0].startswith("sync plan for dags/: 1 added, 1 changed, 1 deleted")
    assert "  + dags/dag_02.py" in lines and "  ~ dags/dag_00.py" in lines and "  - dags/dag_01.py" in lines
    assert result.uploaded == () and "dags/dag_01.py" in _keys(s3)


def test_interrupted_sync_deletes_nothing_and_converges(s3: Any, tmp_path: Path) -> None:
    dags = _tree(tmp_path, 6)
    sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    for i in range(6):
        (dags / f"dag_{i:02d}.py").write_text(f"# dag {i} v2\n")
    (dags / "sql" / "query.sql").unlink()
    outside = _outside(s3)

    state = {"puts": 0}

    def fault(params: dict[str, Any], **_: Any) -> None:
        state["puts"] += 1
        if state["puts"] == 3:
            raise ConnectionError("injected network failure mid-upload")

    s3.meta.events.register("before-call.s3.PutObject", fault)
    with pytest.raises(DeployError, match="1 of 6 uploads failed; nothing was deleted"):
        sync_dags(s3, BUCKET, "dags", dags, workers=1, log=_quiet)
    s3.meta.events.unregister("before-call.s3.PutObject", fault)
    assert "dags/sql/query.sql" in _keys(s3)  # the stale object survived the failed run

    calls = Calls(s3)
    rerun = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert calls.dag_puts() == ["dags/dag_02.py"]  # only the one that failed
    assert rerun.deleted == ("dags/sql/query.sql",)
    for i in range(6):
        body = s3.get_object(Bucket=BUCKET, Key=f"dags/dag_{i:02d}.py")["Body"].read()
        assert body == f"# dag {i} v2\n".encode()
    assert sync_dags(s3, BUCKET, "dags", dags, log=_quiet).uploaded == ()
    assert _outside(s3) == outside


def test_object_changed_behind_our_back_is_detected(s3: Any, tmp_path: Path) -> None:
    """Someone overwrites a DAG in the console: its ETag no longer matches the manifest, so its metadata is read."""
    dags = _tree(tmp_path, 2)
    sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    s3.put_object(Bucket=BUCKET, Key="dags/dag_00.py", Body=b"# hand edit\n")
    result = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    assert result.uploaded == ("dags/dag_00.py",)
    assert s3.get_object(Bucket=BUCKET, Key="dags/dag_00.py")["Body"].read() == b"# dag 0\n"


@pytest.mark.parametrize("prefix", ["", "/", "  ", "../dags", "dags/../.."])
def test_prefix_must_be_a_folder(prefix: str) -> None:
    with pytest.raises(DeployError, match="prefix"):
        normalize_prefix(prefix)


def test_bucket_versioning_check(s3: Any) -> None:
    from airflow_mlops.deploy.validate import check_bucket_versioning

    assert check_bucket_versioning(s3, BUCKET) == []
    s3.create_bucket(Bucket="plain")
    try:
        assert check_bucket_versioning(s3, "plain") == [
            "bucket plain: versioning is never enabled; enable it (aws s3api put-bucket-versioning ...)"
        ]
    finally:
        s3.delete_bucket(Bucket="plain")
