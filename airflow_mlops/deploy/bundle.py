"""Build the MWAA bundle: ``dags/`` as-is, ``plugins.zip`` in MWAA's layout, a pinned ``requirements.txt``.

Layout written under ``out``::

    dags/                      the repository's dags/ plus the vendored constraints file
    plugins.zip                zipped from inside plugins/ (no top folder), with the airflow-mlops wheel
                               and optionally a wheelhouse for private-network environments
    requirements.txt           --constraint "/usr/local/airflow/dags/<constraints>", pinned requirements
    startup.sh                 optional startup script
    manifest.json              sha256 of every artifact

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

from airflow_mlops.deploy import MWAA_DAGS_ROOT, MWAA_PLUGINS_ROOT, DeployError

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


def _package_requirements() -> list[str]:
    """The airflow-mlops distribution's own runtime requirements (no extras), as declared names."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(PACKAGE_NAME) or []
    except PackageNotFoundError as exc:  # pragma: no cover - the CLI runs from an install
        raise DeployError(f"{PACKAGE_NAME} is not installed: pip install -e . first") from exc
    names = []
    for req in declared:
        if "extra ==" in req:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if match:
            names.append(canonical_name(match.group(0)))
    return names


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
    """

    repo: Path
    out: Path
    airflow_version: str = DEFAULT_AIRFLOW_VERSION
    python_version: str = DEFAULT_PYTHON_VERSION
    constraints: Path | None = None
    wheelhouse: Path | None = None
    startup_script: Path | None = None
    package_wheel: bool = True

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
        if self.out.resolve() in {self.repo.resolve(), (self.repo / "dags").resolve()}:
            raise DeployError(f"out: {self.out} would overwrite the sources; pick e.g. build/mwaa")


@dataclass(frozen=True)
class Bundle:
    """A built bundle.

    :param root: the output folder
    :param constraints_name: file name of the constraints file inside dags/
    :param hashes: sha256 per artifact path relative to root (dags files included)
    :param requirements: the pinned requirement lines
    """

    root: Path
    constraints_name: str
    hashes: dict[str, str] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()

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
        return cls(root, data["constraints_name"], data["hashes"], tuple(data["requirements"]))


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

    :param constraints_name: constraints file name inside the DAGs folder
    :param pins: version per canonical name (the constraints file plus the package itself)
    :param names: canonical names to pin
    :param no_index: install only from plugins.zip (private-network environments)
    :param find_links: look for wheels in the unpacked plugins.zip
    """
    lines = [f'--constraint "{MWAA_DAGS_ROOT}/{constraints_name}"']
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
    shutil.copyfile(constraints, dags_out / constraints_name)

    entries = [(p.relative_to(spec.repo / "plugins").as_posix(), p) for p in _iter_files(spec.repo / "plugins")]
    with tempfile.TemporaryDirectory() as tmp:
        wheels: list[Path] = []
        if spec.package_wheel:
            wheels.append(build_package_wheel(spec.repo, Path(tmp)))
        if spec.wheelhouse is not None:
            wheels += sorted(spec.wheelhouse.glob("*.whl"))
        # Wheels at the zip's root: MWAA unpacks plugins.zip into /usr/local/airflow/plugins, the --find-links dir.
        entries += [(w.name, w) for w in wheels]
        write_zip(spec.out / "plugins.zip", entries)

    pins = read_pins(constraints)
    names = list(_package_requirements())
    names = [n for n in names if n not in {"apache-airflow"}]  # MWAA provides Airflow itself
    if spec.package_wheel:
        pins[PACKAGE_NAME] = __version__
        names.append(PACKAGE_NAME)
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
    (spec.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    n_dags = sum(1 for k in hashes if k.startswith("dags/") and k.endswith(".py"))
    log(f"bundle  {spec.out}")
    log(f"  dags/            {n_dags} DAG files + {constraints_name}")
    log(f"  plugins.zip      {len(entries)} entries ({len(wheels)} wheels)  sha256 {hashes['plugins.zip'][:12]}")
    log(f"  requirements.txt {len(requirements)} pins  sha256 {hashes['requirements.txt'][:12]}")
    if spec.startup_script is not None:
        log(f"  startup.sh       sha256 {hashes['startup.sh'][:12]}")
    return Bundle(spec.out, constraints_name, hashes, requirements)
