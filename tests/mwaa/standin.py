"""A stateful Amazon MWAA stand-in over HTTP, backed by a moto S3 server, for the real boto3 ``mwaa`` client.

Point the client at it with ``endpoint_url=standin.endpoint`` and ``Config(inject_host_prefix=False)`` (botocore
otherwise prefixes the host with ``api.``/``env.``); :meth:`MwaaStandIn.client` builds one. The wire protocol is
rest-json as botocore's service model for ``mwaa`` defines it: routes, field names and types come from that model,
every request is validated against its input shape and every answer against its output shape (a stand-in bug is an
``InternalServerException`` recorded in ``server_errors``, never a silently wrong answer). Timestamps are epoch
seconds; errors carry ``x-amzn-ErrorType`` and a JSON ``message``.

What is modelled (as MWAA documents it):

* Lifecycle. CreateEnvironment -> ``CREATING`` -> ``AVAILABLE`` | ``CREATE_FAILED``. UpdateEnvironment ->
  ``UPDATING`` -> ``AVAILABLE``, or ``ROLLING_BACK`` -> ``UPDATE_FAILED`` with ``LastUpdate.Error``; a failed update
  rolls back (paths, object versions, AirflowVersion and every other field return to the previous values).
  DeleteEnvironment -> ``DELETING`` -> gone (ResourceNotFoundException). States move with time (``update_seconds``,
  ``rollback_seconds``), never instantly, and an install slower than ``update_seconds`` keeps the environment in
  its transitional state until it is done. While an update runs, GetEnvironment shows the requested configuration;
  ``LastUpdate`` is ``PENDING`` (also while rolling back), then ``SUCCESS`` or ``FAILED``, with ``CreatedAt`` and
  ``Source``. A create writes ``LastUpdate`` too (CreatedAt = the environment's CreatedAt), as MWAA does.
* Synchronous refusals (ValidationException naming the reason): an update unless the environment is ``AVAILABLE``
  or ``UPDATE_FAILED``; an AirflowVersion not in ``supported_versions``; a change of major version other than
  2.11.x <-> 3.x (MWAA changes minor versions in place, up or down, as its user guide documents); a source bucket
  that does not exist or is not versioned; an object version given for an artifact without a path; InvokeRestApi
  paths over 64 characters; requests that do not fit the service model. Fields not given keep their values; a path
  given without an object version means the latest version at that moment (recorded, so GetEnvironment shows it);
  an empty path removes the artifact.
* The install, at each create/update (and at each :meth:`MwaaStandIn.start_worker`): requirements.txt, plugins.zip
  and the startup script are read at the REQUESTED object versions (a missing object or version fails it);
  ``DagS3Path``'s objects are taken as they are at that moment (synchronously, before the API call answers); both
  are laid out in a temp dir standing for ``/usr/local/airflow/{dags,plugins}`` (plugins.zip unzipped, a bad zip
  fails); every path requirements.txt names under ``/usr/local/airflow`` (``-r``, ``-c/--constraint``,
  ``-f/--find-links``, ``-e``, direct paths and ``file://`` URLs, recursively through the files it includes) is
  rewritten into the temp dir, and one that does not exist there fails the install the way pip does ("Could not
  open requirements file"), as does any other absolute path (it does not exist on an MWAA worker); the startup
  script is checked with ``bash -n``; then pip's resolver runs as a dry run on ``python`` (default: pyenv's 3.12,
  MWAA's Python)::

      python -m pip install --dry-run --ignore-installed --disable-pip-version-check --quiet --report R \\
          -r <localized requirements.txt> apache-airflow==<AirflowVersion>

  (MWAA installs the requirements on top of its Airflow; ``--report`` only records what was resolved). pip's error
  lines (``WARNING:`` lines dropped, temp paths shown as MWAA paths) become ``LastUpdate.Error.ErrorMessage``.
  Every failure has the ErrorCode ``INCORRECT_CONFIGURATION``, the one code MWAA is seen to report for failed
  updates; the stage that failed is in the message and in :class:`InstallRecord.stage`.
* pip's verdicts are memoized in-process (all stand-ins of a test session share them), keyed by a hash of the exact
  resolver input: the requirements text, the content of every file and folder it references, the Airflow version
  (or none), the interpreter. Measured on this machine (pip 23.2, Python 3.12): resolving ``six`` alone takes
  0.5-0.9 s; the same set on top of ``apache-airflow==3.3.1`` takes about 22 s whether pip's cache is cold or warm
  (it is CPU-bound: pip walks Airflow's whole dependency tree), and a pin conflicting with one of Airflow's own
  dependencies about 31 s. So ``with_airflow`` (default True, as MWAA does it) can be turned off for tests whose
  sets do not interact with Airflow's own pins; a test that keeps it is slow and says so.
* Workers that start later (autoscaling, replacement) reinstall: :meth:`MwaaStandIn.start_worker` installs the
  environment's CURRENT configured versions with dags/ AS IT IS NOW, so a requirements.txt that references
  ``/usr/local/airflow/dags/...`` drifts or breaks when dags/ changes, one that references plugins.zip does not.
* InvokeRestApi answers as Airflow 3's REST API (v2; paths relative to its root, e.g. ``/dags/{dag_id}``), only
  once the environment has completed an install: the DAG bag is the ``.py`` files under the running DagS3Path in S3
  at the time of the call, skipping what ``.airflowignore`` excludes (glob syntax with Airflow's own rules, via
  pathspec's gitwildmatch) and files Airflow's safe mode skips (no "airflow" and "dag"/"asset" in them); a file
  becomes visible ``parse_seconds`` after its LastModified. DAG ids are found by ``ast``: ``DAG("id")``,
  ``DAG(dag_id=...)``, ``@dag`` (dag_id or the function name; the function must be called at import time). New
  DAGs start paused (``core.dags_are_paused_at_creation``, or the DAG's ``is_paused_upon_creation``); a DAG whose
  file went away is ``is_stale``. Routes: ``GET /dags``, ``GET|PATCH /dags/{id}``, ``GET|POST /dags/{id}/dagRuns``,
  ``GET /dags/{id}/dagRuns/{run_id}``, ``GET|POST /variables``, ``GET|PATCH|DELETE /variables/{key}``,
  ``GET /importErrors``, ``GET /version``; Airflow's bodies, status codes and ``detail`` messages (422 for bodies
  its strict models reject, 409 for duplicates, 404, 405). A run stays ``queued`` while its DAG is paused, then
  walks ``queued -> running -> success`` over ``run_seconds`` (``failed`` for DAGs given to
  :meth:`MwaaStandIn.fail_dag_runs`). Airflow's 4xx come back as ``RestApiClientException``, 5xx as
  ``RestApiServerException``, with ``RestApiStatusCode`` and ``RestApiResponse``.

What is NOT modelled: no scheduler, executor or task runs (a run's outcome is the clock and ``fail_dag_runs``); DAG
files are parsed by AST, never imported (an import error is a SyntaxError only; a DAG built dynamically or with a
non-literal id is invisible); the startup script is syntax-checked, not run; plugins are unzipped, not loaded; pip
resolves, nothing is installed, and on this machine's index and pip config rather than MWAA's; no IAM, VPC,
KMS, CloudWatch, web login tokens, tagging, maintenance windows or worker counts (stored and echoed only);
ListEnvironments pages by a plain index token; one region and account.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MWAA_ROOT = "/usr/local/airflow"
DAGS_ROOT = f"{MWAA_ROOT}/dags"
PLUGINS_ROOT = f"{MWAA_ROOT}/plugins"
# Where MWAA puts requirements.txt and the startup script on its containers (relative -r/-c resolve from here).
REQUIREMENTS_ROOT = f"{MWAA_ROOT}/requirements"
STARTUP_ROOT = f"{MWAA_ROOT}/startup"
# The error code MWAA reports for failed updates (its detail lives in CloudWatch); the stage is in the message.
INSTALL_ERROR_CODE = "INCORRECT_CONFIGURATION"
ACCOUNT = "123456789012"
MAX_REST_PATH = 64
OPERATIONS = (
    "CreateEnvironment", "GetEnvironment", "UpdateEnvironment", "DeleteEnvironment", "ListEnvironments",
    "InvokeRestApi",
)
ARTIFACTS = {
    "requirements": ("RequirementsS3Path", "RequirementsS3ObjectVersion"),
    "plugins": ("PluginsS3Path", "PluginsS3ObjectVersion"),
    "startup_script": ("StartupScriptS3Path", "StartupScriptS3ObjectVersion"),
}
READY_TO_UPDATE = ("AVAILABLE", "UPDATE_FAILED")
_LOG_MODULES = ("DagProcessingLogs", "SchedulerLogs", "WebserverLogs", "WorkerLogs", "TaskLogs")
# Airflow's secrets masker hides variable values whose key names one of these (DEFAULT_SENSITIVE_FIELDS).
_SENSITIVE = (
    "access_token", "api_key", "apikey", "authorization", "passphrase", "passwd", "password", "private_key",
    "secret", "token", "keyfile_dict", "service_account",
)


def default_python() -> str:
    """pyenv's Python 3.12 (MWAA's Python for Airflow 3) when installed, else this interpreter."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    return found[-1] if found else sys.executable


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ServiceError(Exception):
    """An MWAA error answer: the modelled exception shape's name, its message, extra modelled fields."""

    def __init__(self, code: str, message: str, **fields: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields


def _validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def _not_found(name: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", f"Environment {name} not found")


class RestError(Exception):
    """An Airflow REST API error answer (status and body)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.body = {"detail": detail}


def _unprocessable(loc: list[str], msg: str, kind: str, value: Any = None) -> RestError:
    return RestError(422, [{"type": kind, "loc": loc, "msg": msg, "input": value}])


# ---------------------------------------------------------------------------------------------------- install


@dataclass(frozen=True)
class InstallRecord:
    """One install attempt (an environment create/update, or a worker starting).

    :param environment: environment name
    :param trigger: ``create``, ``update`` or ``worker``
    :param airflow_version: the Airflow the requirements were installed on
    :param artifacts: kind (``requirements``/``plugins``/``startup_script``) -> (S3 key, object version) read
    :param dags: S3 key -> VersionId of every object under DagS3Path at that moment
    :param requirements_text: requirements.txt as read from S3 (None when there was none)
    :param localized_requirements: what pip read instead: the same text with ``/usr/local/airflow/`` rewritten into
        the install's layout, shown as ``<layout>/`` (None when pip did not run)
    :param with_airflow: whether ``apache-airflow==<airflow_version>`` was part of the resolve
    :param referenced: every ``/usr/local/airflow`` (or other absolute) path requirements.txt names, recursively,
        -> sha256 of its content (a folder: of its listing and files; None: it did not exist)
    :param resolved: what pip's resolver picked, canonical name -> version (with Airflow's own tree when it was in)
    :param verdict: ``ok`` or ``failed``
    :param stage: what failed: ``s3``, ``plugins``, ``startup_script``, ``requirements`` (a named path) or ``resolve``
    :param error_code: LastUpdate.Error.ErrorCode on failure
    :param error: LastUpdate.Error.ErrorMessage on failure
    :param memo_hit: pip's verdict came from the in-process memo
    :param pip_seconds: how long pip's resolve took (the memoized run's time on a hit; None when pip did not run)
    :param started_at: epoch seconds
    :param seconds: the whole install's wall time
    """

    environment: str
    trigger: str
    airflow_version: str
    artifacts: dict[str, tuple[str, str | None]]
    dags: dict[str, str]
    requirements_text: str | None
    localized_requirements: str | None
    with_airflow: bool
    referenced: dict[str, str | None]
    resolved: dict[str, str]
    verdict: str
    stage: str | None
    error_code: str | None
    error: str | None
    memo_hit: bool
    pip_seconds: float | None
    started_at: float
    seconds: float

    @property
    def ok(self) -> bool:
        """The install succeeded."""
        return self.verdict == "ok"

    @property
    def dags_keys(self) -> tuple[str, ...]:
        """The S3 keys under DagS3Path this install saw, sorted."""
        return tuple(sorted(self.dags))

    @property
    def resolved_text(self) -> str:
        """The resolved set as ``name==version`` lines (sorted)."""
        return "".join(f"{n}=={v}\n" for n, v in sorted(self.resolved.items()))


@dataclass(frozen=True)
class _Verdict:
    ok: bool
    errors: str
    resolved: dict[str, str]
    seconds: float


# pip verdicts for the whole test session, keyed by a hash of the exact resolver input.
_VERDICTS: dict[str, _Verdict] = {}
_INFLIGHT: dict[str, threading.Event] = {}
_VERDICT_LOCK = threading.Lock()
_PIP_REPORT: dict[str, bool] = {}


def clear_resolver_memo() -> None:
    """Forget every memoized pip verdict (tests that measure a cold resolve call this)."""
    with _VERDICT_LOCK:
        _VERDICTS.clear()


def _pip_has_report(python: str) -> bool:
    with _VERDICT_LOCK:
        if python in _PIP_REPORT:
            return _PIP_REPORT[python]
    proc = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"pip (\d+)\.(\d+)", proc.stdout)
    has = match is not None and (int(match.group(1)), int(match.group(2))) >= (22, 2)  # --report came in 22.2
    with _VERDICT_LOCK:
        _PIP_REPORT[python] = has
    return has


@dataclass
class _Snapshot:
    """What an install read from S3, taken at one moment."""

    bucket: str
    dag_prefix: str
    artifacts: dict[str, tuple[str, str | None]]
    content: dict[str, bytes]
    dags: dict[str, tuple[bytes, str]]
    error: str | None = None


@dataclass(frozen=True)
class _Ref:
    line: int
    option: str
    target: str  # as written
    mwaa_path: str | None  # absolute path on the worker; None for URLs and names pip resolves itself


_REF_OPTIONS = {
    "-r": "-r", "--requirement": "-r", "-c": "--constraint", "--constraint": "--constraint",
    "-f": "--find-links", "--find-links": "--find-links", "-e": "-e", "--editable": "-e",
}


def _references(text: str, base_dir: str) -> list[_Ref]:
    """Paths a requirements file names, in pip's syntax (comments are ``#`` at a line start or after a space)."""
    refs: list[_Ref] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            option: str | None = None
            target = ""
            if tok in _REF_OPTIONS and i + 1 < len(tokens):
                option, target = _REF_OPTIONS[tok], tokens[i + 1]
                i += 2
            elif tok.startswith("--") and tok.split("=", 1)[0] in _REF_OPTIONS and "=" in tok:
                option, target = _REF_OPTIONS[tok.split("=", 1)[0]], tok.split("=", 1)[1]
                i += 1
            elif not tok.startswith("--") and tok[:2] in _REF_OPTIONS and len(tok) > 2:
                option, target = _REF_OPTIONS[tok[:2]], tok[2:]
                i += 1
            else:
                i += 1
                if tok.startswith("/") or tok.startswith("file:") or MWAA_ROOT + "/" in tok:
                    option, target = "path", tok
            if option is None:
                continue
            path = target[len("file://"):] if target.startswith("file://") else target
            path = path[len("file:"):] if path.startswith("file:") else path
            if "://" in path:
                refs.append(_Ref(number, option, target, None))  # an index/URL: pip's business
            elif path.startswith("/"):
                refs.append(_Ref(number, option, target, posixpath.normpath(path)))
            elif option in {"-r", "--constraint"}:
                refs.append(_Ref(number, option, target, posixpath.normpath(posixpath.join(base_dir, path))))
    return refs


