"""Validate a bundle before it ships: DAG imports, house rules, parse time, plugins.zip, requirements, bucket.

DAG files are imported one per fresh interpreter (``_dag_probe.py``), which may be the MWAA-parity venv's Python
(3.12, Airflow 3.3.1, the vendored constraints), so what fails on MWAA fails here first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.deploy import MWAA_DAGS_ROOT, MWAA_PLUGINS_ROOT, DeployError
from airflow_mlops.deploy.bundle import Bundle, canonical_name, read_pins
from airflow_mlops.deploy.dagfiles import is_dag_file, read_airflowignore

PROBE = Path(__file__).resolve().parent / "_dag_probe.py"
DEFAULT_PARSE_BUDGET_S = 2.0


@dataclass(frozen=True)
class FileReport:
    """One DAG file's result.

    :param file: path relative to the DAGs folder
    :param seconds: time to import it (airflow.sdk preloaded)
    :param dag_ids: DAGs it defines
    :param problems: what is wrong, one line each
    """

    file: str
    seconds: float
    dag_ids: tuple[str, ...]
    problems: tuple[str, ...]


@dataclass
class Report:
    """All findings of a validation run.

    :param files: per DAG file
    :param problems: bundle-level problems (plugins.zip, requirements, bucket)
    :param notes: informational lines
    """

    files: list[FileReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems and not any(f.problems for f in self.files)

    def table(self) -> list[str]:
        """Findings as lines a person reads."""
        lines = [f"{'DAG file':<40} {'parse s':>8}  {'DAGs':<34} result"]
        for f in self.files:
            verdict = "ok" if not f.problems else f"{len(f.problems)} problem(s)"
            lines.append(f"{f.file:<40} {f.seconds:>8.2f}  {', '.join(f.dag_ids)[:34]:<34} {verdict}")
            lines += [f"    - {p}" for p in f.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        lines.append("validation: OK" if self.ok else "validation: FAILED")
        return lines


def _probe_env(airflow_home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(
        {
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def check_dag_file(path: Path, rel: str, *, python: str, budget_s: float, airflow_home: str,
                   import_path: Sequence[Path] = ()) -> FileReport:
    """Import one DAG file in a fresh interpreter and apply the house rules.

    :param path: the file
    :param rel: its name relative to the DAGs folder, for the report
    :param python: interpreter to import it with
    :param budget_s: parse-time budget
    :param airflow_home: a scratch AIRFLOW_HOME
    :param import_path: what Airflow puts on ``sys.path`` (the DAGs folder, plugins)
    """
    env = _probe_env(airflow_home)
    env["MLOPS_PROBE_PATH"] = os.pathsep.join(str(p) for p in import_path)
    proc = subprocess.run(
        [python, str(PROBE), str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(path.parent),
        timeout=300,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        data = {}
    if not data:
        return FileReport(rel, 0.0, (), (f"probe crashed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}",))
    problems: list[str] = []
    if data["error"]:
        last = data["error"].strip().splitlines()[-1]
        problems.append(f"import error: {last}")
    if data["heavy"]:
        problems.append(f"heavy top-level import(s): {', '.join(data['heavy'])} (import inside the task instead)")
    if data["seconds"] > budget_s:
        problems.append(f"parse time {data['seconds']:.2f}s over the {budget_s:.2f}s budget")
    if not data["error"] and not data["dags"]:
        problems.append("defines no DAG")
    for dag in data["dags"]:
        did = dag["dag_id"]
        if dag["cycle"]:
            problems.append(f"{did}: cycle {' -> '.join(dag['cycle'])}")
        if not dag["tags"]:
            problems.append(f"{did}: no tags")
        no_owner = [t["task_id"] for t in dag["tasks"] if not t["owner"] or t["owner"] == "airflow"]
        if no_owner:
            problems.append(f"{did}: no owner on {', '.join(no_owner[:5])} (set default_args owner)")
        no_retries = [t["task_id"] for t in dag["tasks"] if not t["retries"]]
        if no_retries:
            problems.append(f"{did}: retries=0 on {', '.join(no_retries[:5])} (set default_args retries)")
    return FileReport(rel, float(data["seconds"]), tuple(d["dag_id"] for d in data["dags"]), tuple(problems))


def check_dags(
    dags: Path, *, python: str = sys.executable, budget_s: float = DEFAULT_PARSE_BUDGET_S,
    plugins: Path | None = None,
) -> list[FileReport]:
    """Check every DAG file under the DAGs folder as Airflow picks them.

    Skipped, as Airflow skips them: what ``.airflowignore`` (glob syntax) excludes, ``__init__``/underscored
    modules, and helper modules that mention neither ``airflow`` nor ``dag`` (safe mode); the DAGs folder and
    ``plugins`` (a folder or ``plugins.zip``) are on the import path, so DAGs importing helpers beside them work.

    :param dags: the DAGs folder
    :param python: interpreter for the probes
    :param budget_s: parse-time budget per file
    :param plugins: the plugins folder or plugins.zip
    """
    dags = dags.resolve()  # the probe runs with the DAG's folder as cwd
    patterns = read_airflowignore(dags)
    files = sorted(p for p in dags.rglob("*.py") if is_dag_file(p, p.relative_to(dags).as_posix(), patterns))
    import_path = [dags, *([plugins.resolve()] if plugins is not None and plugins.exists() else [])]
    with tempfile.TemporaryDirectory(prefix="mwaa-validate-") as home:
        return [
            check_dag_file(p, p.relative_to(dags).as_posix(), python=python, budget_s=budget_s, airflow_home=home,
                           import_path=import_path)
            for p in files
        ]


def _requirement_options(lines: list[str]) -> tuple[list[str], list[str]]:
    options: list[str] = []
    reqs: list[str] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        (options if line.startswith("-") else reqs).append(line)
    return options, reqs


def check_plugins_zip(path: Path, requirements: Path | None = None) -> list[str]:
    """Problems with plugins.zip's layout (MWAA unpacks it into /usr/local/airflow/plugins).

    :param path: plugins.zip
    :param requirements: requirements.txt, to check --find-links / --no-index against the zip's wheels
    """
    if not path.is_file():
        return [f"plugins.zip: {path} does not exist"]
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile:
        return [f"plugins.zip: {path.name} is not a zip file"]
    problems = []
    if not names:
        problems.append("plugins.zip is empty")
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and "/" in names[0] and names[0].split("/", 1)[0] == "plugins":
        problems.append(
            "plugins.zip: every entry is under plugins/ — zip from inside the folder "
            "(cd plugins; zip -r ../plugins.zip .)"
        )
    bytecode = [n for n in names if "__pycache__/" in n or n.endswith((".pyc", ".pyo"))]
    if bytecode:
        problems.append(f"plugins.zip: bytecode inside ({bytecode[0]}, ...): MWAA's Python may differ; leave it out")
    nested_wheels = [n for n in names if n.endswith(".whl") and "/" in n]
    if nested_wheels:
        problems.append(f"plugins.zip: wheels must sit at the zip's root for --find-links: {nested_wheels[0]}")
    if requirements is not None and requirements.is_file():
        options, reqs = _requirement_options(requirements.read_text().splitlines())
        wheels = {canonical_name(n.split("-", 1)[0]) for n in names if n.endswith(".whl") and "/" not in n}
        uses_links = any(o.startswith("--find-links") and MWAA_PLUGINS_ROOT in o for o in options)
        if any(o == "--no-index" for o in options):
            missing = [r for r in reqs if canonical_name(re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0]) not in wheels]
            if missing:
                problems.append(f"requirements use --no-index but plugins.zip has no wheel for: {', '.join(missing)}")
        elif wheels and not uses_links:
            problems.append(f"plugins.zip holds wheels but requirements.txt has no --find-links {MWAA_PLUGINS_ROOT}")
    return problems


def check_requirements(bundle: Bundle) -> list[str]:
    """Static checks of requirements.txt against the constraints file inside plugins.zip.

    Every path requirements.txt names must be inside plugins.zip: MWAA reads requirements.txt and plugins.zip
    at the object versions one UpdateEnvironment names, but ``dags/`` as it is whenever a component installs.

    :param bundle: the bundle
    """
    path = bundle.requirements_txt
    if not path.is_file():
        return [f"requirements.txt: {path} does not exist"]
    options, reqs = _requirement_options(path.read_text().splitlines())
    problems = []
    for opt in options:
        if MWAA_DAGS_ROOT in opt:
            problems.append(
                f"requirements.txt: {opt} reads from the DAGs folder, which is not versioned with requirements.txt "
                f"(a first deploy installs before the sync, later workers install whatever dags/ holds then); ship "
                f"the file in plugins.zip and name it under {MWAA_PLUGINS_ROOT}/"
            )
    constraint_opts = [o for o in options if o.startswith(("--constraint", "-c"))]
    if len(constraint_opts) != 1:
        found = len(constraint_opts)
        return [f"requirements.txt: needs exactly one --constraint line (MWAA requires it), found {found}"]
    target = constraint_opts[0].split(None, 1)[-1].strip().strip('"').strip("'")
    prefix = MWAA_PLUGINS_ROOT + "/"
    if not target.startswith(prefix):
        if not problems:
            problems.append(f"requirements.txt: --constraint {target} is not in plugins.zip ({prefix}...)")
        return problems
    inner = target[len(prefix) :]
    try:
        with zipfile.ZipFile(bundle.plugins_zip) as zf:
            text = zf.read(inner).decode()
    except (KeyError, FileNotFoundError, zipfile.BadZipFile):
        return [f"requirements.txt: --constraint {target} but plugins.zip has no {inner}"]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "constraints.txt"
        local.write_text(text)
        pins = read_pins(local)
    for req in reqs:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", req.replace(" ", ""))
        if not match:
            problems.append(f"requirements.txt: {req!r} is not pinned with == (pin what you tested)")
            continue
        name, version = canonical_name(match.group(1)), match.group(3)
        if name in pins and pins[name] != version:
            problems.append(f"requirements.txt: {name}=={version} conflicts with the constraint {name}=={pins[name]}")
    return problems


def localize(bundle: Bundle, workdir: Path) -> Path:
    """A copy of requirements.txt whose MWAA paths point into ``workdir`` (constraints, unpacked plugins.zip).

    :param bundle: the bundle
    :param workdir: scratch folder
    """
    plugins = workdir / "plugins"
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        zf.extractall(plugins)
    text = bundle.requirements_txt.read_text()
    text = text.replace(MWAA_DAGS_ROOT, str(bundle.dags.resolve())).replace(MWAA_PLUGINS_ROOT, str(plugins))
    out = workdir / "requirements.txt"
    out.write_text(text)
    return out


def resolve_requirements(bundle: Bundle, *, python: str) -> list[str]:
    """pip's resolver as a dry run over requirements.txt + constraints (needs the package index).

    :param bundle: the bundle
    :param python: interpreter whose pip resolves (the parity venv's for MWAA's Python)
    """
    with tempfile.TemporaryDirectory(prefix="mwaa-resolve-") as tmp:
        req = localize(bundle, Path(tmp))
        proc = subprocess.run(
            [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--disable-pip-version-check", "-r", str(req)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if proc.returncode != 0:
        # Index/mirror notices drown the resolver's verdict; keep pip's errors.
        errors = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING:"))
        return [f"pip could not resolve requirements.txt with the constraints:\n{errors.strip()[-2000:]}"]
    return []


def check_bucket_versioning(s3: Any, bucket: str) -> list[str]:
    """Versioning must be Enabled: MWAA reads requirements/plugins by object version, rollback needs old versions.

    :param s3: boto3 S3 client
    :param bucket: the environment's bucket
    """
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status", "never enabled")
    if status != "Enabled":
        return [f"bucket {bucket}: versioning is {status}; enable it (aws s3api put-bucket-versioning ...)"]
    return []


def validate_bundle(
    bundle: Bundle,
    *,
    python: str = sys.executable,
    budget_s: float = DEFAULT_PARSE_BUDGET_S,
    resolve: bool = False,
    s3: Any = None,
    bucket: str | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Run every check on a bundle and log the table.

    :param bundle: the bundle
    :param python: interpreter for DAG imports and resolution (the MWAA-parity venv's for parity)
    :param budget_s: parse-time budget per DAG file
    :param resolve: also run pip's resolver (needs the package index)
    :param s3: boto3 S3 client, to check the bucket
    :param bucket: bucket whose versioning to check
    :param log: where lines go
    """
    if budget_s <= 0:
        raise DeployError(f"budget_s: {budget_s} must be > 0 seconds")
    report = Report()
    proc = subprocess.run(
        [python, "-c", "import sys, airflow; print(sys.version.split()[0], airflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
        env=_probe_env(tempfile.gettempdir()),
    )
    if proc.returncode != 0:
        raise DeployError(f"python: {python} cannot import airflow:\n{proc.stderr.strip()[-800:]}")
    py_version, af_version = proc.stdout.split()
    report.notes.append(f"imported with Python {py_version}, Airflow {af_version} ({python})")
    if af_version != bundle.airflow_version:
        report.notes.append(f"the bundle targets Airflow {bundle.airflow_version}: for parity, validate in the venv "
                            "`deploy parity-venv` builds (make mwaa-parity)")
    report.files = check_dags(bundle.dags, python=python, budget_s=budget_s, plugins=bundle.plugins_zip)
    report.problems += check_plugins_zip(bundle.plugins_zip, bundle.requirements_txt)
    report.problems += check_requirements(bundle)
    if resolve:
        report.problems += resolve_requirements(bundle, python=python)
    else:
        report.notes.append("pip resolution skipped (--resolve runs it; needs the package index)")
    if bucket:
        if s3 is None:
            raise DeployError("s3: a client is needed to check the bucket")
        report.problems += check_bucket_versioning(s3, bucket)
    for line in report.table():
        log(line)
    return report
