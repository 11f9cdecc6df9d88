"""Point the MWAA environment at new requirements/plugins/startup-script versions and wait until it is AVAILABLE.

requirements.txt, plugins.zip and the startup script are uploaded only when their content hash changed; their S3
VersionIds (the bucket must be versioned) go into ONE mwaa UpdateEnvironment, with the bundle's Airflow version
when it differs, so MWAA always installs a consistent set (the constraints travel inside plugins.zip, see
:mod:`airflow_mlops.deploy.bundle`). When the environment already runs that content, no update is made (an MWAA
update takes 20-40 minutes and restarts the workers).

Roll back a whole release (artifacts and DAGs) with ``airflow-mlops deploy rollback``
(:mod:`airflow_mlops.deploy.release`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import HASH_METADATA_KEY, DeployError
from airflow_mlops.deploy.bundle import sha256_file
from airflow_mlops.deploy.release import (
    ARTIFACT_FIELDS,
    Release,
    choose_target,
    current_release,
    pending_rollback,
    preflight_rollback,
    read_ledger,
    record_release,
    record_rollback_start,
    restore_current,
    restore_dags,
    version_tuple,
)

READY_TO_UPDATE = {"AVAILABLE", "UPDATE_FAILED"}
FAILED_STATES = {"UPDATE_FAILED", "UNAVAILABLE", "CREATE_FAILED", "DELETED", "DELETING"}
# InvokeRestApi rejects longer paths (API limit).
MAX_REST_PATH = 64


@dataclass(frozen=True)
class Artifact:
    """A file MWAA reads by S3 object version.

    :param kind: ``requirements``, ``plugins`` or ``startup_script``
    :param path: local file
    :param key: S3 key in the environment's bucket
    """

    kind: str
    path: Path
    key: str

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_FIELDS:
            raise DeployError(f"kind: {self.kind!r} is not one of {', '.join(ARTIFACT_FIELDS)}")
        if not self.key or self.key.startswith("/"):
            raise DeployError(f"key: {self.key!r} must be a relative S3 key, e.g. 'requirements.txt'")


@dataclass(frozen=True)
class Published:
    """An artifact's object version in S3.

    :param artifact: the artifact
    :param version_id: its S3 VersionId
    :param uploaded: whether this run uploaded it (content changed)
    """

    artifact: Artifact
    version_id: str
    uploaded: bool


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of :func:`update_environment`.

    :param published: artifact versions
    :param updated: whether UpdateEnvironment was called
    :param previous: the environment's previous (path, version) per kind, for rollback
    :param status: final environment status
    """

    published: tuple[Published, ...]
    updated: bool
    previous: dict[str, tuple[str | None, str | None]]
    status: str


