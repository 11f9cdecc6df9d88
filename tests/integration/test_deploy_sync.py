"""Incremental S3 sync of the DAGs folder against a real moto S3 server (HTTP) with a versioned bucket.

moto enforces S3's conditional writes (If-Match / If-None-Match -> 412 PreconditionFailed), so the claim and the
concurrent-sync tests exercise the same protocol S3 does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.sync import MANIFEST_NAME, apply_sync, normalize_prefix, plan_sync, read_manifest, sync_dags

BUCKET = "mwaa-source"


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client on a fresh versioned bucket, plus an object outside the DAGs prefix that must never change."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
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
    assert "  + dags/dag_02.py  (support file, before DAG files)" in lines
    assert "  ~ dags/dag_00.py  (support file, before DAG files)" in lines
    assert "  - dags/dag_01.py  (after every upload)" in lines
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
        if params["Key"].endswith(MANIFEST_NAME):
            return
        state["puts"] += 1
        if state["puts"] == 3:
            raise ConnectionError("injected network failure mid-upload")

    s3.meta.events.register("provide-client-params.s3.PutObject", fault)
    with pytest.raises(DeployError, match="1 of 6 uploads failed; nothing was deleted"):
        sync_dags(s3, BUCKET, "dags", dags, workers=1, log=_quiet)
    s3.meta.events.unregister("provide-client-params.s3.PutObject", fault)
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


def _dag(name: str, helper: str) -> str:
    return f"from airflow.sdk import DAG\nfrom {helper} import X\nwith DAG(dag_id={name!r}):\n    pass\n"


def test_support_files_go_before_dag_files_and_deletions_last(s3: Any, tmp_path: Path) -> None:
    """A new DAG never lands before the helper it imports; a helper it stops using goes only after it changed."""
    dags = tmp_path / "dags"
    (dags / "lib").mkdir(parents=True)
    (dags / "lib" / "old_helper.py").write_text("X = 1\n")
    (dags / "a.py").write_text(_dag("a", "lib.old_helper"))
    sync_dags(s3, BUCKET, "dags", dags, log=_quiet)

    (dags / "lib" / "new_helper.py").write_text("X = 2\n")
    (dags / "lib" / "old_helper.py").unlink()
    (dags / "a.py").write_text(_dag("a", "lib.new_helper"))
    (dags / "b.py").write_text(_dag("b", "lib.new_helper"))
    (dags / ".airflowignore").write_text("lib/\n")
    (dags / "config.yaml").write_text("models: []\n")
    calls = Calls(s3)
    result = sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    puts = calls.dag_puts()
    support = {"dags/lib/new_helper.py", "dags/.airflowignore", "dags/config.yaml"}
    assert set(puts[:3]) == support and set(puts[3:]) == {"dags/a.py", "dags/b.py"}
    ops = [op for op, k in calls.log if not k.endswith(MANIFEST_NAME)]
    assert ops[-1] == "delete" and "delete" not in ops[:-1]
    assert result.deleted == ("dags/lib/old_helper.py",)
    assert calls.log[0] == ("put", "dags/" + MANIFEST_NAME) and calls.log[-1] == ("put", "dags/" + MANIFEST_NAME)
    assert result.bytes_uploaded == sum((dags / k[5:]).stat().st_size for k in result.uploaded)


def test_a_failed_helper_upload_holds_back_every_dag_file(s3: Any, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "helper.py").write_text("X = 1\n")
    (dags / "a.py").write_text(_dag("a", "helper"))

    def fault(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == "dags/helper.py":
            raise ConnectionError("injected")

    s3.meta.events.register("provide-client-params.s3.PutObject", fault)
    with pytest.raises(DeployError, match="1 of 2 uploads failed; nothing was deleted and 1 DAG file"):
        sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    s3.meta.events.unregister("provide-client-params.s3.PutObject", fault)
    assert _keys(s3) == set()  # the DAG that imports the helper never shipped without it
    assert read_manifest(s3, BUCKET, "dags/" + MANIFEST_NAME).state == "complete"  # the claim was released
    assert sync_dags(s3, BUCKET, "dags", dags, log=_quiet).uploaded == ("dags/helper.py", "dags/a.py")


def test_a_second_sync_at_the_same_time_fails_clearly_and_writes_nothing(s3: Any, tmp_path: Path) -> None:
    """Two deploys plan against the same manifest: the first claims it, the second's claim gets 412 and stops."""
    first, second = _tree(tmp_path / "one", 3), _tree(tmp_path / "two", 3)
    (second / "dag_00.py").write_text("# the other deploy's version\n")
    plan_one = plan_sync(s3, BUCKET, "dags", first)
    plan_two = plan_sync(s3, BUCKET, "dags", second)
    apply_sync(s3, BUCKET, plan_one, owner="deploy one", log=_quiet)
    calls = Calls(s3)
    with pytest.raises(DeployError, match=r"was changed by deploy one .* two syncs must not interleave"):
        apply_sync(s3, BUCKET, plan_two, owner="deploy two", log=_quiet)
    assert calls.dag_puts() == []
    assert s3.get_object(Bucket=BUCKET, Key="dags/dag_00.py")["Body"].read() == b"# dag 0\n"