def _tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(path).as_posix().encode() + b"\0" + _sha(p.read_bytes()).encode() + b"\n")
    return "tree:" + digest.hexdigest()


class _InstallFailed(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


# ---------------------------------------------------------------------------------------------------- DAG parsing


@dataclass(frozen=True)
class ParsedDag:
    """A DAG found in a file by AST.

    :param dag_id: its id
    :param fileloc: the file, relative to DagS3Path
    :param tags: literal ``tags``
    :param description: literal ``description``
    :param display_name: literal ``dag_display_name``
    :param paused_upon_creation: literal ``is_paused_upon_creation``
    """

    dag_id: str
    fileloc: str
    tags: tuple[str, ...] = ()
    description: str | None = None
    display_name: str | None = None
    paused_upon_creation: bool | None = None


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _called_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _import_time_calls(body: list[ast.stmt]) -> set[str]:
    """Names called by code that runs when the module is imported (not inside defs, not under __main__)."""
    names: set[str] = set()

    def collect(node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                names.add(sub.func.id)

    def visit(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for deco in st.decorator_list:  # decorators run at import time, bodies do not
                    collect(deco)
                continue
            if isinstance(st, ast.If) and "__main__" in ast.dump(st.test):
                visit(st.orelse)
                continue
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.ExceptHandler):
                    visit(child.body)
                elif not isinstance(child, ast.stmt):
                    collect(child)
            for attr in ("body", "orelse", "finalbody"):
                inner = getattr(st, attr, None)
                if isinstance(inner, list):
                    visit([s for s in inner if isinstance(s, ast.stmt)])

    visit(body)
    return names


def _dag_from_kwargs(dag_id: str, rel: str, keywords: list[ast.keyword]) -> ParsedDag:
    kw = {k.arg: k.value for k in keywords if k.arg}
    tags = _literal(kw.get("tags"))
    paused = _literal(kw.get("is_paused_upon_creation"))
    description = _literal(kw.get("description"))
    display = _literal(kw.get("dag_display_name"))
    return ParsedDag(
        dag_id,
        rel,
        tuple(sorted(str(t) for t in tags)) if isinstance(tags, (list, tuple, set)) else (),
        description if isinstance(description, str) else None,
        display if isinstance(display, str) else None,
        paused if isinstance(paused, bool) else None,
    )


def parse_dag_file(source: str, rel: str) -> tuple[list[ParsedDag], str | None]:
    """The DAGs a file defines, found by AST (never imported), and its import error (a SyntaxError) if any.

    :param source: the file's text
    :param rel: its path relative to the DAGs folder
    """
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as exc:
        return [], f"{type(exc).__name__}: {exc.msg} ({rel}, line {exc.lineno})"
    found: list[ParsedDag] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node.func) == "DAG":
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            dag_id = _literal(kw.get("dag_id") if "dag_id" in kw else (node.args[0] if node.args else None))
            if isinstance(dag_id, str) and dag_id:
                found.append(_dag_from_kwargs(dag_id, rel, node.keywords))
    called = _import_time_calls(tree.body)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name not in called:
            continue
        for deco in node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            if _called_name(target) != "dag":
                continue
            keywords = deco.keywords if isinstance(deco, ast.Call) else []
            kw = {k.arg: k.value for k in keywords if k.arg}
            dag_id = _literal(kw["dag_id"]) if "dag_id" in kw else node.name
            if isinstance(dag_id, str) and dag_id:
                found.append(_dag_from_kwargs(dag_id, rel, keywords))
    return found, None


def _might_contain_dag(content: bytes) -> bool:
    """Airflow's safe-mode heuristic (``might_contain_dag_via_default_heuristic``)."""
    low = content.lower()
    return b"airflow" in low and (b"dag" in low or b"asset" in low)


def _compile_ignore(pattern: str, relative_to: str) -> tuple[Any, str | None, bool] | None:
    """One ``.airflowignore`` line as Airflow's glob rule: (pattern, anchor dir or None, dir-only)."""
    if pattern.strip() == "/":
        return None
    anchored = relative_to if (pattern.startswith("/") or "/" in pattern.rstrip("/")) else None
    raw = pattern.lstrip("!")
    dir_only = raw.rstrip() != raw.rstrip().rstrip("/")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pathspec.patterns import GitWildMatchPattern
        compiled: Any = GitWildMatchPattern(pattern)
    except ImportError:  # pragma: no cover - pathspec comes with Airflow
        compiled = None
    return (compiled, anchored, dir_only) if compiled is not None else None


def _ignored(rel: str, is_dir: bool, rules: list[tuple[Any, str | None, bool]]) -> bool:
    matched = False
    for pattern, anchor, dir_only in rules:
        if dir_only and not is_dir:
            continue
        if anchor is None:  # an unanchored pattern matches the name at any depth
            path = posixpath.basename(rel)
        elif anchor:
            path = posixpath.relpath(rel, anchor)
        else:
            path = rel
        if is_dir:
            path += "/"
        if pattern.include is not None and pattern.match_file(path) is not None:
            matched = pattern.include
    return matched


def dag_bag_files(keys: list[str], ignore_files: dict[str, str]) -> list[str]:
    """The files (relative to the DAGs folder) Airflow would consider, after every ``.airflowignore`` on the way.

    :param keys: every file under the DAGs folder, relative to it
    :param ignore_files: ``.airflowignore`` path (relative) -> its text
    """
    tree: dict[str, tuple[set[str], set[str]]] = {}
    for key in keys:
        parts = key.split("/")
        for depth in range(len(parts)):
            parent = "/".join(parts[:depth])
            dirs, files = tree.setdefault(parent, (set(), set()))
            if depth == len(parts) - 1:
                files.add(key)
            else:
                dirs.add("/".join(parts[: depth + 1]))
    out: list[str] = []
    stack: list[tuple[str, list[tuple[Any, str | None, bool]]]] = [("", [])]
    while stack:
        folder, inherited = stack.pop()
        rules = list(inherited)
        ignore_key = f"{folder}/.airflowignore" if folder else ".airflowignore"
        if ignore_key in ignore_files:
            for line in ignore_files[ignore_key].split("\n"):
                line = re.sub(r"\s*#.*", "", line)
                if line:
                    rule = _compile_ignore(line, folder)
                    if rule is not None:
                        rules.append(rule)
        dirs, files = tree.get(folder, (set(), set()))
        out += [f for f in sorted(files) if posixpath.basename(f) != ".airflowignore" and not _ignored(f, False, rules)]
        stack += [(d, rules) for d in sorted(dirs, reverse=True) if not _ignored(d, True, rules)]
    return sorted(out)


# ---------------------------------------------------------------------------------------------------- state


@dataclass
class _Op:
    kind: str  # create | update | delete
    started: float
    reveal_at: float
    requested: dict[str, Any]
    previous: dict[str, Any] | None = None
    record: InstallRecord | None = None
    done_at: float | None = None
    thread: threading.Thread | None = None
    strategy: str | None = None


@dataclass
class _DagState:
    dag_id: str
    is_paused: bool
    fileloc: str
    first_parsed: float
    last_parsed: float
    parsed: ParsedDag
    unpaused_since: float | None = None
    stale: bool = False


@dataclass
class _Run:
    dag_id: str
    run_id: str
    logical_date: float | None
    queued_at: float
    run_after: float
    conf: dict[str, Any]
    note: str | None
    data_interval: tuple[float, float] | None
    start: float | None = None
    final: str | None = None


@dataclass
class _Env:
    name: str
    arn: str
    created_at: float
    config: dict[str, Any]
    status: str
    last_update: dict[str, Any] | None = None
    op: _Op | None = None
    running: dict[str, Any] | None = None
    dags: dict[str, _DagState] = field(default_factory=dict)
    import_errors: dict[str, tuple[float, str]] = field(default_factory=dict)
    runs: dict[tuple[str, str], _Run] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- the stand-in


class MwaaStandIn:
    """A stateful MWAA over HTTP on 127.0.0.1, reading its environments' buckets from a moto S3 server.

    :param s3_endpoint: the moto S3 server's URL (``ThreadedMotoServer``)
    :param supported_versions: the Airflow versions MWAA offers (CreateEnvironment's default is the newest)
    :param update_seconds: how long CREATING/UPDATING/DELETING last at least (an install may take longer)
    :param rollback_seconds: how long ROLLING_BACK lasts after a failed update (default: half of update_seconds)
    :param run_seconds: how long a DAG run takes from its start (a third queued, the rest running)
    :param parse_seconds: how long after its LastModified a DAG file becomes visible to the REST API
    :param python: interpreter whose pip resolves (default: :func:`default_python`)
    :param with_airflow: resolve the requirements on top of ``apache-airflow==<AirflowVersion>`` (about 22 s a set
        with Airflow 3.3.1; off: seconds or less)
    :param region: the region in ARNs
    :param pip_timeout: seconds before a resolve counts as a failure (not memoized)
    """

    def __init__(
        self,
        s3_endpoint: str,
        *,
        supported_versions: tuple[str, ...] = ("3.3.1",),
        update_seconds: float = 0.5,
        rollback_seconds: float | None = None,
        run_seconds: float = 0.3,
        parse_seconds: float = 0.0,
        python: str | None = None,
        with_airflow: bool = True,
        region: str = "us-east-1",
        pip_timeout: float = 900.0,
    ) -> None:
        if not supported_versions:
            raise ValueError("supported_versions: give at least one Airflow version")
        if min(update_seconds, run_seconds, parse_seconds) < 0:
            raise ValueError("update_seconds/run_seconds/parse_seconds: must be >= 0")
        self.s3_endpoint = s3_endpoint
        self.supported_versions = tuple(supported_versions)
        self.update_seconds = update_seconds
        self.rollback_seconds = update_seconds / 2 if rollback_seconds is None else rollback_seconds
        self.run_seconds = run_seconds
        self.parse_seconds = parse_seconds
        self.python = python or default_python()
        self.with_airflow = with_airflow
        self.region = region
        self.pip_timeout = pip_timeout
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.server_errors: list[str] = []
        self._lock = threading.RLock()
        self._envs: dict[str, _Env] = {}
        self._installs: dict[str, list[InstallRecord]] = {}
        self._failing: set[tuple[str | None, str]] = set()
        self._threads: list[threading.Thread] = []
        self._file_cache: dict[tuple[str, str], bytes] = {}
        self._server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.endpoint = ""
        import boto3
        import botocore.session
        from botocore.config import Config

        self._s3 = boto3.client(
            "s3", endpoint_url=s3_endpoint, region_name=region, aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"max_attempts": 2}),
        )
        self._model = botocore.session.get_session().get_service_model("mwaa")
        self._routes: list[tuple[str, re.Pattern[str], str]] = []
        for op in OPERATIONS:
            http = self._model.operation_model(op).http
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(http["requestUri"]))
            self._routes.append((http["method"], re.compile(f"^{pattern}$"), op))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Serve on a free port; return the endpoint URL."""
        if self._server is not None:
            return self.endpoint
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._serve_thread = threading.Thread(target=self._server.serve_forever, name="mwaa-standin", daemon=True)
        self._serve_thread.start()
        return self.endpoint

    def stop(self, timeout: float = 600.0) -> None:
        """Stop serving and wait for installs in flight (pip runs are not left behind)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        deadline = time.time() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.time()))

    def __enter__(self) -> MwaaStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> Any:
        """A real boto3 ``mwaa`` client pointed at this stand-in (no host prefix, dummy credentials, no retries)."""
        import boto3
        from botocore.config import Config

        if not self.endpoint:
            raise RuntimeError("start() the stand-in first")
        kwargs.setdefault("config", Config(inject_host_prefix=False, retries={"max_attempts": 1}))
        return boto3.client(
            "mwaa", endpoint_url=self.endpoint, region_name=self.region, aws_access_key_id="testing",
            aws_secret_access_key="testing", **kwargs,
        )

    # ------------------------------------------------------------------ introspection for tests

    def installs(self, name: str) -> list[InstallRecord]:
        """Every install attempt of an environment (creates, updates, workers), oldest first."""
        with self._lock:
            return list(self._installs.get(name, []))

    def variables(self, name: str) -> dict[str, str]:
        """The environment's Airflow Variables, key -> stored value."""
        with self._lock:
            env = self._require(name)
            return {k: v["value"] for k, v in env.variables.items()}

    def dag_runs(self, name: str) -> list[dict[str, Any]]:
        """The environment's DAG runs as the REST API shows them, in trigger order."""
        with self._lock:
            env = self._require(name)
            now = time.time()
            return [self._run_json(env, run, now) for run in env.runs.values()]

    def status(self, name: str) -> str:
        """The environment's status now."""
        with self._lock:
            return self._require(name).status

    def fail_dag_runs(self, dag_id: str, *, environment: str | None = None, fail: bool = True) -> None:
        """Runs of ``dag_id`` (in one environment, or all) end ``failed`` from now on (``fail=False`` undoes it)."""
        with self._lock:
            if fail:
                self._failing.add((environment, dag_id))
            else:
                self._failing.discard((environment, dag_id))

    def settle(self, name: str, timeout: float = 600.0) -> str:
        """Wait until the environment's create/update/delete has finished; return its status (``DELETED``)."""
        deadline = time.time() + timeout
        while True:
            with self._lock:
                env = self._envs.get(name)
                if env is None:
                    return "DELETED"
                self._advance(env, time.time())
                if env.op is None:
                    return env.status
                status = env.status
            if time.time() >= deadline:
                raise TimeoutError(f"environment {name} still {status} after {timeout:.0f}s")
            time.sleep(0.05)

    def start_worker(self, name: str) -> InstallRecord:
        """A worker that starts now (autoscaling): it installs the environment's current configured versions with
        dags/ as it is NOW, and its record is returned (and kept in :meth:`installs`). The environment's status
        does not change: on MWAA such a worker just fails to come up, or comes up with different packages."""
        with self._lock:
            env = self._require(name)
            self._advance(env, time.time())
            config = dict(env.running or env.config)
        record = self._install(name, "worker", self._snapshot(config), config)
        with self._lock:
            self._installs.setdefault(name, []).append(record)
        return record

    # ------------------------------------------------------------------ state machine

    def _require(self, name: str) -> _Env:
        env = self._envs.get(name)
        if env is None:
            raise _not_found(name)
        return env

    def _advance(self, env: _Env, now: float) -> None:
        """Move the environment along its current operation (under the lock)."""
        op = env.op
        if op is None:
            return
        if op.kind == "delete":
            if now >= op.reveal_at:
                env.status = "DELETED"
                env.op = None
                self._envs.pop(env.name, None)
            return
        if op.record is None or op.done_at is None or now < op.reveal_at:
            return
        record = op.record
        error = {"ErrorCode": record.error_code or INSTALL_ERROR_CODE, "ErrorMessage": record.error or ""}
        if op.kind == "create":
            env.op = None
            assert env.last_update is not None
            if record.ok:
                env.status = "AVAILABLE"
                env.running = dict(env.config)
                env.last_update = {**env.last_update, "Status": "SUCCESS"}
            else:
                env.status = "CREATE_FAILED"
                env.last_update = {**env.last_update, "Status": "FAILED", "Error": error}
            return
        assert env.last_update is not None
        if record.ok:
            env.op = None
            env.status = "AVAILABLE"
            env.running = dict(env.config)
            env.last_update = {**env.last_update, "Status": "SUCCESS"}
            return
        assert op.previous is not None
        env.config = dict(op.previous)
        if now < max(op.reveal_at, op.done_at) + self.rollback_seconds:
            env.status = "ROLLING_BACK"
            return
        env.op = None
        env.status = "UPDATE_FAILED"
        env.last_update = {**env.last_update, "Status": "FAILED", "Error": error}

    def _begin(self, env: _Env, op: _Op) -> None:
        """Snapshot S3 now, then install in the background (the verdict shows once reveal_at passed)."""
        snapshot = self._snapshot(op.requested)

        def work() -> None:
            try:
                record = self._install(env.name, op.kind, snapshot, op.requested)
            except Exception:  # a stand-in bug: fail the install loudly rather than hang UPDATING
                message = traceback.format_exc()
                self.server_errors.append(message)
                record = self._record(env.name, op.kind, snapshot, op.requested, time.time(), None, {}, {},
                                      ("internal", f"stand-in error: {message[-500:]}"), False, None)
            with self._lock:
                self._installs.setdefault(env.name, []).append(record)
                op.record = record
                op.done_at = time.time()

        thread = threading.Thread(target=work, name=f"mwaa-install-{env.name}", daemon=True)
        op.thread = thread
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------ S3 reads

    def _bucket(self, config: dict[str, Any]) -> str:
        return str(config["SourceBucketArn"]).split(":::", 1)[-1]

    def _check_bucket(self, arn: str) -> str:
        from botocore.exceptions import ClientError

        if not re.fullmatch(r"arn:aws(-[a-z]+)?:s3:::[a-z0-9.\-]+", arn):
            raise _validation(f"SourceBucketArn {arn!r} is not an S3 bucket ARN (arn:aws:s3:::BUCKET)")
        bucket = arn.split(":::", 1)[1]
        try:
            versioning = self._s3.get_bucket_versioning(Bucket=bucket).get("Status")
        except ClientError as exc:
            raise _validation(f"Unable to access bucket {bucket}: {exc.response['Error'].get('Code')}") from exc
        if versioning != "Enabled":
            raise _validation(f"Bucket {bucket} must have versioning enabled (it is {versioning or 'never enabled'})")
        return bucket

    def _latest_versions(self, config: dict[str, Any], given: dict[str, Any]) -> None:
        """Pin each artifact path given without an object version to the latest version now."""
        from botocore.exceptions import ClientError

        bucket = self._bucket(config)
        for path_field, version_field in ARTIFACTS.values():
            if path_field in given and version_field not in given and config.get(path_field):
                try:
                    head = self._s3.head_object(Bucket=bucket, Key=config[path_field])
                    config[version_field] = head.get("VersionId")
                except ClientError:
                    config.pop(version_field, None)  # the install will fail on the missing object

    def _snapshot(self, config: dict[str, Any]) -> _Snapshot:
        from botocore.exceptions import ClientError

        bucket = self._bucket(config)
        prefix = str(config.get("DagS3Path", "")).strip("/")
        prefix = prefix + "/" if prefix else ""
        snap = _Snapshot(bucket, prefix, {}, {}, {})
        for kind, (path_field, version_field) in ARTIFACTS.items():
            key = config.get(path_field)
            if not key:
                continue
            version = config.get(version_field)
            snap.artifacts[kind] = (key, version)
            try:
                kwargs = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
                snap.content[kind] = self._s3.get_object(**kwargs)["Body"].read()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                what = f"s3://{bucket}/{key}" + (f" version {version}" if version else "")
                snap.error = snap.error or f"{path_field}: {what} cannot be read ({code})"
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                try:
                    resp = self._s3.get_object(Bucket=bucket, Key=key)
                except ClientError:
                    continue  # deleted between the listing and the read
                snap.dags[key] = (resp["Body"].read(), str(resp.get("VersionId") or obj.get("ETag", "")))
        return snap

    # ------------------------------------------------------------------ the install

    def _record(self, name: str, trigger: str, snap: _Snapshot, config: dict[str, Any], started: float,
                req_text: str | None, referenced: dict[str, str | None], resolved: dict[str, str],
                failure: tuple[str, str] | None, memo_hit: bool, pip_seconds: float | None) -> InstallRecord:
        return InstallRecord(
            environment=name,
            trigger=trigger,
            airflow_version=str(config.get("AirflowVersion", "")),
            artifacts=dict(snap.artifacts),
            dags={k: v for k, (_, v) in snap.dags.items()},
            requirements_text=req_text,
            localized_requirements=(req_text.replace(MWAA_ROOT + "/", "<layout>/")
                                    if req_text is not None and pip_seconds is not None else None),
            with_airflow=self.with_airflow,
            referenced=referenced,
            resolved=resolved,
            verdict="failed" if failure else "ok",
            stage=failure[0] if failure else None,
            error_code=INSTALL_ERROR_CODE if failure else None,
            error=failure[1] if failure else None,
            memo_hit=memo_hit,
            pip_seconds=pip_seconds,
            started_at=started,
            seconds=time.time() - started,
        )

    def _install(self, name: str, trigger: str, snap: _Snapshot, config: dict[str, Any]) -> InstallRecord:
        started = time.time()
        req_bytes = snap.content.get("requirements")
        req_text: str | None = None
        if req_bytes is not None:
            try:
                req_text = req_bytes.decode("utf-8")
            except UnicodeDecodeError:
                req_text = req_bytes.decode("utf-8", "replace")
        referenced: dict[str, str | None] = {}
        resolved: dict[str, str] = {}
        memo_hit, pip_seconds = False, None
        failure: tuple[str, str] | None = None
        try:
            if snap.error:
                raise _InstallFailed("s3", snap.error)
            with tempfile.TemporaryDirectory(prefix="mwaa-standin-") as tmp:
                root = Path(tmp) / "airflow"  # stands for /usr/local/airflow
                self._layout(root, snap)
                if "startup_script" in snap.content:
                    self._check_startup(root, snap)
                if req_text is not None:
                    if req_bytes is not None and b"\0" in req_bytes:
                        raise _InstallFailed("requirements", "requirements.txt is not a text file")
                    verdict, memo_hit, referenced = self._resolve(root, req_text, str(config["AirflowVersion"]),
                                                                  snap)
                    pip_seconds = verdict.seconds
                    resolved = dict(verdict.resolved)
                    if not verdict.ok:
                        version = snap.artifacts["requirements"][1]
                        raise _InstallFailed(
                            "resolve",
                            f"requirements.txt (version {version}): pip could not install the requirements"
                            + (f" on Airflow {config['AirflowVersion']}" if self.with_airflow else "")
                            + f":\n{verdict.errors}",
                        )
        except _InstallFailed as exc:
            failure = (exc.stage, str(exc))
        return self._record(name, trigger, snap, config, started, req_text, referenced, resolved, failure,
                            memo_hit, pip_seconds)

    def _layout(self, root: Path, snap: _Snapshot) -> None:
        dags = root / "dags"
        dags.mkdir(parents=True)
        for key, (data, _) in snap.dags.items():
            rel = key[len(snap.dag_prefix):]
            target = (dags / rel).resolve()
            if not str(target).startswith(str(dags.resolve()) + os.sep):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        plugins = root / "plugins"
        plugins.mkdir()
        if "plugins" in snap.content:
            key, version = snap.artifacts["plugins"]
            try:
                with zipfile.ZipFile(io.BytesIO(snap.content["plugins"])) as zf:
                    for member in zf.namelist():
                        if member.startswith("/") or ".." in member.split("/"):
                            raise _InstallFailed("plugins", f"plugins.zip ({key} version {version}): unsafe entry "
                                                 f"{member!r}")
                    zf.extractall(plugins)
            except zipfile.BadZipFile as exc:
                raise _InstallFailed(
                    "plugins", f"plugins.zip ({key} version {version}) is not a valid zip file: {exc}"
                ) from exc
        (root / "requirements").mkdir()
        (root / "startup").mkdir()

    def _check_startup(self, root: Path, snap: _Snapshot) -> None:
        key, version = snap.artifacts["startup_script"]
        script = root / "startup" / "startup.sh"
        script.write_bytes(snap.content["startup_script"])
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            errors = proc.stderr.replace(str(script), f"{STARTUP_ROOT}/{posixpath.basename(key)}").strip()
            raise _InstallFailed("startup_script", f"startup script ({key} version {version}) has syntax errors:\n"
                                 f"{errors}")

    def _local(self, root: Path, mwaa_path: str) -> Path | None:
        if mwaa_path == MWAA_ROOT or not mwaa_path.startswith(MWAA_ROOT + "/"):
            return None
        return root / mwaa_path[len(MWAA_ROOT) + 1:]

    def _resolve(self, root: Path, req_text: str, airflow_version: str,
                 snap: _Snapshot) -> tuple[_Verdict, bool, dict[str, str | None]]:
        """Localize the paths requirements.txt names, then ask pip (memoized)."""
        referenced: dict[str, str | None] = {}
        rewrite: dict[Path, str] = {}
        pending: list[tuple[str, str, str]] = [("requirements.txt", req_text, REQUIREMENTS_ROOT)]
        seen_files: set[str] = set()
        while pending:
            source, text, base = pending.pop()
            for ref in _references(text, base):
                if ref.mwaa_path is None or ref.mwaa_path in referenced:
                    continue
                local = self._local(root, ref.mwaa_path)
                exists = local is not None and (local.is_file() or (local.is_dir() and ref.option not in {
                    "-r", "--constraint"}))
                if not exists:
                    referenced[ref.mwaa_path] = None
                    where = ""
                    if ref.mwaa_path.startswith(DAGS_ROOT + "/"):
                        key = snap.dag_prefix + ref.mwaa_path[len(DAGS_ROOT) + 1:]
                        where = f" (s3://{snap.bucket}/{key} is not in the DAGs folder at this moment)"
                    elif ref.mwaa_path.startswith(PLUGINS_ROOT + "/"):
                        where = " (not in plugins.zip)"
                    elif local is None:
                        where = f" (only {DAGS_ROOT} and {PLUGINS_ROOT} come from the bucket)"
                    if ref.option in {"-r", "--constraint"}:
                        pip_says = ("ERROR: Could not open requirements file: [Errno 2] No such file or directory: "
                                    f"'{ref.mwaa_path}'")
                    else:
                        pip_says = f"ERROR: {ref.mwaa_path} does not exist"
                    raise _InstallFailed(
                        "requirements",
                        f"{source} line {ref.line}: {ref.option} {ref.target}{where}\n{pip_says}",
                    )
                assert local is not None
                referenced[ref.mwaa_path] = _sha(local.read_bytes()) if local.is_file() else _tree_hash(local)
                if ref.option in {"-r", "--constraint"} and ref.mwaa_path not in seen_files:
                    seen_files.add(ref.mwaa_path)
                    nested = local.read_text(errors="replace")
                    rewrite[local] = nested
                    pending.append((ref.mwaa_path, nested, posixpath.dirname(ref.mwaa_path)))
        local_root = str(root) + "/"
        for path, text in rewrite.items():
            path.write_text(text.replace(MWAA_ROOT + "/", local_root))
        requirements = root / "requirements" / "requirements.txt"
        requirements.write_text(req_text.replace(MWAA_ROOT + "/", local_root))
        key_input = {
            "requirements": req_text,
            "referenced": sorted((k, v or "") for k, v in referenced.items()),
            "airflow": airflow_version if self.with_airflow else None,
            "python": self.python,
        }
        key = _sha(json.dumps(key_input, sort_keys=True).encode())
        verdict, hit = self._pip(key, root, requirements, airflow_version)
        return verdict, hit, referenced

    def _pip(self, key: str, root: Path, requirements: Path, airflow_version: str) -> tuple[_Verdict, bool]:
        while True:
            with _VERDICT_LOCK:
                if key in _VERDICTS:
                    return _VERDICTS[key], True
                event = _INFLIGHT.get(key)
                owner = event is None
                if owner:
                    event = _INFLIGHT[key] = threading.Event()
            assert event is not None
            if not owner:
                event.wait()
                continue
            try:
                verdict, cacheable = self._run_pip(root, requirements, airflow_version)
                if cacheable:
                    with _VERDICT_LOCK:
                        _VERDICTS[key] = verdict
                return verdict, False
            finally:
                with _VERDICT_LOCK:
                    _INFLIGHT.pop(key, None)
                event.set()

    def _run_pip(self, root: Path, requirements: Path, airflow_version: str) -> tuple[_Verdict, bool]:
        report = root.parent / "pip-report.json"
        cmd = [self.python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
               "--quiet"]
        if _pip_has_report(self.python):
            cmd += ["--report", str(report)]
        cmd += ["-r", str(requirements)]
        if self.with_airflow:
            cmd.append(f"apache-airflow=={airflow_version}")
        env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        start = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(root), env=env,
                                  timeout=self.pip_timeout, check=False)
        except subprocess.TimeoutExpired:
            return _Verdict(False, f"pip did not finish within {self.pip_timeout:.0f}s", {}, time.time() - start), False
        seconds = time.time() - start
        local_root = str(root) + "/"
        errors = "\n".join(
            ln.replace(local_root, MWAA_ROOT + "/")
            for ln in (proc.stderr + "\n" + proc.stdout).splitlines()
            if ln.strip() and not ln.startswith("WARNING:")
        ).strip()
        resolved: dict[str, str] = {}
        if proc.returncode == 0 and report.is_file():
            data = json.loads(report.read_text())
            for item in data.get("install", []):
                meta = item.get("metadata", {})
                name = re.sub(r"[-_.]+", "-", str(meta.get("name", ""))).lower()
                if name:
                    resolved[name] = str(meta.get("version", ""))
        if proc.returncode != 0:
            return _Verdict(False, errors[-3000:] or f"pip exited {proc.returncode}", {}, seconds), True
        return _Verdict(True, "", resolved, seconds), True

    # ------------------------------------------------------------------ MWAA operations

    def handle(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Serve one MWAA operation (the HTTP layer's entry point; tests use the HTTP endpoint)."""
        with self._lock:
            self.calls.append((operation, json.loads(json.dumps(params, default=str))))
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_op_{operation}")
        return handler(params)

    def _env_json(self, env: _Env) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Name": env.name,
            "Arn": env.arn,
            "Status": env.status,
            "CreatedAt": _dt(env.created_at),
            "WebserverUrl": f"{uuid.uuid5(uuid.NAMESPACE_URL, env.arn)}.c2.{self.region}.airflow.amazonaws.com",
            "ServiceRoleArn": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/airflow.amazonaws.com/"
                              "AWSServiceRoleForAmazonMWAA",
            "CeleryExecutorQueue": f"arn:aws:sqs:{self.region}:{ACCOUNT}:airflow-celery-{env.name}",
            "DatabaseVpcEndpointService": f"com.amazonaws.vpce.{self.region}.vpce-svc-{_sha(env.arn.encode())[:17]}",
            "WebserverVpcEndpointService": f"com.amazonaws.vpce.{self.region}.vpce-svc-{_sha(env.name.encode())[:17]}",
        }
        for key, value in env.config.items():
            if value is not None and value != "":
                out[key] = value
        logging_config = {}
        for module, setting in env.config.get("LoggingConfiguration", {}).items():
            entry = dict(setting)
            if entry.get("Enabled"):
                entry["CloudWatchLogGroupArn"] = (
                    f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:airflow-{env.name}-{module[:-4]}"
                )
            logging_config[module] = entry
        out["LoggingConfiguration"] = logging_config
        if env.last_update is not None:
            out["LastUpdate"] = {**env.last_update, "CreatedAt": _dt(env.last_update["CreatedAt"])}
        return out

    def _op_ListEnvironments(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = time.time()
            for env in list(self._envs.values()):
                self._advance(env, now)
            names = sorted(self._envs)
        limit = int(params.get("MaxResults") or 25)
        if not 1 <= limit <= 25:
            raise _validation("MaxResults must be between 1 and 25")
        token = params.get("NextToken")
        start = 0
        if token:
            if not str(token).isdigit():
                raise _validation("NextToken is invalid")
            start = int(token)
        page = names[start:start + limit]
        out: dict[str, Any] = {"Environments": page}
        if start + limit < len(names):
            out["NextToken"] = str(start + limit)
        return out

    def _op_GetEnvironment(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        with self._lock:
            env = self._envs.get(name)
            if env is not None:
                self._advance(env, time.time())
            env = self._require(name)
            return {"Environment": self._env_json(env)}

    def _check_name(self, name: str) -> None:
        if not re.fullmatch(r"[a-zA-Z][0-9a-zA-Z\-_]*", name) or len(name) > 80:
            raise _validation(f"Name {name!r} must match [a-zA-Z][0-9a-zA-Z-_]* (at most 80 characters)")

    def _check_version(self, version: str, current: str | None) -> None:
        if version not in self.supported_versions:
            raise _validation(
                f"AirflowVersion {version} is not supported; supported versions: {', '.join(self.supported_versions)}"
            )
        if current is not None and version != current:
            # MWAA's "Changing the Apache Airflow version": minor upgrades and downgrades in place (x.4.z <-> x.5.z);
            # 2 -> 3 only from the latest 2.11.x, 3 -> 2 only down to 2.11.x; anything else is a new environment.
            new, old = _version_key(version), _version_key(current)
            if new[:1] != old[:1]:
                two = old if old[0] == 2 else new
                if two[:2] != (2, 11):
                    raise _validation(
                        f"AirflowVersion {current} -> {version}: MWAA changes major versions in place only between "
                        "2.11.x and 3.x; upgrade to 2.11 first, or create a new environment"
                    )

    def _apply_fields(self, config: dict[str, Any], params: dict[str, Any], *, create: bool) -> None:
        shown = set(self._model.shape_for("Environment").members)
        for key, value in params.items():
            if key == "Teams" and not create:  # UpdateTeamsInput: AddOrUpdate / Remove
                teams = {**config.get("Teams", {}), **value.get("AddOrUpdate", {})}
                config["Teams"] = {k: v for k, v in teams.items() if k not in set(value.get("Remove", []))}
            elif key == "Name" or key not in shown:
                continue  # WorkerReplacementStrategy goes to LastUpdate; nothing else is off the Environment shape
            elif key == "NetworkConfiguration" and not create:
                config["NetworkConfiguration"] = {**config.get("NetworkConfiguration", {}), **value}
            elif key == "LoggingConfiguration":
                config["LoggingConfiguration"] = {**config.get("LoggingConfiguration", {}), **value}
            else:
                config[key] = value
        for path_field, version_field in ARTIFACTS.values():
            if params.get(path_field) == "":
                config.pop(path_field, None)
                config.pop(version_field, None)
            elif version_field in params and not config.get(path_field):
                raise _validation(f"{version_field} given but the environment has no {path_field}")
        if "DagS3Path" in params and not str(params["DagS3Path"]).strip("/"):
            raise _validation("DagS3Path must name a folder in the bucket, e.g. dags")

    def _op_CreateEnvironment(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        self._check_name(name)
        version = params.get("AirflowVersion") or max(self.supported_versions, key=_version_key)
        self._check_version(version, None)
        self._check_bucket(params["SourceBucketArn"])
        config: dict[str, Any] = {
            "AirflowVersion": version,
            "EnvironmentClass": "mw1.small",
            "MaxWorkers": 10,
            "MinWorkers": 1,
            "Schedulers": 2,
            "MinWebservers": 2,
            "MaxWebservers": 2,
            "WebserverAccessMode": "PRIVATE_ONLY",
            "EndpointManagement": "SERVICE",
            "WeeklyMaintenanceWindowStart": "SUN:03:30",
            "AirflowConfigurationOptions": {},
            "Tags": {},
            "LoggingConfiguration": {m: {"Enabled": False, "LogLevel": "INFO"} for m in _LOG_MODULES},
        }
        self._apply_fields(config, params, create=True)
        config["AirflowVersion"] = version
        self._latest_versions(config, params)
        arn = f"arn:aws:airflow:{self.region}:{ACCOUNT}:environment/{name}"
        now = time.time()
        with self._lock:
            if name in self._envs:
                raise _validation(f"Environment {name} already exists")
            env = _Env(name, arn, now, config, "CREATING")
            env.last_update = {"Status": "PENDING", "CreatedAt": now, "Source": "API"}
            op = _Op("create", now, now + self.update_seconds, dict(config))
            env.op = op
            self._envs[name] = env
        self._begin(env, op)
        return {"Arn": arn}

    def _op_UpdateEnvironment(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        with self._lock:
            env = self._require(name)
            self._advance(env, time.time())
            if env.status not in READY_TO_UPDATE:
                raise _validation(
                    f"Environment {name} is {env.status}; it can be updated only when AVAILABLE or UPDATE_FAILED"
                )
            requested = json.loads(json.dumps(env.config))
        if "AirflowVersion" in params:
            self._check_version(params["AirflowVersion"], requested["AirflowVersion"])
        if "SourceBucketArn" in params:
            self._check_bucket(params["SourceBucketArn"])
        self._apply_fields(requested, params, create=False)
        self._latest_versions(requested, params)
        now = time.time()
        with self._lock:
            self._advance(env, now)
            if env.status not in READY_TO_UPDATE or self._envs.get(name) is not env:
                raise _validation(f"Environment {name} is {env.status}; another update started first")
            op = _Op("update", now, now + self.update_seconds, requested, previous=dict(env.config),
                     strategy=params.get("WorkerReplacementStrategy"))
            env.op = op
            env.status = "UPDATING"
            env.config = dict(requested)
            env.last_update = {"Status": "PENDING", "CreatedAt": now, "Source": "API"}
            if op.strategy:
                env.last_update["WorkerReplacementStrategy"] = op.strategy
        self._begin(env, op)
        return {"Arn": env.arn}

    def _op_DeleteEnvironment(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        with self._lock:
            env = self._require(name)
            now = time.time()
            self._advance(env, now)
            if env.status in {"CREATING", "UPDATING", "ROLLING_BACK", "DELETING"}:
                raise _validation(f"Environment {name} is {env.status}; it cannot be deleted now")
            env.status = "DELETING"
            env.op = _Op("delete", now, now + self.update_seconds, {})
        return {}

    # ------------------------------------------------------------------ InvokeRestApi (Airflow 3 REST API v2)

    def _op_InvokeRestApi(self, params: dict[str, Any]) -> dict[str, Any]:
        name, method, path = params["Name"], params["Method"], params["Path"]
        if len(path) > MAX_REST_PATH:
            raise _validation(f"Path must be at most {MAX_REST_PATH} characters, got {len(path)}")
        with self._lock:
            env = self._require(name)
            self._advance(env, time.time())
            if env.running is None or env.status in {"DELETING", "CREATE_FAILED"}:
                raise _validation(
                    f"Environment {name} is {env.status}; its Airflow REST API is not available"
                    + (" until it has been created" if env.running is None else "")
                )
            config = dict(env.running)
        query = params.get("QueryParameters") or {}
        body = params.get("Body")
        try:
            status, response = self._rest(env, config, method, path, query, body)
        except RestError as exc:
            status, response = exc.status, exc.body
        if status >= 500:
            raise ServiceError("RestApiServerException", f"Airflow REST API answered {status}",
                               RestApiStatusCode=status, RestApiResponse=response)
        if status >= 400:
            raise ServiceError("RestApiClientException", f"Airflow REST API answered {status}",
                               RestApiStatusCode=status, RestApiResponse=response)
        out: dict[str, Any] = {"RestApiStatusCode": status}
        if response is not None:
            out["RestApiResponse"] = response
        return out

    def _scan_dags(self, env: _Env, config: dict[str, Any]) -> None:
        """Parse the DAG files under the running DagS3Path as they are in S3 now (outside the lock, then apply)."""
        from botocore.exceptions import ClientError

        bucket = self._bucket(config)
        prefix = str(config.get("DagS3Path", "")).strip("/") + "/"
        now = time.time()
        listing: dict[str, tuple[str, float]] = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    listing[obj["Key"][len(prefix):]] = (obj["ETag"], obj["LastModified"].timestamp())

        def read(rel: str) -> bytes | None:
            etag = listing[rel][0]
            cached = self._file_cache.get((prefix + rel, etag))
            if cached is not None:
                return cached
            try:
                data: bytes = self._s3.get_object(Bucket=bucket, Key=prefix + rel)["Body"].read()
            except ClientError:
                return None
            self._file_cache[(prefix + rel, etag)] = data
            return data

        ignores = {rel: (read(rel) or b"").decode("utf-8", "replace") for rel in listing
                   if posixpath.basename(rel) == ".airflowignore"}
        bag: dict[str, ParsedDag] = {}
        errors: dict[str, str] = {}
        for rel in dag_bag_files(list(listing), ignores):
            if not rel.endswith(".py") or listing[rel][1] > now - self.parse_seconds:
                continue
            data = read(rel)
            if data is None or not _might_contain_dag(data):
                continue
            dags, error = parse_dag_file(data.decode("utf-8", "replace"), rel)
            if error:
                errors[rel] = error
            for dag in dags:
                if dag.dag_id in bag and bag[dag.dag_id].fileloc != rel:
                    errors[rel] = (f"AirflowDagDuplicatedIdException: Ignoring DAG {dag.dag_id} from {rel} - also "
                                   f"found in {bag[dag.dag_id].fileloc}")
                    continue
                bag.setdefault(dag.dag_id, dag)
        paused_default = str(config.get("AirflowConfigurationOptions", {}).get(
            "core.dags_are_paused_at_creation", "True")).lower() != "false"
        with self._lock:
            for dag_id, parsed in bag.items():
                state = env.dags.get(dag_id)
                if state is None:
                    paused = parsed.paused_upon_creation if parsed.paused_upon_creation is not None else paused_default
                    env.dags[dag_id] = _DagState(dag_id, paused, parsed.fileloc, now, now, parsed,
                                                 unpaused_since=None if paused else now)
                else:
                    state.fileloc, state.parsed, state.last_parsed, state.stale = parsed.fileloc, parsed, now, False
            for dag_id, state in env.dags.items():
                if dag_id not in bag:
                    state.stale = True
            kept: dict[str, tuple[float, str]] = {}
            for rel, msg in errors.items():
                old = env.import_errors.get(rel)
                kept[rel] = old if old is not None and old[1] == msg else (now, msg)
            env.import_errors = kept

    def _dag_json(self, env: _Env, state: _DagState, config: dict[str, Any]) -> dict[str, Any]:
        parsed = state.parsed
        prefix = str(config.get("DagS3Path", "")).strip("/")
        return {
            "dag_id": state.dag_id,
            "dag_display_name": parsed.display_name or state.dag_id,
            "is_paused": state.is_paused,
            "is_stale": state.stale,
            "last_parsed_time": _iso(state.last_parsed),
            "last_parse_duration": 0.01,
            "last_expired": None,
            "bundle_name": "dags-folder",
            "bundle_version": None,
            "relative_fileloc": state.fileloc,
            "fileloc": f"{DAGS_ROOT}/{state.fileloc}",
            "description": parsed.description,
            "timetable_summary": None,
            "timetable_description": "Never, external triggers only",
            "timetable_partitioned": False,
            "timetable_periodic": False,
            "tags": [{"name": t, "dag_id": state.dag_id, "dag_display_name": parsed.display_name or state.dag_id}
                     for t in parsed.tags],
            "max_active_tasks": 16,
            "max_active_runs": 16,
            "max_consecutive_failed_dag_runs": 0,
            "has_task_concurrency_limits": False,
            "has_import_errors": state.fileloc in env.import_errors,
            "next_dagrun_logical_date": None,
            "next_dagrun_data_interval_start": None,
            "next_dagrun_data_interval_end": None,
            "next_dagrun_run_after": None,
            "allowed_run_types": None,
            "owners": ["airflow"],
            "file_token": _sha(f"{prefix}/{state.fileloc}".encode())[:32],
        }

    def _run_json(self, env: _Env, run: _Run, now: float) -> dict[str, Any]:
        state = self._run_state(env, run, now)
        third = self.run_seconds / 3
        start = run.start + third if run.start is not None and state != "queued" else None
        end = run.start + self.run_seconds if run.start is not None and run.final is not None else None
        dag = env.dags.get(run.dag_id)
        return {
            "dag_run_id": run.run_id,
            "dag_id": run.dag_id,
            "logical_date": _iso(run.logical_date),
            "queued_at": _iso(run.queued_at),
            "start_date": _iso(start),
            "end_date": _iso(end),
            "duration": (end - start) if end is not None and start is not None else None,
            "data_interval_start": _iso(run.data_interval[0]) if run.data_interval else None,
            "data_interval_end": _iso(run.data_interval[1]) if run.data_interval else None,
            "run_after": _iso(run.run_after),
            "last_scheduling_decision": _iso(end or start),
            "run_type": "manual",
            "state": state,
            "triggered_by": "rest_api",
            "triggering_user_name": "mwaa-invoke-rest-api",
            "conf": run.conf,
            "note": run.note,
            "dag_versions": [],
            "bundle_version": None,
            "dag_display_name": (dag.parsed.display_name if dag else None) or run.dag_id,
            "partition_key": None,
            "partition_date": None,
        }

    def _run_state(self, env: _Env, run: _Run, now: float) -> str:
        if run.final is not None:
            return run.final
        dag = env.dags.get(run.dag_id)
        if run.start is None:
            if dag is None or dag.is_paused or dag.unpaused_since is None:
                return "queued"
            run.start = max(run.queued_at, dag.unpaused_since)
        elapsed = now - run.start
        if elapsed < self.run_seconds / 3:
            return "queued"
        if elapsed < self.run_seconds:
            return "running"
        failing = (env.name, run.dag_id) in self._failing or (None, run.dag_id) in self._failing
        run.final = "failed" if failing else "success"
        return run.final

    def _rest(self, env: _Env, config: dict[str, Any], method: str, path: str, query: dict[str, Any],
              body: Any) -> tuple[int, Any]:
        routes: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
            (r"/dags", "GET", self._rest_list_dags),
            (r"/dags/(?P<dag_id>[^/]+)", "GET", self._rest_get_dag),
            (r"/dags/(?P<dag_id>[^/]+)", "PATCH", self._rest_patch_dag),
            (r"/dags/(?P<dag_id>[^/]+)/dagRuns", "GET", self._rest_list_runs),
            (r"/dags/(?P<dag_id>[^/]+)/dagRuns", "POST", self._rest_trigger),
            (r"/dags/(?P<dag_id>[^/]+)/dagRuns/(?P<run_id>[^/]+)", "GET", self._rest_get_run),
            (r"/variables", "GET", self._rest_list_variables),
            (r"/variables", "POST", self._rest_post_variable),
            (r"/variables/(?P<key>.+)", "GET", self._rest_get_variable),
            (r"/variables/(?P<key>.+)", "PATCH", self._rest_patch_variable),
            (r"/variables/(?P<key>.+)", "DELETE", self._rest_delete_variable),
            (r"/importErrors", "GET", self._rest_import_errors),
            (r"/version", "GET", lambda *_a, **_k: (200, {"version": config["AirflowVersion"], "git_version": None})),
        ]
        clean = urlsplit(path).path
        matched_path = False
        for pattern, verb, fn in routes:
            match = re.fullmatch(pattern, clean)
            if not match:
                continue
            matched_path = True
            if verb != method:
                continue
            args = {k: unquote(v) for k, v in match.groupdict().items()}
            if clean.startswith("/dags") or clean == "/importErrors":
                self._scan_dags(env, config)  # S3 reads outside the lock
            with self._lock:
                return fn(env, config, query=query, body=body, **args)
        if matched_path:
            return 405, {"detail": "Method Not Allowed"}
        return 404, {"detail": "Not Found"}

    def _dag(self, env: _Env, dag_id: str) -> _DagState:
        state = env.dags.get(dag_id)
        if state is None:
            raise RestError(404, f"The Dag with ID: `{dag_id}` was not found")
        return state

    @staticmethod
    def _strict_body(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _unprocessable(["body"], "Field required", "missing")
        for key in body:
            if key not in allowed:
                raise _unprocessable(["body", key], "Extra inputs are not permitted", "extra_forbidden", body[key])
        for key in sorted(required):
            if key not in body:
                raise _unprocessable(["body", key], "Field required", "missing", body)
        return body

    def _rest_list_dags(self, env: _Env, config: dict[str, Any], **_: Any) -> tuple[int, Any]:
        dags = [self._dag_json(env, s, config) for _, s in sorted(env.dags.items()) if not s.stale]
        return 200, {"dags": dags, "total_entries": len(dags)}

    def _rest_get_dag(self, env: _Env, config: dict[str, Any], *, dag_id: str, **_: Any) -> tuple[int, Any]:
        return 200, self._dag_json(env, self._dag(env, dag_id), config)

    def _rest_patch_dag(self, env: _Env, config: dict[str, Any], *, dag_id: str, query: dict[str, Any], body: Any,
                        **_: Any) -> tuple[int, Any]:
        state = env.dags.get(dag_id)
        if state is None:
            raise RestError(404, f"Dag with id: {dag_id} was not found")
        mask = query.get("update_mask")
        if mask is not None and (mask if isinstance(mask, list) else [mask]) != ["is_paused"]:
            raise RestError(400, "Only `is_paused` field can be updated through the REST API")
        data = self._strict_body(body, {"is_paused"}, {"is_paused"})
        if not isinstance(data["is_paused"], bool):
            raise _unprocessable(["body", "is_paused"], "Input should be a valid boolean", "bool_type",
                                 data["is_paused"])
        now = time.time()
        if state.is_paused and not data["is_paused"]:
            state.unpaused_since = now
        if data["is_paused"]:
            state.unpaused_since = None
        state.is_paused = data["is_paused"]
        return 200, self._dag_json(env, state, config)

    def _rest_list_runs(self, env: _Env, config: dict[str, Any], *, dag_id: str, **_: Any) -> tuple[int, Any]:
        self._dag(env, dag_id)
        now = time.time()
        runs = [self._run_json(env, r, now) for r in env.runs.values() if r.dag_id == dag_id]
        return 200, {"dag_runs": runs, "total_entries": len(runs)}

    @staticmethod
    def _parse_time(value: Any, field_name: str) -> float | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _unprocessable(["body", field_name], "Input should be a valid datetime", "datetime_type", value)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise _unprocessable(["body", field_name], f"Input should be a valid datetime, {exc}",
                                 "datetime_from_date_parsing", value) from exc
        if parsed.tzinfo is None:
            raise _unprocessable(["body", field_name], "Input should have timezone info", "timezone_aware", value)
        return parsed.timestamp()

    def _rest_trigger(self, env: _Env, config: dict[str, Any], *, dag_id: str, body: Any,
                      **_: Any) -> tuple[int, Any]:
        data = self._strict_body(
            body,
            {"dag_run_id", "data_interval_start", "data_interval_end", "logical_date", "run_after", "conf", "note",
             "partition_key"},
            {"logical_date"},
        )
        state = env.dags.get(dag_id)
        if state is None or state.stale:
            raise RestError(404, f"Dag with dag_id: '{dag_id}' not found")
        if state.fileloc in env.import_errors:
            raise RestError(400, f"Dag with dag_id: '{dag_id}' has import errors and cannot be triggered")
        logical = self._parse_time(data.get("logical_date"), "logical_date")
        start_iv = self._parse_time(data.get("data_interval_start"), "data_interval_start")
        end_iv = self._parse_time(data.get("data_interval_end"), "data_interval_end")
        if (start_iv is None) != (end_iv is None):
            raise _unprocessable(["body"], "Value error, Either both data_interval_start and data_interval_end must "
                                 "be provided or both must be None", "value_error", data)
        conf = data.get("conf") or {}
        if not isinstance(conf, dict):
            raise _unprocessable(["body", "conf"], "Input should be a valid dictionary", "dict_type", conf)
        now = time.time()
        run_after = self._parse_time(data.get("run_after"), "run_after") or now
        run_id = data.get("dag_run_id") or f"manual__{_iso(logical if logical is not None else run_after)}"
        duplicate = (dag_id, run_id) in env.runs or (
            logical is not None and any(r.dag_id == dag_id and r.logical_date == logical for r in env.runs.values())
        )
        if duplicate:
            raise RestError(409, {
                "reason": "Unique constraint violation",
                "statement": "hidden",
                "orig_error": "hidden",
                "message": "Serious error when handling your request. Check logs for more details - you will find it "
                           f"in api server when you look for ID {uuid.uuid4().hex[:8]}",
            })
        interval: tuple[float, float] | None = None
        if start_iv is not None and end_iv is not None:
            interval = (start_iv, end_iv)
        elif logical is not None:
            interval = (logical, logical)  # a manual run's inferred data interval
        run = _Run(dag_id, run_id, logical, now, run_after, conf, data.get("note"), interval)
        env.runs[(dag_id, run_id)] = run
        return 200, self._run_json(env, run, now)

    def _rest_get_run(self, env: _Env, config: dict[str, Any], *, dag_id: str, run_id: str,
                      **_: Any) -> tuple[int, Any]:
        run = env.runs.get((dag_id, run_id))
        if run is None:
            raise RestError(404, f"The DagRun with dag_id: `{dag_id}` and run_id: `{run_id}` was not found")
        return 200, self._run_json(env, run, time.time())

    @staticmethod
    def _variable_json(key: str, var: dict[str, Any]) -> dict[str, Any]:
        value = var["value"]
        if any(word in key.lower() for word in _SENSITIVE):
            value = "***"
        return {"key": key, "value": value, "description": var["description"], "is_encrypted": True,
                "team_name": None}

    @staticmethod
    def _variable_body(body: Any) -> dict[str, Any]:
        data = MwaaStandIn._strict_body(body, {"key", "value", "description", "team_name"}, {"key", "value"})
        if not isinstance(data["key"], str) or not data["key"] or len(data["key"]) > 250:
            raise _unprocessable(["body", "key"], "String should have at most 250 characters", "string_type",
                                 data["key"])
        value = data["value"]
        stored = value if isinstance(value, str) else json.dumps(value, indent=2)
        return {"key": data["key"], "value": stored, "description": data.get("description")}

    def _rest_list_variables(self, env: _Env, config: dict[str, Any], **_: Any) -> tuple[int, Any]:
        items = [self._variable_json(k, v) for k, v in sorted(env.variables.items())]
        return 200, {"variables": items, "total_entries": len(items)}

    def _rest_get_variable(self, env: _Env, config: dict[str, Any], *, key: str, **_: Any) -> tuple[int, Any]:
        if key not in env.variables:
            raise RestError(404, f"The Variable with key: `{key}` was not found")
        return 200, self._variable_json(key, env.variables[key])

    def _rest_post_variable(self, env: _Env, config: dict[str, Any], *, body: Any, **_: Any) -> tuple[int, Any]:
        data = self._variable_body(body)
        if data["key"] in env.variables:
            raise RestError(409, f"The Variable with key: `{data['key']}` already exists")
        env.variables[data["key"]] = {"value": data["value"], "description": data["description"]}
        return 201, self._variable_json(data["key"], env.variables[data["key"]])

    def _rest_patch_variable(self, env: _Env, config: dict[str, Any], *, key: str, query: dict[str, Any],
                             body: Any, **_: Any) -> tuple[int, Any]:
        data = self._variable_body(body)
        if data["key"] != key:
            raise RestError(400, "Invalid body, key from request body doesn't match uri parameter")
        if key not in env.variables:
            raise RestError(404, f"The Variable with key: `{key}` was not found")
        mask = query.get("update_mask")
        fields = set(mask if isinstance(mask, list) else [mask]) if mask else {"value", "description"}
        var = env.variables[key]
        for name in ("value", "description"):
            if name in fields and (name in body or name == "value"):
                var[name] = data[name]
        return 200, self._variable_json(key, var)

    def _rest_delete_variable(self, env: _Env, config: dict[str, Any], *, key: str, **_: Any) -> tuple[int, Any]:
        if key not in env.variables:
            raise RestError(404, f"The Variable with key: `{key}` was not found")
        del env.variables[key]
        return 204, None

    def _rest_import_errors(self, env: _Env, config: dict[str, Any], **_: Any) -> tuple[int, Any]:
        errors = [
            {"import_error_id": i + 1, "timestamp": _iso(ts), "filename": f"{DAGS_ROOT}/{rel}", "bundle_name":
             "dags-folder", "stack_trace": msg}
            for i, (rel, (ts, msg)) in enumerate(sorted(env.import_errors.items()))
        ]
        return 200, {"import_errors": errors, "total_entries": len(errors)}


# ---------------------------------------------------------------------------------------------------- HTTP layer


class _Handler(BaseHTTPRequestHandler):
    """rest-json over HTTP, routed and validated by botocore's MWAA service model."""

    protocol_version = "HTTP/1.1"
    owner: MwaaStandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _send(self, status: int, body: dict[str, Any], error: str | None = None) -> None:
        data = json.dumps(body, default=lambda o: o.timestamp() if isinstance(o, datetime) else str(o)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, exc: ServiceError) -> None:
        model = self.owner._model
        try:
            shape = model.shape_for(exc.code)
            status = int(shape.metadata.get("error", {}).get("httpStatusCode", 400))
            message_key = "Message" if "Message" in shape.members else "message"
        except Exception:
            status, message_key = 400, "message"
        self._send(status, {message_key: exc.message, **exc.fields}, exc.code)

    def _dispatch(self) -> None:
        from botocore.validate import ParamValidator

        standin = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        try:
            found = [(op, m) for method, pattern, op in standin._routes
                     if method == self.command and (m := pattern.match(url.path))]
            if not found:
                raise ServiceError("ValidationException", f"No MWAA operation for {self.command} {url.path}")
            operation, match = found[0]
            op_model = standin._model.operation_model(operation)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise _validation(f"Request body is not JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise _validation("Request body must be a JSON object")
            params: dict[str, Any] = {}
            query = parse_qs(url.query)
            for member, shape in op_model.input_shape.members.items():
                location = shape.serialization.get("location")
                wire = shape.serialization.get("name", member)
                if location == "uri":
                    params[member] = unquote(match.group(wire))
                elif location == "querystring":
                    if wire in query:
                        value: Any = query[wire][0]
                        params[member] = int(value) if shape.type_name == "integer" and value.isdigit() else value
                elif member in body:
                    params[member] = body[member]
            unknown = sorted(set(body) - {m for m, s in op_model.input_shape.members.items()
                                          if not s.serialization.get("location")})
            if unknown:
                raise _validation(f"Unknown parameter(s) in the request body: {', '.join(unknown)}")
            report = ParamValidator().validate(params, op_model.input_shape)
            if report.has_errors():
                raise _validation(report.generate_report())
            result = standin.handle(operation, params)
            check = ParamValidator().validate(result, op_model.output_shape)
            if check.has_errors():
                raise RuntimeError(f"the stand-in's {operation} answer does not fit the model: "
                                   f"{check.generate_report()}")
            self._send(200, result)
        except ServiceError as exc:
            self._error(exc)
        except Exception:
            message = traceback.format_exc()
            standin.server_errors.append(message)
            self._send(500, {"message": f"stand-in error: {message[-1500:]}"}, "InternalServerException")


@contextlib.contextmanager
def running(s3_endpoint: str, **kwargs: Any) -> Iterator[MwaaStandIn]:
    """``with running(moto_url) as mwaa:`` -- a started stand-in, stopped afterwards."""
    standin = MwaaStandIn(s3_endpoint, **kwargs)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