def publish(s3: Any, bucket: str, artifact: Artifact, log: Callable[[str], None] = print, *,
            running_version: str | None = None) -> Published:
    """Upload an artifact only when its sha256 differs from what runs and from the latest object; return its VersionId.

    :param s3: boto3 S3 client
    :param bucket: the environment's source bucket (versioned)
    :param artifact: what to publish
    :param log: where lines go
    :param running_version: the VersionId the environment runs for this key: when it holds the same content (say,
        after a rollback), that version is reused and no update is needed
    """
    from botocore.exceptions import ClientError

    digest = sha256_file(artifact.path)
    if running_version:
        try:
            running = s3.head_object(Bucket=bucket, Key=artifact.key, VersionId=running_version)
        except ClientError:
            running = None
        if running is not None and running.get("Metadata", {}).get(HASH_METADATA_KEY) == digest:
            log(f"  {artifact.kind:<15} running    s3://{bucket}/{artifact.key}  version {running_version}")
            return Published(artifact, running_version, uploaded=False)
    try:
        head = s3.head_object(Bucket=bucket, Key=artifact.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise
        head = None
    if head is not None and head.get("Metadata", {}).get(HASH_METADATA_KEY) == digest:
        version = head.get("VersionId")
        if not version or version == "null":
            raise DeployError(f"bucket {bucket}: versioning is off; MWAA needs object versions (enable it)")
        log(f"  {artifact.kind:<15} unchanged  s3://{bucket}/{artifact.key}  version {version}")
        return Published(artifact, version, uploaded=False)
    with artifact.path.open("rb") as body:
        resp = s3.put_object(Bucket=bucket, Key=artifact.key, Body=body, Metadata={HASH_METADATA_KEY: digest})
    version = resp.get("VersionId")
    if not version or version == "null":
        raise DeployError(f"bucket {bucket}: versioning is off; MWAA needs object versions (enable it)")
    log(f"  {artifact.kind:<15} uploaded   s3://{bucket}/{artifact.key}  version {version}")
    return Published(artifact, version, uploaded=True)


def _last_update_error(env: dict[str, Any]) -> str:
    error = env.get("LastUpdate", {}).get("Error", {})
    if not error:
        return "no error recorded in LastUpdate"
    return f"{error.get('ErrorCode', '?')}: {error.get('ErrorMessage', '')}"


def wait_until_available(
    mwaa: Any,
    name: str,
    *,
    since: Any,
    poll_s: float = 30.0,
    timeout_s: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll GetEnvironment until the update started after ``since`` succeeded; raise quoting LastUpdate's error.

    :param mwaa: boto3 MWAA client
    :param name: environment name
    :param since: LastUpdate.CreatedAt before our UpdateEnvironment call (None when there was none)
    :param poll_s: seconds between polls
    :param timeout_s: give up after this long
    :param sleep: injectable sleep
    :param clock: injectable monotonic clock
    :param log: where progress lines go
    """
    start = clock()
    seen_updating = False
    last_line = ""
    while True:
        env = mwaa.get_environment(Name=name)["Environment"]
        status = env.get("Status", "?")
        last = env.get("LastUpdate", {})
        ours = seen_updating or (last.get("CreatedAt") is not None and last.get("CreatedAt") != since)
        seen_updating = seen_updating or status == "UPDATING"
        elapsed = clock() - start
        line = f"  [{elapsed:6.0f}s] {name}: {status}  (last update: {last.get('Status', '-')})"
        if line.split("]", 1)[1] != last_line:
            log(line)
            last_line = line.split("]", 1)[1]
        # An environment that starts from UPDATE_FAILED still reports it until our update begins.
        stale_failure = status == "UPDATE_FAILED" and not ours
        if (status in FAILED_STATES and not stale_failure) or (ours and last.get("Status") == "FAILED"):
            raise DeployError(
                f"MWAA environment {name} update failed ({status}); LastUpdate error: {_last_update_error(env)}. "
                "MWAA rolls back to the previous versions; fix the artifact and deploy again."
            )
        if status == "AVAILABLE" and ours and last.get("Status", "SUCCESS") == "SUCCESS":
            log(f"  {name} is AVAILABLE after {elapsed:.0f}s")
            return env
        if elapsed >= timeout_s:
            raise DeployError(f"MWAA environment {name}: still {status} after {timeout_s:.0f}s (timeout_s)")
        sleep(poll_s)


def update_environment(
    mwaa: Any,
    s3: Any,
    *,
    name: str,
    bucket: str,
    artifacts: list[Artifact],
    airflow_version: str | None = None,
    wait: bool = True,
    force: bool = False,
    poll_s: float = 30.0,
    timeout_s: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> UpdateResult:
    """Publish changed artifacts and point the environment at their versions.

    :param mwaa: boto3 MWAA client
    :param s3: boto3 S3 client
    :param name: MWAA environment name
    :param bucket: its source bucket
    :param artifacts: requirements / plugins / startup script to publish
    :param airflow_version: the Airflow version the bundle was built for: a minor-version change (MWAA changes
        minor versions in place, up or down) goes in the same update as its requirements and constraints; a
        major-version change is refused
    :param wait: wait until AVAILABLE
    :param force: call UpdateEnvironment even when the versions are unchanged
    :param poll_s: seconds between status polls
    :param timeout_s: give up waiting after this long
    :param sleep: injectable sleep
    :param clock: injectable monotonic clock
    :param log: where lines go
    """
    kinds = [a.kind for a in artifacts]
    if len(set(kinds)) != len(kinds):
        raise DeployError(f"artifacts: each kind at most once, got {kinds}")
    env = mwaa.get_environment(Name=name)["Environment"]
    status = env.get("Status", "?")
    if status not in READY_TO_UPDATE:
        raise DeployError(f"MWAA environment {name} is {status}; wait until it is AVAILABLE, then deploy again")
    source_arn = env.get("SourceBucketArn", "")
    if source_arn and source_arn.split(":::", 1)[-1] != bucket:
        raise DeployError(f"bucket: {bucket!r} is not environment {name}'s source bucket ({source_arn})")

    running_airflow = str(env.get("AirflowVersion", ""))
    change_version = bool(airflow_version and running_airflow and airflow_version != running_airflow)
    if change_version and version_tuple(str(airflow_version))[:1] != version_tuple(running_airflow)[:1]:
        raise DeployError(
            f"airflow_version: the bundle is built for Airflow {airflow_version} but {name} runs {running_airflow}; "
            "a major-version change is a migration (MWAA: only between 2.11.x and 3.x, after a rehearsal), not a "
            "deploy. Build the bundle with --airflow-version " + running_airflow
        )
    log(f"update {name} ({running_airflow or '?'}, {status})")
    previous = {a.kind: (env.get(ARTIFACT_FIELDS[a.kind][0]), env.get(ARTIFACT_FIELDS[a.kind][1])) for a in artifacts}
    published = tuple(
        publish(s3, bucket, a, log,
                running_version=previous[a.kind][1] if previous[a.kind][0] == a.key else None)
        for a in artifacts
    )
    request: dict[str, Any] = {"Name": name}
    differs = False
    if change_version:
        request["AirflowVersion"] = airflow_version
        differs = True
        way = "upgrade" if version_tuple(str(airflow_version)) > version_tuple(running_airflow) else "downgrade"
        log(f"  airflow         {running_airflow} -> {airflow_version} (in-place {way}, with the matching "
            "requirements and constraints)")
    for pub in published:
        path_field, version_field = ARTIFACT_FIELDS[pub.artifact.kind]
        request[path_field] = pub.artifact.key
        request[version_field] = pub.version_id
        if (env.get(path_field), env.get(version_field)) != (pub.artifact.key, pub.version_id):
            differs = True
            old = previous[pub.artifact.kind][1] or "-"
            log(f"  {pub.artifact.kind:<15} {old} -> {pub.version_id}")
    if not differs and not force:
        log(f"  {name} already runs these versions: no update")
        return UpdateResult(published, False, previous, status)

    since = env.get("LastUpdate", {}).get("CreatedAt")
    mwaa.update_environment(**request)
    log(f"  UpdateEnvironment sent; to undo it later: airflow-mlops deploy rollback --environment {name} "
        "--bucket BUCKET (restores the previous release: artifacts, constraints and DAGs)")
    if not wait:
        return UpdateResult(published, True, previous, "UPDATING")
    final = wait_until_available(
        mwaa, name, since=since, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep, clock=clock, log=log
    )
    return UpdateResult(published, True, previous, final.get("Status", "?"))


def rollback(
    mwaa: Any,
    s3: Any,
    *,
    name: str,
    bucket: str,
    release: str | None = None,
    wait: bool = True,
    workers: int = 8,
    poll_s: float = 30.0,
    timeout_s: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> Release:
    """Restore a whole earlier release: Airflow version, requirements + plugins (+ startup script), then its DAGs.

    Everything the rollback needs is checked before anything changes (the DAG sync is not claimed by a deploy, and
    every object version of the release can still be read). The start is recorded in the ledger, so a rollback
    that was interrupted (or sent with ``wait=False``) resumes towards the same release when run again. The
    release's artifact versions are copied back as the current objects, so what runs is always the latest version
    of each key: the bucket's expiry of noncurrent versions cannot remove it, and re-creating the environment from
    the latest objects (``mwaa-env.sh up``) brings back what ran.

    :param mwaa: boto3 MWAA client
    :param s3: boto3 S3 client
    :param name: environment name
    :param bucket: its source bucket (holds the ledger)
    :param release: release id (or a unique prefix); default: the release before the one running now, or the one
        an interrupted rollback was heading for
    :param wait: wait until AVAILABLE and restore the DAGs (without it, run the rollback again to finish)
    :param workers: parallel S3 requests for the DAGs
    :param poll_s: seconds between polls
    :param timeout_s: give up after this long
    :param sleep: injectable sleep
    :param clock: injectable clock
    :param log: where lines go
    """
    env = mwaa.get_environment(Name=name)["Environment"]
    status = env.get("Status", "?")
    if status not in READY_TO_UPDATE:
        raise DeployError(f"MWAA environment {name} is {status}; wait until it is AVAILABLE, then roll back")
    events, _ = read_ledger(s3, bucket, name)
    pending = pending_rollback(events)
    if pending is not None and not release:
        target = pending
        log(f"resuming the interrupted rollback of {name} to release {target.release}")
    else:
        target = choose_target(events, current_release(env, events), release)
    running_airflow = str(env.get("AirflowVersion", ""))
    if running_airflow and version_tuple(target.airflow_version)[:1] != version_tuple(running_airflow)[:1]:
        raise DeployError(
            f"release: {target.release} ran Airflow {target.airflow_version} and {name} runs {running_airflow}: a "
            "major-version change is a migration, not a rollback"
        )
    log(f"rollback {name} to release {target.line()}")
    preflight_rollback(s3, bucket, target, log=log)
    record_rollback_start(s3, bucket, name, target, log=log)

    request: dict[str, Any] = {"Name": name}
    differs = False
    if running_airflow and target.airflow_version != running_airflow:
        request["AirflowVersion"] = target.airflow_version
        differs = True
        log(f"  airflow         {running_airflow} -> {target.airflow_version}")
    for kind, (key, version) in sorted(target.artifacts.items()):
        path_field, version_field = ARTIFACT_FIELDS[kind]
        current = restore_current(s3, bucket, key, version, log=log)
        request[path_field] = key
        request[version_field] = current
        if (env.get(path_field), env.get(version_field)) != (key, current):
            differs = True
            log(f"  {kind:<15} {env.get(version_field, '-')} -> {current} (the content of {version})")
    dropped = [k for k, (pf, _vf) in ARTIFACT_FIELDS.items() if env.get(pf) and k not in target.artifacts]
    if dropped:
        log(f"  note: {', '.join(dropped)} stay as they are (release {target.release} had none)")
    if differs:
        since = env.get("LastUpdate", {}).get("CreatedAt")
        mwaa.update_environment(**request)
        if not wait:
            log(f"  UpdateEnvironment sent; DAGs not restored yet (--no-wait): run the same rollback again once "
                f"{name} is AVAILABLE, it resumes towards release {target.release}")
            return target
        wait_until_available(mwaa, name, since=since, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep, clock=clock,
                             log=log)
    else:
        log("  Airflow, requirements and plugins already at this release: no environment update")
    restored = restore_dags(s3, bucket, target, workers=workers, log=log)
    return record_release(s3, mwaa, environment=name, bucket=bucket, dags_prefix=target.dags_prefix,
                          manifest_version=restored.manifest_version, action="rollback", restores=target.release,
                          log=log)


class RestApiError(DeployError):
    """An Airflow REST API call through mwaa InvokeRestApi answered with an HTTP error.

    :param status: the Airflow REST API's HTTP status (``RestApiStatusCode``; None when MWAA itself refused)
    """

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def _detail(response: Any) -> str:
    """The Airflow error's ``detail``/``title`` (problem+json), else the whole body, kept short."""
    found = (response.get("detail") or response.get("title") or response) if isinstance(response, dict) else response
    text = str(found) if found not in (None, "", {}) else "(no body)"
    return text if len(text) <= 300 else text[:297] + "..."


def rest_call(mwaa: Any, name: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One InvokeRestApi call; an HTTP error becomes :class:`RestApiError` with the Airflow status.

    The real API answers 4xx/5xx from Airflow as ``RestApiClientException`` / ``RestApiServerException``
    (botocore ClientErrors carrying ``RestApiStatusCode`` and ``RestApiResponse``); MWAA's own refusals
    (AccessDenied, ResourceNotFound for the environment, Validation) are ClientErrors without them.
    """
    from botocore.exceptions import ClientError

    if len(path) > MAX_REST_PATH:
        raise DeployError(f"smoke: REST path {path!r} is longer than {MAX_REST_PATH} characters (API limit)")
    kwargs: dict[str, Any] = {"Name": name, "Method": method, "Path": path}
    if body is not None:
        kwargs["Body"] = body
    try:
        resp = mwaa.invoke_rest_api(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        status = exc.response.get("RestApiStatusCode")
        if status is None:
            raise RestApiError(f"{method} {path} refused by MWAA ({code}): {error.get('Message', '')}", None) from exc
        raise RestApiError(
            f"{method} {path} -> HTTP {status} ({code}): {_detail(exc.response.get('RestApiResponse'))}", int(status)
        ) from exc
    status = resp.get("RestApiStatusCode", 0)
    if status >= 400:  # not how the API reports errors, but never mistake one for success
        raise RestApiError(f"{method} {path} -> HTTP {status}: {_detail(resp.get('RestApiResponse'))}", status)
    return resp.get("RestApiResponse")


def smoke_run(
    mwaa: Any,
    *,
    name: str,
    dag_id: str,
    run_id: str,
    poll_s: float = 15.0,
    timeout_s: float = 1800.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] = print,
) -> str:
    """Unpause and trigger a smoke DAG through mwaa InvokeRestApi (Airflow REST API) and wait for its result.

    Right after an update the DAG processor may not have parsed the DAG yet: while unpausing answers 404, it
    is retried every ``poll_s`` until ``timeout_s`` (which bounds the whole smoke run). Any other HTTP error,
    and a 404 still there at the timeout, raises a DeployError naming the DAG and the status.

    :param mwaa: boto3 MWAA client
    :param name: environment name
    :param dag_id: the smoke DAG
    :param run_id: DAG run id to create (short: the REST path is limited to 64 characters)
    :param poll_s: seconds between polls
    :param timeout_s: give up after this long (waiting for the DAG to appear and for the run, together)
    :param sleep: injectable sleep
    :param clock: injectable clock
    :param log: where lines go
    """
    run_path = f"/dags/{dag_id}/dagRuns/{run_id}"
    if len(run_path) > MAX_REST_PATH:
        raise DeployError(f"run_id/dag_id: {run_path!r} exceeds the {MAX_REST_PATH}-character REST path limit")
    start = clock()

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return rest_call(mwaa, name, method, path, body)
        except RestApiError as exc:
            raise DeployError(f"smoke: DAG {dag_id} on {name}: {exc}") from exc

    while True:
        try:
            rest_call(mwaa, name, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
            break
        except RestApiError as exc:
            waited = clock() - start
            if exc.status != 404:
                raise DeployError(f"smoke: DAG {dag_id} on {name}: {exc}") from exc
            if waited >= timeout_s:
                raise DeployError(
                    f"smoke: DAG {dag_id} on {name}: still not found (HTTP 404) after {timeout_s:.0f}s; check the "
                    f"DAG processor logs for an import error and that {dag_id} is in the bundle's dags/"
                ) from exc
            log(f"  [{waited:6.0f}s] {dag_id}: not parsed yet (HTTP 404), retrying in {poll_s:.0f}s")
            sleep(poll_s)
    call("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    log(f"smoke: triggered {dag_id} run {run_id}")
    state = ""
    while True:
        run = call("GET", run_path) or {}
        new_state = run.get("state", "?")
        if new_state != state:
            log(f"  [{clock() - start:6.0f}s] {dag_id} {run_id}: {new_state}")
            state = new_state
        if state == "success":
            return state
        if state == "failed":
            raise DeployError(f"smoke: {dag_id} run {run_id} failed; see its task logs in the Airflow UI")
        if clock() - start >= timeout_s:
            raise DeployError(f"smoke: {dag_id} run {run_id} still {state} after {timeout_s:.0f}s")
        sleep(poll_s)
