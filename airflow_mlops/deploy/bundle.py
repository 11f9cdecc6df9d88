"""Build the MWAA bundle: ``dags/`` as-is, ``plugins.zip`` in MWAA's layout, a pinned ``requirements.txt``.

Layout written under ``out``::

    dags/                      the repository's dags/, as-is
    plugins.zip                zipped from inside plugins/ (no top folder), with the airflow-mlops wheel, the
                               constraints file, and optionally a wheelhouse for private-network environments
    requirements.txt           --constraint "/usr/local/airflow/plugins/<constraints>", pinned requirements
    startup.sh                 optional startup script
    manifest.json              sha256 of every artifact, and the install set's digest

**One consistent install set.** Everything ``requirements.txt`` names lives inside ``plugins.zip``: the
constraints file and the wheels. MWAA reads both by S3 object version, and one UpdateEnvironment names both
versions, so every component that installs (scheduler, web server, every worker, including one that autoscaling
starts a week later) gets the same requirements with the same constraints. Nothing is read from ``dags/``, whose
objects change on every sync and are not versioned per update: a constraints file there was missing on a first
deploy (the update ran before the sync) and drifted under workers that started later. A rollback to older
requirements/plugins versions restores the matching constraints with them.

Every artifact is byte-for-byte reproducible from the same sources (fixed zip timestamps, sorted entries,
SOURCE_DATE_EPOCH for the wheel), so an unchanged tree produces unchanged hashes and no MWAA update.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from airflow_mlops.deploy import MWAA_PLUGINS_ROOT, DeployError

CONSTRAINTS_DIR = Path(__file__).resolve().parent / "constraints"
DEFAULT_AIRFLOW_VERSION = "3.3.1"
DEFAULT_PYTHON_VERSION = "3.12"
PACKAGE_NAME = "airflow-mlops"
# 1980-01-01, the earliest time a zip entry can carry: every build stamps the same time.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SOURCE_DATE_EPOCH = "315532800"
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content.

    :param path: the file
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_name(name: str) -> str:
    """PEP 503 normalized distribution name (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints_file(airflow_version: str, python_version: str) -> Path:
    """The vendored constraints file for an Airflow and Python version.

    :param airflow_version: e.g. ``3.3.1``
    :param python_version: e.g. ``3.12``
    """
    path = CONSTRAINTS_DIR / f"constraints-{airflow_version}-py{python_version}.txt"
    if not path.is_file():
        available = sorted(p.name for p in CONSTRAINTS_DIR.glob("constraints-*.txt"))
        raise DeployError(
            f"airflow_version/python_version: no vendored constraints for Airflow {airflow_version} on Python "
            f"{python_version}; available: {', '.join(available) or 'none'} (or pass --constraints PATH)"
        )
    return path


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints/requirements file, by canonical name.

    :param path: constraints or requirements file
    """
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)(\s*;.*)?", line)
        if match:
            pins[canonical_name(match.group(1))] = match.group(3)
    return pins


def _requirement_names(declared: list[str]) -> list[str]:
    names = []
    for req in declared:
        if "extra ==" in req:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if match:
            names.append(canonical_name(match.group(0)))
    return names


def _package_requirements(wheel: Path | None = None) -> list[str]:
    """The airflow-mlops distribution's own runtime requirements (no extras), as canonical names.

    :param wheel: the wheel the bundle ships: its METADATA is what MWAA installs, so it is read first; without one,
        the installed distribution's metadata
    """
    if wheel is not None:
        from email.parser import Parser

        with zipfile.ZipFile(wheel) as zf:
            meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                raise DeployError(f"wheel: {wheel.name} has no .dist-info/METADATA")
            message = Parser().parsestr(zf.read(meta).decode())
        return _requirement_names(message.get_all("Requires-Dist") or [])
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(PACKAGE_NAME) or []
    except PackageNotFoundError as exc:  # pragma: no cover - the CLI runs from an install
        raise DeployError(f"{PACKAGE_NAME} is not installed: pip install -e . first") from exc
    return _requirement_names(declared)


@dataclass(frozen=True)
class BundleSpec:
    """What to bundle.

    :param repo: repository root holding dags/, plugins/ and pyproject.toml
    :param out: output folder (emptied first)
    :param airflow_version: target MWAA Airflow version
    :param python_version: target MWAA Python version
    :param constraints: constraints file; default: the vendored one for the two versions
    :param wheelhouse: folder of wheels to put inside plugins.zip; requirements then install with --no-index
    :param startup_script: optional MWAA startup script (shell)
    :param package_wheel: include the airflow-mlops wheel (built from ``repo``) in plugins.zip
    :param extra_requirements: more distributions the DAGs need (names, pinned from the constraints file)
    """

    repo: Path
    out: Path
    airflow_version: str = DEFAULT_AIRFLOW_VERSION
    python_version: str = DEFAULT_PYTHON_VERSION
    constraints: Path | None = None
    wheelhouse: Path | None = None
    startup_script: Path | None = None
    package_wheel: bool = True
    extra_requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.airflow_version):
            raise DeployError(f"airflow_version: {self.airflow_version!r} is not X.Y.Z (e.g. 3.3.1)")
        if not re.fullmatch(r"3\.\d+", self.python_version):
            raise DeployError(f"python_version: {self.python_version!r} is not 3.N (e.g. 3.12)")
        for name in ("dags", "plugins"):
            if not (self.repo / name).is_dir():
                raise DeployError(f"repo: {self.repo} has no {name}/ folder")
        if self.wheelhouse is not None and not any(self.wheelhouse.glob("*.whl")):
            raise DeployError(f"wheelhouse: {self.wheelhouse} holds no .whl files")
        if self.startup_script is not None and not self.startup_script.is_file():
            raise DeployError(f"startup_script: {self.startup_script} is not a file")
        for name in self.extra_requirements:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise DeployError(
                    f"extra_requirements: {name!r} is not a distribution name (give the name only; the version "
                    "comes from the constraints file)"
                )
        if self.out.resolve() in {self.repo.resolve(), (self.repo / "dags").resolve()}:
            raise DeployError(f"out: {self.out} would overwrite the sources; pick e.g. build/mwaa")


@dataclass(frozen=True)
class Bundle:
    """A built bundle.

    :param root: the output folder
    :param constraints_name: file name of the constraints file at the root of plugins.zip
    :param hashes: sha256 per artifact path relative to root (dags files included)
    :param requirements: the pinned requirement lines
    :param airflow_version: the MWAA Airflow version the bundle was built for
    :param python_version: the MWAA Python version it was built for
    """

    root: Path
    constraints_name: str
    hashes: dict[str, str] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    airflow_version: str = DEFAULT_AIRFLOW_VERSION
    python_version: str = DEFAULT_PYTHON_VERSION

    @property
    def dags(self) -> Path:
        """The DAGs folder to sync."""
        return self.root / "dags"

    @property
    def plugins_zip(self) -> Path:
        """plugins.zip."""
        return self.root / "plugins.zip"

    @property
    def requirements_txt(self) -> Path:
        """requirements.txt."""
        return self.root / "requirements.txt"

    @property
    def startup_script(self) -> Path | None:
        """startup.sh, when bundled."""
        path = self.root / "startup.sh"
        return path if path.is_file() else None

    @classmethod
    def load(cls, root: Path) -> Bundle:
        """Read a bundle built earlier from its manifest.

        :param root: the bundle folder
        """
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise DeployError(f"bundle: {root} has no manifest.json; run `airflow-mlops deploy bundle` first")
        data = json.loads(manifest.read_text())
        return cls(root, data["constraints_name"], data["hashes"], tuple(data["requirements"]),
                   data.get("airflow_version", DEFAULT_AIRFLOW_VERSION),
                   data.get("python_version", DEFAULT_PYTHON_VERSION))

    @property
    def install_set(self) -> str:
        """Digest of what MWAA installs (Airflow version, requirements.txt, plugins.zip, startup script).

        Two bundles with the same install set need no environment update, whatever their DAGs hold.
        """
        parts = [self.airflow_version] + [
            f"{name}={self.hashes.get(name, '-')}" for name in ("requirements.txt", "plugins.zip", "startup.sh")
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _iter_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _SKIP_DIRS for part in rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        if path.is_file():
            files.append(path)
    return files


def write_zip(zip_path: Path, entries: list[tuple[str, Path]]) -> None:
    """Write a reproducible zip: sorted entries, fixed timestamps and permissions.

    :param zip_path: the zip to write
    :param entries: (name inside the zip, source file)
    """
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, src in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, src.read_bytes())


def build_package_wheel(repo: Path, dest: Path) -> Path:
    """Build the airflow-mlops wheel from ``repo`` into ``dest`` reproducibly (no network, no build isolation).

    :param repo: repository root with pyproject.toml
    :param dest: folder for the wheel
    """
    env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH, "PIP_NO_INPUT": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a copy: setuptools writes build/ and *.egg-info next to the sources otherwise.
        src = Path(tmp) / "src"
        shutil.copytree(
            repo,
            src,
            ignore=lambda d, names: [
                n
                for n in names
                if n in {".git", ".venv", "build", "dist", ".mlops-local", "tests", "node_modules"}
                or n in _SKIP_DIRS
                or n.endswith(".egg-info")
            ],
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dest),
             str(src)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise DeployError(f"building the {PACKAGE_NAME} wheel failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(dest.glob("airflow_mlops-*.whl"))
    if not wheels:
        raise DeployError(f"building the {PACKAGE_NAME} wheel produced no wheel in {dest}")
    return wheels[-1]


def render_requirements(
    constraints_name: str, pins: dict[str, str], names: list[str], *, no_index: bool, find_links: bool
) -> list[str]:
    """requirements.txt lines: the constraint as MWAA expects it, then one pinned line per requirement.

    :param constraints_name: constraints file name at the root of plugins.zip
    :param pins: version per canonical name (the constraints file plus the package itself)
    :param names: canonical names to pin
    :param no_index: install only from plugins.zip (private-network environments)
    :param find_links: look for wheels in the unpacked plugins.zip
    """
    lines = [f'--constraint "{MWAA_PLUGINS_ROOT}/{constraints_name}"']
    if find_links:
        lines.append(f"--find-links {MWAA_PLUGINS_ROOT}")
    if no_index:
        lines.append("--no-index")
    missing = [n for n in names if n not in pins]
    if missing:
        raise DeployError(
            f"constraints: no pin for {', '.join(missing)}; add them to the constraints file (see its header)"
        )
    lines += [f"{name}=={pins[name]}" for name in sorted(names)]
    return lines


def build_bundle(spec: BundleSpec, log=print) -> Bundle:
    """Build the bundle described by ``spec``.

    :param spec: what to bundle
    :param log: where progress lines go
    """
    from airflow_mlops import __version__

    constraints = spec.constraints or constraints_file(spec.airflow_version, spec.python_version)
    if not constraints.is_file():
        raise DeployError(f"constraints: {constraints} is not a file")
    if spec.out.exists():
        shutil.rmtree(spec.out)
    dags_out = spec.out / "dags"
    shutil.copytree(spec.repo / "dags", dags_out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    constraints_name = constraints.name

    entries = [(p.relative_to(spec.repo / "plugins").as_posix(), p) for p in _iter_files(spec.repo / "plugins")]
    if any(name == constraints_name for name, _ in entries):
        raise DeployError(f"plugins: plugins/{constraints_name} would be shadowed by the bundled constraints file")
    # At the zip's root: MWAA unpacks plugins.zip into /usr/local/airflow/plugins before it installs requirements.
    entries.append((constraints_name, constraints))
    with tempfile.TemporaryDirectory() as tmp:
        wheels: list[Path] = []
        package_wheel = build_package_wheel(spec.repo, Path(tmp)) if spec.package_wheel else None
        if package_wheel is not None:
            wheels.append(package_wheel)
        if spec.wheelhouse is not None:
            wheels += sorted(spec.wheelhouse.glob("*.whl"))
        # Wheels at the zip's root: MWAA unpacks plugins.zip into /usr/local/airflow/plugins, the --find-links dir.
        entries += [(w.name, w) for w in wheels]
        write_zip(spec.out / "plugins.zip", entries)
        names = list(_package_requirements(package_wheel))
        package_version = package_wheel.name.split("-")[1] if package_wheel is not None else __version__

    pins = read_pins(constraints)
    names = [n for n in names if n not in {"apache-airflow"}]  # MWAA provides Airflow itself
    if spec.package_wheel:
        pins[PACKAGE_NAME] = package_version
        names.append(PACKAGE_NAME)
    names += [canonical_name(n) for n in spec.extra_requirements if canonical_name(n) not in names]
    lines = render_requirements(
        constraints_name,
        pins,
        names,
        no_index=spec.wheelhouse is not None,
        find_links=spec.package_wheel or spec.wheelhouse is not None,
    )
    header = (
        f"# Generated by `airflow-mlops deploy bundle` for MWAA Airflow {spec.airflow_version} on Python "
        f"{spec.python_version}; do not edit.\n"
    )
    (spec.out / "requirements.txt").write_text(header + "\n".join(lines) + "\n")
    if spec.startup_script is not None:
        shutil.copyfile(spec.startup_script, spec.out / "startup.sh")

    hashes = {
        p.relative_to(spec.out).as_posix(): sha256_file(p)
        for p in _iter_files(spec.out)
        if p.name != "manifest.json"
    }
    requirements = tuple(line for line in lines if not line.startswith("-"))
    manifest = {
        "airflow_version": spec.airflow_version,
        "python_version": spec.python_version,
        "constraints_name": constraints_name,
        "requirements": list(requirements),
        "hashes": hashes,
    }
    bundle = Bundle(spec.out, constraints_name, hashes, requirements, spec.airflow_version, spec.python_version)
    manifest["install_set"] = bundle.install_set
    (spec.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    n_dags = sum(1 for k in hashes if k.startswith("dags/") and k.endswith(".py"))
    log(f"bundle  {spec.out}")
    log(f"  dags/            {n_dags} DAG files")
    log(f"  plugins.zip      {len(entries)} entries ({len(wheels)} wheels, {constraints_name})  "
        f"sha256 {hashes['plugins.zip'][:12]}")
    log(f"  requirements.txt {len(requirements)} pins  sha256 {hashes['requirements.txt'][:12]}")
    if spec.startup_script is not None:
        log(f"  startup.sh       sha256 {hashes['startup.sh'][:12]}")
    log(f"  install set      {bundle.install_set} (Airflow {spec.airflow_version}; an unchanged set needs no update)")
    return bundle
