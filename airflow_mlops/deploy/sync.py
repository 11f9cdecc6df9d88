"""Incremental, content-addressed sync of the bundle's DAGs folder to the MWAA bucket's DAGs prefix.

Each uploaded object carries the sha256 of its content as metadata (``x-amz-meta-sha256``); a file is uploaded
when that hash differs, never because of an mtime. Reading metadata costs one HEAD per object, so a small
manifest inside the prefix caches ``key -> (ETag, sha256)``: a listed object whose ETag still matches the cached
one has not been rewritten since, so its cached hash stands; any other object is HEADed. Stale objects are
deleted only after every upload succeeded, and only under the prefix. The bucket should be versioned so a
deleted or overwritten DAG can be restored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import HASH_METADATA_KEY, DeployError
from airflow_mlops.deploy.bundle import sha256_file

MANIFEST_NAME = ".airflow-mlops-sync.json"
_SKIP_DIRS = {"__pycache__"}


def normalize_prefix(prefix: str) -> str:
    """``dags`` / ``/dags/`` -> ``dags/``; refuses the bucket root so a sync can never delete outside a folder.

    :param prefix: the DAGs prefix (MWAA's DagS3Path)
    """
    cleaned = prefix.strip().strip("/")
    if not cleaned or ".." in cleaned.split("/"):
        raise DeployError(f"prefix: {prefix!r} must name a folder in the bucket, e.g. 'dags'")
    return cleaned + "/"


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will do, by key.

    :param prefix: normalized prefix (ends with ``/``)
    :param added: keys not in the bucket yet
    :param changed: keys whose content hash differs
    :param unchanged: keys already up to date
    :param deleted: keys in the bucket with no local file
    :param local: local file and sha256 per key
    :param remote: (ETag, sha256) per key known after planning
    """

    prefix: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]
    local: dict[str, tuple[Path, str]] = field(default_factory=dict)
    remote: dict[str, tuple[str, str]] = field(default_factory=dict)
    heads: int = 0

    @property
    def uploads(self) -> tuple[str, ...]:
        """Keys to upload: added, then changed."""
        return self.added + self.changed

    def table(self) -> list[str]:
        """The plan as lines a person reads."""
        lines = [f"sync plan for {self.prefix}: {len(self.added)} added, {len(self.changed)} changed, "
                 f"{len(self.deleted)} deleted, {len(self.unchanged)} unchanged"]
        lines += [f"  + {k}" for k in self.added]
        lines += [f"  ~ {k}" for k in self.changed]
        lines += [f"  - {k}" for k in self.deleted]
        return lines


@dataclass(frozen=True)
class SyncResult:
    """What a sync did.

    :param plan: the plan it carried out
    :param uploaded: keys uploaded
    :param deleted: keys deleted
    :param seconds: wall time
    """

    plan: SyncPlan
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    seconds: float


