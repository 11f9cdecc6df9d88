"""The checks venv cache: where it lives, what its key covers, that a complete venv is reused as it is."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_mlops.runtime import checks_env


def test_cache_root_precedence(tmp_path: Path) -> None:
    assert checks_env.cache_root({"AIRFLOW_MLOPS_CACHE": str(tmp_path)}) == tmp_path
    assert checks_env.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/airflow-mlops")
    assert checks_env.cache_root({}).name == "airflow-mlops"


def test_key_covers_the_lock_content_and_the_interpreter(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("a==1\n")
    first = checks_env.lock_hash(lock)
    assert len(first) == 12 and first == checks_env.lock_hash(lock, sys.executable)
    lock.write_text("a==2\n")
    assert checks_env.lock_hash(lock) != first
    assert checks_env.venv_dir(lock, tmp_path) == tmp_path / "venvs" / f"checks-{checks_env.lock_hash(lock)}"


def test_the_shipped_lock_pins_every_package() -> None:
    lines = [line.strip() for line in checks_env.LOCK_FILE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    pins = dict(line.split("==") for line in lines)
    assert pins["deepchecks"] == "0.19.1" and pins["scikit-learn"] == "1.4.2" and pins["plotly"].startswith("5.")


def test_a_complete_venv_is_reused_without_building(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("a==1\n")
    target = checks_env.venv_dir(lock, tmp_path)
    target.mkdir(parents=True)
    (target / ".complete").write_text("x\n")
    lines: list[str] = []
    assert checks_env.ensure_checks_env(lock, tmp_path, log=lines.append) == str(target / "bin" / "python")
    assert lines == []  # nothing built, nothing logged


def test_a_failed_build_leaves_no_venv_behind(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("not a valid requirement !!\n")  # pip rejects it without asking an index
    try:
        checks_env.ensure_checks_env(lock, tmp_path, log=lambda line: None)
    except RuntimeError as err:
        assert "checks venv build failed" in str(err)
    else:
        raise AssertionError("the build should have failed")
    assert sorted(p.name for p in (tmp_path / "venvs").iterdir()) == [
        f"checks-{checks_env.lock_hash(lock)}.lock"]  # only the lock file: no temp or half-built venv


def _fake_package(site: Path) -> Path:
    package = site / "airflow_mlops"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (site / "sklearn").mkdir()  # what a wheel install's site-packages holds next to the package
    return package


def test_step_pythonpath_holds_only_a_link_to_the_package(tmp_path: Path) -> None:
    """Not the folder above the package (a wheel install's site-packages): a folder with just the package."""
    package = _fake_package(tmp_path / "site-packages")
    folder = Path(checks_env.step_pythonpath(package, tmp_path / "cache"))
    assert folder.parent == tmp_path / "cache" / "pythonpath" and folder.name.startswith("pkg-")
    assert [p.name for p in folder.iterdir()] == ["airflow_mlops"]
    assert (folder / "airflow_mlops").is_symlink() and (folder / "airflow_mlops").resolve() == package
    assert checks_env.step_pythonpath(package, tmp_path / "cache") == str(folder)  # cached: same folder again


def test_step_pythonpath_is_keyed_by_package_path_and_version(tmp_path: Path) -> None:
    first = _fake_package(tmp_path / "a")
    second = _fake_package(tmp_path / "b")
    root = tmp_path / "cache"
    one, two = checks_env.step_pythonpath(first, root), checks_env.step_pythonpath(second, root)
    assert one != two
    (first / "__init__.py").write_text('__version__ = "10.0.0"\n')
    assert checks_env.step_pythonpath(first, root) not in (one, two)


def test_step_pythonpath_repairs_a_folder_with_stray_entries(tmp_path: Path) -> None:
    package = _fake_package(tmp_path / "site-packages")
    folder = Path(checks_env.step_pythonpath(package, tmp_path / "cache"))
    (folder / "numpy").mkdir()
    (folder / "airflow_mlops").unlink()
    (folder / "airflow_mlops").mkdir()  # a stale copy instead of the link
    assert checks_env.step_pythonpath(package, tmp_path / "cache") == str(folder)
    assert [p.name for p in folder.iterdir()] == ["airflow_mlops"] and (folder / "airflow_mlops").is_symlink()


def test_step_pythonpath_of_this_package_and_the_step_env(tmp_path: Path) -> None:
    env = checks_env.step_env(root=tmp_path)
    assert Path(env["PYTHONPATH"], "airflow_mlops").resolve() == checks_env.PACKAGE_DIR
    assert env["PYTHONSAFEPATH"] == "1" and env["PYTHONNOUSERSITE"] == "1"
    try:
        checks_env.step_pythonpath(tmp_path / "nothing", tmp_path)
    except FileNotFoundError as err:
        assert "no __init__.py" in str(err)
    else:
        raise AssertionError("a folder without the package must be refused")
