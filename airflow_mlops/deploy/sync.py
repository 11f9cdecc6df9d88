"""Incremental, ordered, conditional sync of the bundle's DAGs folder to the MWAA bucket's DAGs prefix.

MWAA copies the DAGs prefix to every scheduler and worker within about a minute of a change, file by file, and the
DAG processor parses whatever has arrived. So a sync must never expose half a change that breaks parsing:

1. **Support files first.** Helper modules, configs, SQL and ``.airflowignore`` (everything Airflow would not
   parse as a DAG file, :mod:`airflow_mlops.deploy.dagfiles`) are uploaded and confirmed before any DAG file,
   so a new DAG never lands before the helper it imports.
2. **Then DAG files**, in parallel.
3. **Deletions last**, and only when every upload succeeded: a DAG that still imports a helper deleted in the
   same change keeps it until the new DAG file is in place.

**Content-addressed.** Each object carries the sha256 of its content as metadata (``x-amz-meta-sha256``); a file
is uploaded when that hash differs, never because of an mtime. Reading metadata costs one HEAD per object, so the
manifest (below) caches ``key -> (ETag, sha256, VersionId)``: a listed object whose ETag still matches the cached
one has not been rewritten since, so its cached hash stands; any other object is HEADed. An unchanged tree costs
one LIST and one GET, and writes nothing.

**Conditional writes.** A new key is written with ``If-None-Match: *``, a changed key with ``If-Match`` on the
ETag this sync planned against, and the manifest likewise. A sync first *claims* the prefix by rewriting the
manifest (conditionally) in state ``in-progress`` naming its owner, and finishes by writing it ``complete``. A
second sync running at the same time therefore fails before it writes anything, with a message naming the first
one, instead of silently interleaving its files with the first one's. A claim older than ``CLAIM_TTL_S`` (a sync
that was killed) can be taken over with ``take_over=True`` (CLI ``--take-over``).

The manifest object, ``<prefix>/.airflow-mlops-sync.json`` (JSON; Airflow ignores it)::

    {"format": 2,
     "state": "complete" | "in-progress",
     "owner": "<who>", "started_at": <epoch s>, "finished_at": <epoch s or null>,
     "objects": {"dags/x.py": ["<ETag>", "<sha256>", "<VersionId>"], ...}}

``objects`` is what the prefix held when the manifest was written; while ``in-progress`` it is the state the
claim started from. Its VersionIds make the manifest a snapshot of the DAGs: the release ledger
(:mod:`airflow_mlops.deploy.release`) records the manifest's own VersionId, and a rollback restores exactly those
object versions. Deleting the manifest is safe: the next sync HEADs every object once and writes it again.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import HASH_METADATA_KEY, DeployError
from airflow_mlops.deploy.bundle import sha256_file
from airflow_mlops.deploy.dagfiles import is_dag_file, read_airflowignore

MANIFEST_NAME = ".airflow-mlops-sync.json"
MANIFEST_FORMAT = 2
# A claim older than this is presumed dead (a sync of thousands of files takes well under a minute).
CLAIM_TTL_S = 900.0
_SKIP_DIRS = {"__pycache__"}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def normalize_prefix(prefix: str) -> str:
    """``dags`` / ``/dags/`` -> ``dags/``; refuses the bucket root so a sync can never delete outside a folder.

    :param prefix: the DAGs prefix (MWAA's DagS3Path)
    """
    cleaned = prefix.strip().strip("/")
    if not cleaned or ".." in cleaned.split("/"):
        raise DeployError(f"prefix: {prefix!r} must name a folder in the bucket, e.g. 'dags'")
    return cleaned + "/"


def default_owner() -> str:
    """Who a sync's claim names: the CI run when there is one, else user@host:pid."""
    run = os.environ.get("GITHUB_RUN_ID")
    if run:
        repo = os.environ.get("GITHUB_REPOSITORY", "")
        return f"github-actions {repo} run {run} attempt {os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RemoteManifest:
    """The manifest as this sync read it.

    :param etag: its ETag (None when there is none)
    :param objects: ``key -> (ETag, sha256, VersionId)``
    :param state: ``complete``, ``in-progress`` or ``absent``
    :param owner: who wrote it
    :param started_at: when its sync started (epoch seconds)
    :param version_id: its S3 VersionId
    """

    etag: str | None = None
    objects: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    state: str = "absent"
    owner: str = ""
    started_at: float = 0.0
    version_id: str = ""


def is_precondition_failed(exc: Exception) -> bool:
    """Whether an S3 error is a failed ``If-Match`` / ``If-None-Match`` (412) or a conflicting conditional write.

    :param exc: the exception
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    err = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return err.get("Code") in _PRECONDITION_CODES or status == "412"


def read_manifest(s3: Any, bucket: str, key: str, version_id: str | None = None) -> RemoteManifest:
    """Read a sync manifest; a missing or corrupt one reads as absent (it only costs HEADs).

    :param s3: boto3 S3 client
    :param bucket: the bucket
    :param key: the manifest key
    :param version_id: a specific version (release snapshots)
    """
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        resp = s3.get_object(**kwargs)
    except ClientError as exc:
        if version_id:
            raise DeployError(f"manifest: s3://{bucket}/{key} version {version_id} cannot be read: {exc}") from exc
        return RemoteManifest()
    etag = resp.get("ETag")
    try:
        data = json.loads(resp["Body"].read())
        objects = {
            k: (str(v[0]), str(v[1]), str(v[2]) if len(v) > 2 and v[2] else "")
            for k, v in data.get("objects", {}).items()
        }
        state = str(data.get("state", "complete"))
        return RemoteManifest(etag, objects, state, str(data.get("owner", "")), float(data.get("started_at") or 0),
                              resp.get("VersionId") or "")
    except (ValueError, AttributeError, TypeError, IndexError, KeyError):
        # Corrupt: every object is checked against its own metadata; the ETag still guards the rewrite.
        return RemoteManifest(etag, {}, "complete", "", 0.0, resp.get("VersionId") or "")


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will do, by key.

    :param prefix: normalized prefix (ends with ``/``)
    :param added: keys not in the bucket yet
    :param changed: keys whose content hash differs
    :param unchanged: keys already up to date
    :param deleted: keys in the bucket with no local file
    :param local: local file and sha256 per key
    :param remote: (ETag, sha256, VersionId) per key known after planning
    :param listed: ETag per key listed under the prefix (the manifest excluded)
    :param dag_keys: keys Airflow parses as DAG files (uploaded after every other file)
    :param manifest: the manifest this plan was made against
    :param heads: HEAD requests planning needed (the cache missed)
    """

    prefix: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]
    local: dict[str, tuple[Path, str]] = field(default_factory=dict)
    remote: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    listed: dict[str, str] = field(default_factory=dict)
    dag_keys: frozenset[str] = frozenset()
    manifest: RemoteManifest = field(default_factory=RemoteManifest)
    heads: int = 0

    @property
    def uploads(self) -> tuple[str, ...]:
        """Keys to upload in order: support files, then DAG files (each group: added, then changed)."""
        keys = self.added + self.changed
        return tuple(k for k in keys if k not in self.dag_keys) + tuple(k for k in keys if k in self.dag_keys)

    @property
    def manifest_key(self) -> str:
        """The manifest's key."""
        return self.prefix + MANIFEST_NAME

    @property
    def writes_nothing(self) -> bool:
        """Nothing to upload or delete, and the manifest already describes the prefix."""
        return not self.uploads and not self.deleted and not self.heads and self.manifest.state == "complete"

    def table(self) -> list[str]:
        """The plan as lines a person reads, in the order the sync writes."""
        lines = [f"sync plan for {self.prefix}: {len(self.added)} added, {len(self.changed)} changed, "
                 f"{len(self.deleted)} deleted, {len(self.unchanged)} unchanged"]
        for key in self.uploads:
            mark = "+" if key in self.added else "~"
            kind = "DAG file" if key in self.dag_keys else "support file, before DAG files"
            lines.append(f"  {mark} {key}  ({kind})")
        lines += [f"  - {k}  (after every upload)" for k in self.deleted]
        return lines