def local_files(folder: Path, prefix: str) -> dict[str, tuple[Path, str]]:
    """Key -> (file, sha256) for every file under ``folder``.

    :param folder: the bundle's dags/ folder
    :param prefix: normalized prefix
    """
    if not folder.is_dir():
        raise DeployError(f"dags: {folder} is not a folder")
    out: dict[str, tuple[Path, str]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(p in _SKIP_DIRS for p in rel.parts) or path.suffix == ".pyc":
            continue
        if rel.as_posix() == MANIFEST_NAME:
            continue
        out[prefix + rel.as_posix()] = (path, sha256_file(path))
    return out


def _list_remote(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag of every object under the prefix."""
    listed: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            listed[obj["Key"]] = obj["ETag"]
    return listed


def _read_manifest(s3: Any, bucket: str, key: str) -> dict[str, list[str]]:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        data = json.loads(body)
        return {k: list(v) for k, v in data.get("objects", {}).items()}
    except ClientError:
        return {}
    except (ValueError, AttributeError, TypeError):
        # A corrupt manifest only costs HEADs: every object is checked against its own metadata.
        return {}


def plan_sync(s3: Any, bucket: str, prefix: str, folder: Path, *, workers: int = 8) -> SyncPlan:
    """Compare the local DAGs folder with the bucket by content hash.

    :param s3: boto3 S3 client
    :param bucket: MWAA source bucket
    :param prefix: DAGs prefix (MWAA's DagS3Path)
    :param folder: local folder to publish
    :param workers: parallel HEAD requests
    """
    prefix = normalize_prefix(prefix)
    local = local_files(folder, prefix)
    manifest_key = prefix + MANIFEST_NAME
    listed = _list_remote(s3, bucket, prefix)
    cached = _read_manifest(s3, bucket, manifest_key) if manifest_key in listed else {}
    listed.pop(manifest_key, None)

    remote: dict[str, tuple[str, str]] = {}
    to_head = []
    for key, etag in listed.items():
        hit = cached.get(key)
        if hit and len(hit) == 2 and hit[0] == etag:
            remote[key] = (etag, hit[1])
        elif key in local:
            to_head.append(key)  # stale keys need no hash: they are deleted whatever they hold

    def head(key: str) -> tuple[str, str, str]:
        meta = s3.head_object(Bucket=bucket, Key=key)
        return key, meta["ETag"], meta.get("Metadata", {}).get(HASH_METADATA_KEY, "")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, etag, digest in pool.map(head, to_head):
            remote[key] = (etag, digest)

    added = tuple(k for k in local if k not in listed)
    changed = tuple(k for k in local if k in listed and remote.get(k, ("", ""))[1] != local[k][1])
    unchanged = tuple(k for k in local if k in listed and k not in changed)
    deleted = tuple(sorted(k for k in listed if k not in local))
    return SyncPlan(prefix, added, changed, unchanged, deleted, local, remote, heads=len(to_head))


def apply_sync(
    s3: Any,
    bucket: str,
    plan: SyncPlan,
    *,
    workers: int = 8,
    log: Callable[[str], None] = print,
) -> SyncResult:
    """Upload new and changed files, then (only if all uploads succeeded) delete stale keys, then the manifest.

    :param s3: boto3 S3 client
    :param bucket: MWAA source bucket
    :param plan: from :func:`plan_sync`
    :param workers: parallel uploads
    :param log: where progress lines go
    """
    started = time.perf_counter()
    remote = dict(plan.remote)

    def upload(key: str) -> tuple[str, str]:
        path, digest = plan.local[key]
        with path.open("rb") as body:
            resp = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={HASH_METADATA_KEY: digest})
        return resp["ETag"], digest

    failures: dict[str, str] = {}
    uploaded: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {key: pool.submit(upload, key) for key in plan.uploads}
        for key, fut in futures.items():
            try:
                remote[key] = fut.result()
                uploaded.append(key)
            except Exception as exc:  # every failure is reported; nothing gets deleted
                failures[key] = f"{type(exc).__name__}: {exc}"
    if failures:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        raise DeployError(
            f"sync: {len(failures)} of {len(plan.uploads)} uploads failed; nothing was deleted. "
            f"Re-run the sync: it uploads only what is still missing or different.\n{lines}"
        )
    log(f"  uploaded {len(uploaded)} object(s)")

    deleted: list[str] = []
    stale = [k for k in plan.deleted if k.startswith(plan.prefix)]
    if len(stale) != len(plan.deleted):  # a plan from elsewhere must not reach outside the prefix
        raise DeployError(f"sync: refusing to delete keys outside {plan.prefix}")
    for start in range(0, len(stale), 1000):
        batch = stale[start : start + 1000]
        resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        if resp.get("Errors"):
            errs = ", ".join(f"{e['Key']}: {e.get('Message', e.get('Code'))}" for e in resp["Errors"])
            raise DeployError(f"sync: deleting stale objects failed: {errs}")
        deleted += batch
        for key in batch:
            remote.pop(key, None)
    if deleted:
        log(f"  deleted {len(deleted)} stale object(s)")

    manifest = {"objects": {k: list(v) for k, v in sorted(remote.items()) if k in plan.local}}
    s3.put_object(
        Bucket=bucket,
        Key=plan.prefix + MANIFEST_NAME,
        Body=json.dumps(manifest, sort_keys=True).encode(),
        ContentType="application/json",
    )
    return SyncResult(plan, tuple(uploaded), tuple(deleted), time.perf_counter() - started)


def sync_dags(
    s3: Any,
    bucket: str,
    prefix: str,
    folder: Path,
    *,
    dry_run: bool = False,
    workers: int = 8,
    log: Callable[[str], None] = print,
) -> SyncResult:
    """Plan and (unless ``dry_run``) apply a sync, logging the plan.

    :param s3: boto3 S3 client
    :param bucket: MWAA source bucket
    :param prefix: DAGs prefix
    :param folder: local folder to publish
    :param dry_run: print the plan only
    :param workers: parallel requests
    :param log: where lines go
    """
    started = time.perf_counter()
    plan = plan_sync(s3, bucket, prefix, folder, workers=workers)
    for line in plan.table():
        log(line)
    if dry_run:
        log("dry run: nothing uploaded or deleted")
        return SyncResult(plan, (), (), time.perf_counter() - started)
    if not plan.uploads and not plan.deleted:
        log("  up to date")
        if not plan.heads:  # the manifest is current too: not a single write
            return SyncResult(plan, (), (), time.perf_counter() - started)
    result = apply_sync(s3, bucket, plan, workers=workers, log=log)
    return SyncResult(plan, result.uploaded, result.deleted, time.perf_counter() - started)
