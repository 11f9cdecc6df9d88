"""The local checks environment: a venv built from the pinned lock (checks.lock.txt), cached by the lock's hash.

deepchecks cannot share an interpreter with Airflow and MLflow (see the lock's header), so the checks step runs
in its own venv. It is built once per lock content and interpreter version under
``$AIRFLOW_MLOPS_CACHE`` (default ``$XDG_CACHE_HOME/airflow-mlops``, else ``~/.cache/airflow-mlops``) as
``venvs/checks-<hash12>``: in a temporary folder first, renamed into place when complete, under a file lock, so
concurrent tasks and test sessions never see half a venv and never build it twice. The package itself is not
installed there: the step finds ``airflow_mlops`` through ``PYTHONPATH`` (see :func:`step_env`), so a code change
needs no rebuild.

That ``PYTHONPATH`` entry is a folder holding one symlink, ``airflow_mlops -> <this package>``, never the folder
the package sits in: installed from a wheel, that folder is the Airflow environment's site-packages, whose
scikit-learn, numpy and pandas would shadow the lock's and break deepchecks. The step code never imports Airflow,
so the package alone is all it needs.

``python -m airflow_mlops.runtime.checks_env`` builds it (``make checks-env``) and prints the interpreter path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = Path(__file__).with_name("checks.lock.txt")
# Imports that prove the environment works (the step's own and the HTML export's).
SMOKE = "import deepchecks.tabular, plotly, pyarrow.fs, sklearn; print(deepchecks.__version__)"
_COMPLETE = ".complete"


def cache_root(env: dict[str, str] | None = None) -> Path:
    """``$AIRFLOW_MLOPS_CACHE``, else ``$XDG_CACHE_HOME/airflow-mlops``, else ``~/.cache/airflow-mlops``."""
    env = dict(os.environ) if env is None else env
    if env.get("AIRFLOW_MLOPS_CACHE"):
        return Path(env["AIRFLOW_MLOPS_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "airflow-mlops"


def lock_hash(lock: Path = LOCK_FILE, base_python: str | None = None) -> str:
    """First 12 hex chars of sha256(lock content + interpreter major.minor): a venv is per interpreter."""
    version = _python_version(base_python) if base_python else f"{sys.version_info[0]}.{sys.version_info[1]}"
    digest = hashlib.sha256(lock.read_bytes())
    digest.update(f"\npython {version}".encode())
    return digest.hexdigest()[:12]


def _python_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def venv_dir(lock: Path = LOCK_FILE, root: Path | None = None, base_python: str | None = None) -> Path:
    """Where the venv for this lock lives (whether or not it is built yet)."""
    return (root or cache_root()) / "venvs" / f"checks-{lock_hash(lock, base_python)}"


def venv_python(path: Path) -> Path:
    """The interpreter inside a venv folder."""
    return path / "bin" / "python"


PACKAGE_NAME = "airflow_mlops"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _package_version(package_dir: Path) -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (package_dir / "__init__.py").read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else "unknown"


def step_pythonpath(package_dir: Path | None = None, root: Path | None = None) -> str:
    """A folder that holds only ``airflow_mlops -> <package_dir>``, for ``PYTHONPATH`` of a step in the checks venv.

    Never the folder above the package: for a wheel install that is site-packages, and every library in it
    would shadow the checks venv's pinned ones. Cached under ``<root>/pythonpath/pkg-<hash12>``, keyed by the
    package's path and version; created atomically (a symlink renamed into place), so concurrent tasks agree.
    Where the cache root is not writable, a per-user folder in the temp dir is used.

    :param package_dir: the ``airflow_mlops`` package folder; default this one.
    :param root: cache root; default :func:`cache_root`.
    """
    package = (package_dir or PACKAGE_DIR).resolve()
    if not (package / "__init__.py").is_file():
        raise FileNotFoundError(f"{package} is not the {PACKAGE_NAME} package (no __init__.py)")
    key = hashlib.sha256(f"{package}\n{_package_version(package)}".encode()).hexdigest()[:12]
    roots = [root or cache_root(), Path(tempfile.gettempdir()) / f"airflow-mlops-{os.getuid()}"]
    error: OSError | None = None
    for base in roots:
        folder = base / "pythonpath" / f"pkg-{key}"
        try:
            _link_package(folder, package)
        except OSError as err:
            error = err
            continue
        return str(folder)
    raise OSError(f"cannot create the checks step's PYTHONPATH folder under {[str(r) for r in roots]}: {error}")


def _link_package(folder: Path, package: Path) -> None:
    link = folder / PACKAGE_NAME
    if link.is_symlink() and Path(os.readlink(link)) == package and os.listdir(folder) == [PACKAGE_NAME]:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # anything else in it would be importable by the step: remove it
        if (entry.name == PACKAGE_NAME and entry.is_symlink()) or entry.name.startswith(f".{PACKAGE_NAME}.tmp-"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    tmp = folder / f".{PACKAGE_NAME}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(package, target_is_directory=True)
    os.replace(tmp, link)  # atomic: a concurrent reader sees the old link or the new one, never none


def step_env(package_dir: Path | None = None, root: Path | None = None) -> dict[str, str]:
    """Env for a step in the checks venv: the package and nothing else of this environment is importable.

    ``PYTHONPATH`` is replaced, not extended: the worker's own entries can hold its libraries too.
    ``PYTHONSAFEPATH`` keeps ``python -m`` from putting the working directory first on ``sys.path``;
    ``PYTHONNOUSERSITE`` keeps a user site-packages out (a venv ignores it already; belt and braces).
    """
    return {"PYTHONPATH": step_pythonpath(package_dir, root), "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1"}


def ensure_checks_env(lock: Path = LOCK_FILE, root: Path | None = None, base_python: str | None = None,
                      log: Callable[[str], None] = print) -> str:
    """Return the checks venv's interpreter, building the venv first if this lock has none yet.

    :param lock: the pinned requirements file.
    :param root: cache root; default :func:`cache_root`.
    :param base_python: interpreter to create the venv from; default this one.
    :param log: progress lines.
    """
    base_python = base_python or sys.executable
    target = venv_dir(lock, root, base_python)
    if (target / _COMPLETE).is_file():
        return str(venv_python(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # a second builder waits here, then finds the venv complete
        if (target / _COMPLETE).is_file():
            return str(venv_python(target))
        _build(lock, target, base_python, log)
    return str(venv_python(target))


def _run(argv: list[str], log: Callable[[str], None]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"checks venv build failed at `{' '.join(argv)}` (exit {proc.returncode}):\n{tail}")


def _build(lock: Path, target: Path, base_python: str, log: Callable[[str], None]) -> None:
    began = time.monotonic()
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if target.exists():  # a stale, incomplete folder from an interrupted older layout: replace it
        shutil.rmtree(target)
    log(f"building the checks venv {target} from {lock} (once per lock; about a minute)")
    try:
        _run([base_python, "-m", "venv", str(tmp)], log)
        python = str(venv_python(tmp))
        log("  installing the pinned set (pip install --no-deps -r lock)")
        # --no-deps: exactly the lock, nothing resolved at install time; `pip check` then proves it is complete.
        _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-r",
              str(lock)], log)
        _run([python, "-m", "pip", "check"], log)
        log("  verifying imports")
        _run([python, "-c", SMOKE], log)
        (tmp / _COMPLETE).write_text(f"{lock_hash(lock, base_python)}\n")
        # A venv's interpreter finds its site-packages relative to itself, so the folder can move once built
        # (only the console scripts' shebangs keep the temporary path; nothing here uses them).
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"checks venv ready in {time.monotonic() - began:.0f}s: {venv_python(target)}")


def main() -> int:
    """Build (or find) the checks venv and print its interpreter."""
    python = ensure_checks_env(log=lambda line: print(line, file=sys.stderr))
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
