"""The release ledger: what an MWAA environment runs, as one versioned set, and rollback to an earlier set.

A *release* is everything an environment runs: its Airflow version, the S3 object versions of requirements.txt,
plugins.zip (which carries the constraints and the wheels) and the startup script, and the DAGs (the sync
manifest's VersionId, which pins every DAG object version, :mod:`airflow_mlops.deploy.sync`). Its id is a digest
of that content, so re-deploying the same content gives the same id.

The ledger is one JSON object per environment in the source bucket, ``.airflow-mlops/releases/<env>.json``,
rewritten with conditional writes (``If-Match``); it keeps the newest ``KEEP`` events, newest last::

    {"format": 1, "environment": "<env>",
     "events": [{"release": "<id>", "action": "deploy" | "rollback" | "rollback-started", "restores": "<id>",
                 "at": <epoch s>, "by": "<who>",
                 "airflow_version": "3.3.1",
                 "artifacts": {"requirements": ["requirements.txt", "<VersionId>"], "plugins": [...], ...},
                 "dags": {"prefix": "dags/", "manifest_version": "<VersionId>", "digest": "<sha256 of the files>"}}]}

Events: ``deploy`` and ``rollback`` (with ``restores``: the release it restored) describe what ran; a
``rollback-started`` event marks a rollback under way, so a re-run resumes towards the same release.

Rollback restores a whole release, in the deploy order: the environment first (its Airflow version, requirements
+ plugins + startup script together, so the constraints always match the requirements; MWAA changes minor
versions in place both ways), then the DAGs (written back with the sync's ordering and conditional writes).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.sync import (
    MANIFEST_NAME,
    SyncResult,
    default_owner,
    is_precondition_failed,
    normalize_prefix,
    read_manifest,
    sync_dags,
)

LEDGER_PREFIX = ".airflow-mlops/releases/"
KEEP = 100
# Ledger action of a rollback that has started but not finished (its ``restores`` names the target).
ROLLBACK_STARTED = "rollback-started"
# UpdateEnvironment field names per artifact kind: (path field, version field).
ARTIFACT_FIELDS = {
    "requirements": ("RequirementsS3Path", "RequirementsS3ObjectVersion"),
    "plugins": ("PluginsS3Path", "PluginsS3ObjectVersion"),
    "startup_script": ("StartupScriptS3Path", "StartupScriptS3ObjectVersion"),
}


def version_tuple(version: str) -> tuple[int, ...]:
    """``3.3.1`` -> ``(3, 3, 1)``, for ordering Airflow versions.

    :param version: dotted version
    """
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError as exc:
        raise DeployError(f"airflow_version: {version!r} is not a dotted version like 3.3.1") from exc


@dataclass(frozen=True)
class Release:
    """One release event.

    :param release: content id
    :param action: ``deploy`` or ``rollback``
    :param at: when it was recorded (epoch seconds)
    :param by: who recorded it
    :param airflow_version: the environment's Airflow version
    :param artifacts: ``kind -> (key, VersionId)``
    :param dags_prefix: the DAGs prefix
    :param dags_manifest_version: VersionId of the sync manifest (the DAGs snapshot)
    :param dags_digest: digest of the DAG files' keys and sha256s
    :param restores: for a rollback, the release it restored
    """

    release: str
    action: str
    at: float
    by: str
    airflow_version: str
    artifacts: dict[str, tuple[str, str]]
    dags_prefix: str
    dags_manifest_version: str
    dags_digest: str
    restores: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ledger's JSON form."""
        return {
            "release": self.release, "action": self.action, "at": self.at, "by": self.by, "restores": self.restores,
            "airflow_version": self.airflow_version,
            "artifacts": {k: list(v) for k, v in sorted(self.artifacts.items())},
            "dags": {"prefix": self.dags_prefix, "manifest_version": self.dags_manifest_version,
                     "digest": self.dags_digest},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        """Read a ledger event.

        :param data: its JSON form
        """
        dags = data.get("dags", {})
        return cls(str(data["release"]), str(data.get("action", "deploy")), float(data.get("at", 0)),
                   str(data.get("by", "")), str(data["airflow_version"]),
                   {k: (str(v[0]), str(v[1])) for k, v in data.get("artifacts", {}).items()},
                   str(dags.get("prefix", "dags/")), str(dags.get("manifest_version", "")),
                   str(dags.get("digest", "")), str(data.get("restores", "")))

    def line(self) -> str:
        """One line a person reads."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at))
        arts = " ".join(f"{k}@{v[1][:8]}" for k, v in sorted(self.artifacts.items()))
        what = f"{self.action} of {self.restores}" if self.restores else self.action
        return f"{self.release}  {when}Z  {what:<8} Airflow {self.airflow_version}  {arts}  by {self.by}"


def release_id(airflow_version: str, artifacts: dict[str, tuple[str, str]], dags_digest: str) -> str:
    """The content id of a release.

    :param airflow_version: Airflow version
    :param artifacts: ``kind -> (key, VersionId)``
    :param dags_digest: digest of the DAG files
    """
    parts = [airflow_version, *(f"{k}={v[0]}@{v[1]}" for k, v in sorted(artifacts.items())), dags_digest]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def dags_digest(objects: dict[str, tuple[str, str, str]]) -> str:
    """Digest of a DAGs snapshot: its keys and content hashes (not ETags, not versions).

    :param objects: ``key -> (ETag, sha256, VersionId)`` from the sync manifest
    """
    text = "\n".join(f"{k} {v[1]}" for k, v in sorted(objects.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ledger_key(environment: str) -> str:
    """The ledger's key for an environment.

    :param environment: MWAA environment name
    """
    return f"{LEDGER_PREFIX}{environment}.json"


def read_ledger(s3: Any, bucket: str, environment: str) -> tuple[list[Release], str | None]:
    """The environment's release events, oldest first, and the ledger's ETag (None when there is none).

    :param s3: boto3 S3 client
    :param bucket: source bucket
    :param environment: environment name
    """
    from botocore.exceptions import ClientError

    try:
        resp = s3.get_object(Bucket=bucket, Key=ledger_key(environment))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return [], None
        raise
    try:
        data = json.loads(resp["Body"].read())
        return [Release.from_json(e) for e in data.get("events", [])], resp.get("ETag")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DeployError(
            f"ledger: s3://{bucket}/{ledger_key(environment)} is not a valid release ledger ({exc}); restore an "
            "earlier version of it (the bucket is versioned)"
        ) from exc


def current_release(env: dict[str, Any], events: list[Release]) -> Release | None:
    """The newest event whose artifacts and Airflow version are what the environment runs now.

    :param env: GetEnvironment's ``Environment``
    :param events: the ledger
    """
    running = _running_artifacts(env)
    for event in reversed(events):
        if event.action == ROLLBACK_STARTED:
            continue
        if event.airflow_version == env.get("AirflowVersion") and event.artifacts == running:
            return event
    return None


def _running_artifacts(env: dict[str, Any]) -> dict[str, tuple[str, str]]:
    out = {}
    for kind, (path_field, version_field) in ARTIFACT_FIELDS.items():
        if env.get(path_field):
            out[kind] = (str(env[path_field]), str(env.get(version_field) or ""))
    return out


def record_release(
    s3: Any,
    mwaa: Any,
    *,
    environment: str,
    bucket: str,
    dags_prefix: str,
    manifest_version: str,
    action: str = "deploy",
    by: str = "",
    restores: str = "",
    log: Callable[[str], None] = print,
) -> Release:
    """Append what the environment runs now (artifacts + the DAGs snapshot) to its ledger, unless already last.

    :param s3: boto3 S3 client
    :param mwaa: boto3 MWAA client
    :param environment: environment name
    :param bucket: source bucket
    :param dags_prefix: the DAGs prefix
    :param manifest_version: the sync manifest's VersionId after the sync
    :param action: ``deploy`` or ``rollback``
    :param by: who (default: the sync owner)
    :param restores: for a rollback, the release it restored
    :param log: where lines go
    """
    prefix = normalize_prefix(dags_prefix)
    env = mwaa.get_environment(Name=environment)["Environment"]
    if env.get("Status") != "AVAILABLE":
        raise DeployError(f"ledger: environment {environment} is {env.get('Status')}; record a release once it is "
                          "AVAILABLE (deploy update waits for that)")
    manifest = read_manifest(s3, bucket, prefix + MANIFEST_NAME, manifest_version or None)
    artifacts = _running_artifacts(env)
    digest = dags_digest(manifest.objects)
    rid = release_id(str(env.get("AirflowVersion", "")), artifacts, digest)
    events, etag = read_ledger(s3, bucket, environment)
    if events and events[-1].release == rid and events[-1].action != ROLLBACK_STARTED:
        log(f"release {rid} already recorded: ledger unchanged")
        return events[-1]
    event = Release(rid, action, time.time(), by or default_owner(), str(env.get("AirflowVersion", "")), artifacts,
                    prefix, manifest_version, digest, restores)
    _append(s3, bucket, environment, events, etag, event)
    log(f"release {event.line()}")
    return event


def _append(s3: Any, bucket: str, environment: str, events: list[Release], etag: str | None, event: Release) -> None:
    body = json.dumps({"format": 1, "environment": environment,
                       "events": [e.to_json() for e in [*events, event][-KEEP:]]}, indent=1).encode()
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(Bucket=bucket, Key=ledger_key(environment), Body=body, ContentType="application/json",
                      **condition)
    except Exception as exc:
        if is_precondition_failed(exc):
            raise DeployError(f"ledger: s3://{bucket}/{ledger_key(environment)} changed while this deploy wrote to "
                              "it (another deploy at the same time?); run it again") from exc
        raise


def pending_rollback(events: list[Release]) -> Release | None:
    """The release an interrupted rollback was heading for: the last event, when it is a rollback start.

    :param events: the ledger
    """
    if events and events[-1].action == ROLLBACK_STARTED:
        target = [e for e in events if e.release == events[-1].restores and e.action != ROLLBACK_STARTED]
        return target[-1] if target else None
    return None


def record_rollback_start(s3: Any, bucket: str, environment: str, target: Release,
                          log: Callable[[str], None] = print) -> None:
    """Note in the ledger that a rollback to ``target`` started (so a re-run resumes towards it).

    :param s3: boto3 S3 client
    :param bucket: source bucket
    :param environment: environment name
    :param target: the release being restored
    :param log: where lines go
    """
    events, etag = read_ledger(s3, bucket, environment)
    if pending_rollback(events) == target:
        return
    start = Release(f"to-{target.release}", ROLLBACK_STARTED, time.time(), default_owner(), target.airflow_version,
                    target.artifacts, target.dags_prefix, target.dags_manifest_version, target.dags_digest,
                    target.release)
    _append(s3, bucket, environment, events, etag, start)
    log(f"  ledger: rollback to {target.release} started")


def preflight_rollback(s3: Any, bucket: str, target: Release, log: Callable[[str], None] = print) -> None:
    """Everything a rollback will read, checked before it changes anything.

    The DAG sync must not be claimed by a deploy, and every object version of the release (artifacts, the DAGs
    snapshot and each DAG object in it) must still exist: the bucket's lifecycle expires noncurrent versions.

    :param s3: boto3 S3 client
    :param bucket: source bucket
    :param target: the release
    :param log: where lines go
    """
    from botocore.exceptions import ClientError

    if not target.dags_manifest_version:
        raise DeployError(f"rollback: release {target.release} recorded no DAGs snapshot (manifest version); nothing "
                          "was changed. Deploy the wanted commit instead.")
    claim = read_manifest(s3, bucket, target.dags_prefix + MANIFEST_NAME)
    if claim.state == "in-progress":
        raise DeployError(f"rollback: {claim.owner} is syncing s3://{bucket}/{target.dags_prefix}; wait for that "
                          "deploy to finish (or take over its claim with `deploy sync --take-over`), then roll back. "
                          "Nothing was changed.")
    snapshot = read_manifest(s3, bucket, target.dags_prefix + MANIFEST_NAME, target.dags_manifest_version or None)
    wanted = [(key, version) for key, version in target.artifacts.values()]
    wanted += [(key, entry[2]) for key, entry in snapshot.objects.items()]
    missing = []
    for key, version in wanted:
        if not version:
            missing.append(f"{key} (no version recorded)")
            continue
        try:
            s3.head_object(Bucket=bucket, Key=key, VersionId=version)
        except ClientError:
            missing.append(f"{key}@{version}")
    if missing:
        raise DeployError(
            f"rollback: release {target.release} can no longer be restored: {len(missing)} object version(s) are "
            f"gone (the bucket's lifecycle expires noncurrent versions): {', '.join(missing[:5])}. Nothing was "
            "changed; deploy the wanted commit instead."
        )
    log(f"  preflight: {len(wanted)} object versions readable, no sync in progress")


def restore_current(s3: Any, bucket: str, key: str, version: str, *, log: Callable[[str], None] = print) -> str:
    """Make ``version``'s content the current object of ``key`` (a server-side copy) and return its VersionId.

    Nothing is copied when the latest version already holds that content.

    :param s3: boto3 S3 client
    :param bucket: source bucket
    :param key: the artifact's key
    :param version: the version to restore
    :param log: where lines go
    """
    from airflow_mlops.deploy import HASH_METADATA_KEY

    want = s3.head_object(Bucket=bucket, Key=key, VersionId=version).get("Metadata", {}).get(HASH_METADATA_KEY)
    latest = s3.head_object(Bucket=bucket, Key=key)
    if want and latest.get("Metadata", {}).get(HASH_METADATA_KEY) == want:
        return str(latest["VersionId"])
    copied = s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key, "VersionId": version},
                            MetadataDirective="COPY")
    new = str(copied["VersionId"])
    log(f"  restored s3://{bucket}/{key} version {version} as the current version {new}")
    return new


def choose_target(events: list[Release], current: Release | None, release: str | None) -> Release:
    """The release to roll back to: ``release`` by id (a unique prefix works), else the one before ``current``.

    :param events: the ledger
    :param current: what runs now
    :param release: an id or prefix, or None for the previous release
    """
    events = [e for e in events if e.action != ROLLBACK_STARTED]
    if not events:
        raise DeployError("rollback: the ledger has no releases yet; deploy once with `deploy sync --environment`")
    if release:
        found = {e.release: e for e in events if e.release.startswith(release)}
        if len(found) != 1:
            known = ", ".join(sorted({e.release for e in events})[-10:])
            what = "matches no release" if not found else "is ambiguous"
            raise DeployError(f"release: {release!r} {what}; known releases: {known}")
        return next(iter(found.values()))
    if current is None:
        raise DeployError(
            "rollback: what the environment runs now is not in the ledger (changed outside the deploy CLI?); "
            "name the release to restore with --release (see `deploy releases`)"
        )
    idx = max(i for i, e in enumerate(events) if e.release == current.release)
    for event in reversed(events[:idx]):
        if event.release != current.release:
            return event
    raise DeployError(f"rollback: release {current.release} is the only one in the ledger; nothing to roll back to")


def restore_dags(s3: Any, bucket: str, target: Release, *, workers: int = 8, log: Callable[[str], None] = print,
                 ) -> SyncResult:
    """Write the target release's DAG object versions back with the sync (ordering, conditional writes).

    :param s3: boto3 S3 client
    :param bucket: source bucket
    :param target: the release
    :param workers: parallel requests
    :param log: where lines go
    """
    manifest = read_manifest(s3, bucket, target.dags_prefix + MANIFEST_NAME, target.dags_manifest_version or None)
    with tempfile.TemporaryDirectory(prefix="mwaa-rollback-") as tmp:
        root = Path(tmp)
        for key, (_etag, _sha, version) in manifest.objects.items():
            if not version:
                raise DeployError(f"rollback: the DAGs snapshot of {target.release} has no version for {key}")
            dest = root / key[len(target.dags_prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read())
        return sync_dags(s3, bucket, target.dags_prefix, root, workers=workers, log=log)