def test_a_sync_in_progress_is_respected_and_a_dead_one_can_be_taken_over(s3: Any, tmp_path: Path) -> None:
    dags = _tree(tmp_path, 2)
    # A sync that claimed the prefix and then died (killed runner): its claim is the manifest in-progress.
    plan = plan_sync(s3, BUCKET, "dags", dags)
    s3.put_object(Bucket=BUCKET, Key="dags/" + MANIFEST_NAME, IfNoneMatch="*", Body=(
        b'{"format": 2, "state": "in-progress", "owner": "run 41", "started_at": %d, "objects": {}}'
        % int(time.time())))
    with pytest.raises(DeployError, match=r"run 41 is syncing .* can be taken over with --take-over"):
        sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    with pytest.raises(DeployError, match="was changed by run 41"):  # a plan made before the claim
        apply_sync(s3, BUCKET, plan, owner="run 42", log=_quiet)
    plan = plan_sync(s3, BUCKET, "dags", dags)
    old = plan.manifest.started_at - 3600
    with pytest.raises(DeployError, match="probably died: re-run with --take-over"):
        apply_sync(s3, BUCKET, plan, owner="run 42", clock=lambda: old + 7200, log=_quiet)
    lines: list[str] = []
    result = apply_sync(s3, BUCKET, plan, owner="run 42", take_over=True, clock=lambda: plan.manifest.started_at
                        + 3600, log=lines.append)
    assert "taking over the claim of run 41" in lines[0] and len(result.uploaded) == 3
    manifest = read_manifest(s3, BUCKET, "dags/" + MANIFEST_NAME)
    assert manifest.state == "complete" and manifest.owner == "run 42"
    assert all(v[2] for v in manifest.objects.values())  # every object's VersionId: a DAGs snapshot


def test_an_object_rewritten_during_the_sync_fails_its_conditional_write(s3: Any, tmp_path: Path) -> None:
    dags = _tree(tmp_path, 2)
    sync_dags(s3, BUCKET, "dags", dags, log=_quiet)
    (dags / "dag_00.py").write_text("# ours\n")
    plan = plan_sync(s3, BUCKET, "dags", dags)
    s3.put_object(Bucket=BUCKET, Key="dags/dag_00.py", Body=b"# someone else, after we planned\n")
    with pytest.raises(DeployError, match="changed in the bucket since this sync planned"):
        apply_sync(s3, BUCKET, plan, log=_quiet)
    body = s3.get_object(Bucket=BUCKET, Key="dags/dag_00.py")["Body"].read()
    assert body == b"# someone else, after we planned\n"  # not silently overwritten
    assert sync_dags(s3, BUCKET, "dags", dags, log=_quiet).uploaded == ("dags/dag_00.py",)