@dataclass(frozen=True)
class SyncResult:
    """What a sync did.

    :param plan: the plan it carried out
    :param uploaded: keys uploaded, in order
    :param deleted: keys deleted
    :param seconds: wall time
    :param manifest_version: VersionId of the manifest describing the prefix afterwards (a DAGs snapshot)
    :param writes: S3 write requests made (uploads, delete batches, manifest writes)
    :param bytes_uploaded: bytes of the uploaded files
    """

    plan: SyncPlan
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    seconds: float
    manifest_version: str = ""
    writes: int = 0
    bytes_uploaded: int = 0


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
    patterns = read_airflowignore(folder)
    dag_keys = frozenset(k for k, (path, _) in local.items() if is_dag_file(path, k[len(prefix):], patterns))
    manifest_key = prefix + MANIFEST_NAME
    listed = _list_remote(s3, bucket, prefix)
    manifest = read_manifest(s3, bucket, manifest_key) if manifest_key in listed else RemoteManifest()
    listed.pop(manifest_key, None)

    remote: dict[str, tuple[str, str, str]] = {}
    to_head = []
    for key, etag in listed.items():
        hit = manifest.objects.get(key)
        if hit and hit[0] == etag and hit[2]:
            remote[key] = hit
        elif key in local:
            to_head.append(key)  # stale keys need no hash: they are deleted whatever they hold

    def head(key: str) -> tuple[str, tuple[str, str, str]]:
        meta = s3.head_object(Bucket=bucket, Key=key)
        return key, (meta["ETag"], meta.get("Metadata", {}).get(HASH_METADATA_KEY, ""), meta.get("VersionId") or "")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, entry in pool.map(head, to_head):
            remote[key] = entry

    added = tuple(k for k in local if k not in listed)
    changed = tuple(k for k in local if k in listed and remote.get(k, ("", "", ""))[1] != local[k][1])
    unchanged = tuple(k for k in local if k in listed and k not in changed)
    deleted = tuple(sorted(k for k in listed if k not in local))
    return SyncPlan(prefix, added, changed, unchanged, deleted, local, remote, listed, dag_keys, manifest,
                    heads=len(to_head))


def _manifest_body(state: str, owner: str, started_at: float, objects: dict[str, tuple[str, str, str]]) -> bytes:
    doc = {
        "format": MANIFEST_FORMAT,
        "state": state,
        "owner": owner,
        "started_at": started_at,
        "finished_at": time.time() if state == "complete" else None,
        "objects": {k: list(v) for k, v in sorted(objects.items())},
    }
    return json.dumps(doc, sort_keys=True).encode()


def _put_manifest(s3: Any, bucket: str, key: str, body: bytes, *, if_match: str | None) -> dict[str, Any]:
    condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
    result: dict[str, Any] = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                                           **condition)
    return result


def _claim_error(s3: Any, bucket: str, plan: SyncPlan, what: str) -> DeployError:
    now = read_manifest(s3, bucket, plan.manifest_key)
    who = f"{now.owner or 'another writer'} ({now.state}, started {time.time() - now.started_at:.0f}s ago)" \
        if now.started_at else (now.owner or "another writer")
    return DeployError(
        f"sync: s3://{bucket}/{plan.manifest_key} was changed by {who} {what}; two syncs must not interleave their "
        "files, so this one stopped. Wait for the other deploy to finish, then run the deploy again (it uploads only "
        "what still differs)."
    )


def apply_sync(
    s3: Any,
    bucket: str,
    plan: SyncPlan,
    *,
    workers: int = 8,
    owner: str | None = None,
    take_over: bool = False,
    clock: Callable[[], float] = time.time,
    log: Callable[[str], None] = print,
) -> SyncResult:
    """Claim the prefix, upload support files then DAG files, delete stale keys, and release the claim.

    :param s3: boto3 S3 client
    :param bucket: MWAA source bucket
    :param plan: from :func:`plan_sync`
    :param workers: parallel uploads
    :param owner: who the claim names (default :func:`default_owner`)
    :param take_over: take over a claim older than ``CLAIM_TTL_S`` (a sync that was killed)
    :param clock: epoch clock, for the claim's age
    :param log: where progress lines go
    """
    started = time.perf_counter()
    owner = owner or default_owner()
    writes = 0
    stale = [k for k in plan.deleted if k.startswith(plan.prefix)]
    if len(stale) != len(plan.deleted):  # a plan from elsewhere must not reach outside the prefix
        raise DeployError(f"sync: refusing to delete keys outside {plan.prefix}")

    base = plan.manifest
    if base.state == "in-progress" and base.owner != owner:
        age = clock() - base.started_at
        if age < CLAIM_TTL_S or not take_over:
            hint = (f"it is {age:.0f}s old; a claim older than {CLAIM_TTL_S:.0f}s can be taken over with --take-over"
                    if age < CLAIM_TTL_S else
                    f"it is {age:.0f}s old, so that sync probably died: re-run with --take-over")
            raise DeployError(
                f"sync: {base.owner} is syncing s3://{bucket}/{plan.prefix} (claim in {plan.manifest_key}); {hint}. "
                "Nothing was written."
            )
        log(f"  taking over the claim of {base.owner} ({age:.0f}s old)")

    # Claim: the manifest, rewritten only if it is still the one this plan read.
    claim_started = clock()
    objects = {k: v for k, v in plan.remote.items() if k in plan.listed}
    try:
        claim = _put_manifest(s3, bucket, plan.manifest_key,
                              _manifest_body("in-progress", owner, claim_started, objects), if_match=base.etag)
    except Exception as exc:
        if is_precondition_failed(exc):
            raise _claim_error(s3, bucket, plan, "after this sync planned") from exc
        raise
    writes += 1
    claim_etag = claim["ETag"]

    def upload(key: str) -> tuple[str, str, str]:
        path, digest = plan.local[key]
        condition = {"IfMatch": plan.listed[key]} if key in plan.listed else {"IfNoneMatch": "*"}
        with path.open("rb") as body:
            resp = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={HASH_METADATA_KEY: digest}, **condition)
        return resp["ETag"], digest, resp.get("VersionId") or ""

    uploaded: list[str] = []
    failures: dict[str, str] = {}
    conflicts: list[str] = []
    support = [k for k in plan.uploads if k not in plan.dag_keys]
    dag_files = [k for k in plan.uploads if k in plan.dag_keys]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for phase, keys in (("support file(s)", support), ("DAG file(s)", dag_files)):
            if not keys or failures:
                continue
            futures = {key: pool.submit(upload, key) for key in keys}
            for key, fut in futures.items():
                try:
                    objects[key] = fut.result()
                    uploaded.append(key)
                except Exception as exc:  # every failure is reported; nothing gets deleted
                    if is_precondition_failed(exc):
                        conflicts.append(key)
                    failures[key] = f"{type(exc).__name__}: {exc}"
                writes += 1
            if not failures:
                log(f"  uploaded {len(keys)} {phase}")
    bytes_uploaded = sum(plan.local[k][0].stat().st_size for k in uploaded)

    def release(state_objects: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
        try:
            return _put_manifest(s3, bucket, plan.manifest_key,
                                 _manifest_body("complete", owner, claim_started, state_objects), if_match=claim_etag)
        except Exception as exc:
            if is_precondition_failed(exc):
                raise _claim_error(s3, bucket, plan, "while this sync ran (its claim was taken over)") from exc
            raise

    if failures:
        release(objects)  # what did land is recorded; the claim is released
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        skipped = len(plan.uploads) - len(uploaded) - len(failures)
        why = (f" {len(conflicts)} object(s) changed in the bucket since this sync planned (another writer?)."
               if conflicts else "")
        raise DeployError(
            f"sync: {len(failures)} of {len(plan.uploads)} uploads failed; nothing was deleted"
            + (f" and {skipped} DAG file(s) were held back" if skipped else "")
            + f".{why} Re-run the sync: it uploads only what is still missing or different.\n{lines}"
        )

    deleted: list[str] = []
    for start in range(0, len(stale), 1000):
        batch = stale[start : start + 1000]
        resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        writes += 1
        if resp.get("Errors"):
            release({k: v for k, v in objects.items() if k not in deleted})
            errs = ", ".join(f"{e['Key']}: {e.get('Message', e.get('Code'))}" for e in resp["Errors"])
            raise DeployError(f"sync: deleting stale objects failed: {errs}")
        deleted += batch
        for key in batch:
            objects.pop(key, None)
    if deleted:
        log(f"  deleted {len(deleted)} stale object(s)")

    final = release({k: v for k, v in objects.items() if k in plan.local})
    writes += 1
    return SyncResult(plan, tuple(uploaded), tuple(deleted), time.perf_counter() - started,
                      final.get("VersionId") or "", writes, bytes_uploaded)


def sync_dags(
    s3: Any,
    bucket: str,
    prefix: str,
    folder: Path,
    *,
    dry_run: bool = False,
    workers: int = 8,
    owner: str | None = None,
    take_over: bool = False,
    log: Callable[[str], None] = print,
) -> SyncResult:
    """Plan and (unless ``dry_run``) apply a sync, logging the plan.

    :param s3: boto3 S3 client
    :param bucket: MWAA source bucket
    :param prefix: DAGs prefix
    :param folder: local folder to publish
    :param dry_run: print the plan only
    :param workers: parallel requests
    :param owner: who the claim names
    :param take_over: take over a dead sync's claim
    :param log: where lines go
    """
    started = time.perf_counter()
    plan = plan_sync(s3, bucket, prefix, folder, workers=workers)
    for line in plan.table():
        log(line)
    if dry_run:
        if plan.manifest.state == "in-progress":
            log(f"note: {plan.manifest.owner} holds a sync claim on {plan.prefix}")
        log("dry run: nothing uploaded or deleted")
        return SyncResult(plan, (), (), time.perf_counter() - started, plan.manifest.version_id)
    if plan.writes_nothing:
        log("  up to date: nothing written")
        return SyncResult(plan, (), (), time.perf_counter() - started, plan.manifest.version_id)
    result = apply_sync(s3, bucket, plan, workers=workers, owner=owner, take_over=take_over, log=log)
    return SyncResult(plan, result.uploaded, result.deleted, time.perf_counter() - started, result.manifest_version,
                      result.writes, result.bytes_uploaded)
