"""MWAA bundle: contents, plugins.zip layout, pinned requirements with the vendored constraints, reproducibility.

The constraints travel inside plugins.zip: requirements.txt names nothing under dags/, so requirements, constraints
and wheels form one set versioned by the two object versions an UpdateEnvironment names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.bundle import Bundle, BundleSpec, build_bundle, read_pins, write_zip
from airflow_mlops.deploy.validate import check_plugins_zip, check_requirements

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_bundle(BundleSpec(ROOT, tmp_path_factory.mktemp("b") / "mwaa"), log=lambda _: None)


def test_dags_copied_as_is_and_constraints_ship_in_plugins_zip(bundle: Bundle) -> None:
    for src in (ROOT / "dags").glob("*.py"):
        assert (bundle.dags / src.name).read_bytes() == src.read_bytes()
    assert not (bundle.dags / "constraints-3.3.1-py3.12.txt").exists()
    assert not list(bundle.dags.rglob("__pycache__"))
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        shipped = zf.read("constraints-3.3.1-py3.12.txt")
    assert shipped == (ROOT / "airflow_mlops/deploy/constraints/constraints-3.3.1-py3.12.txt").read_bytes()


def test_plugins_zip_is_zipped_from_inside_plugins(bundle: Bundle) -> None:
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        names = zf.namelist()
    assert "airflow_mlops_plugin.py" in names  # at the root, not plugins/airflow_mlops_plugin.py
    assert not any(n.startswith("plugins/") or n.endswith(".pyc") for n in names)
    wheels = [n for n in names if n.endswith(".whl")]
    assert len(wheels) == 1 and wheels[0].startswith("airflow_mlops-") and "/" not in wheels[0]
    assert check_plugins_zip(bundle.plugins_zip, bundle.requirements_txt) == []


def test_requirements_pinned_to_constraints(bundle: Bundle) -> None:
    lines = bundle.requirements_txt.read_text().splitlines()
    assert '--constraint "/usr/local/airflow/plugins/constraints-3.3.1-py3.12.txt"' in lines
    assert "--find-links /usr/local/airflow/plugins" in lines and "--no-index" not in lines
    assert "/usr/local/airflow/dags" not in bundle.requirements_txt.read_text()
    pins = read_pins(bundle.requirements_txt)
    constraints = read_pins(ROOT / "airflow_mlops/deploy/constraints/constraints-3.3.1-py3.12.txt")
    assert constraints["apache-airflow"] == "3.3.1"
    assert pins["airflow-mlops"] == "0.1.0" and "apache-airflow" not in pins
    for name in ("apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes", "mlflow-skinny"):
        assert pins[name] == constraints[name]
    assert check_requirements(bundle) == []


def test_reproducible_bytes(bundle: Bundle, tmp_path: Path) -> None:
    """Same sources, same hashes: an unchanged repo never triggers an MWAA update."""
    again = build_bundle(BundleSpec(ROOT, tmp_path / "again"), log=lambda _: None)
    assert again.hashes == bundle.hashes
    assert Bundle.load(again.root).hashes == again.hashes


def test_wheelhouse_and_startup_script(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    for name in ("apache_airflow_providers_amazon-9.39.0-py3-none-any.whl",
                 "apache_airflow_providers_cncf_kubernetes-10.25.0-py3-none-any.whl",
                 "mlflow_skinny-3.17.2-py3-none-any.whl"):
        (wheelhouse / name).write_bytes(b"wheel")
    script = tmp_path / "startup.sh"
    script.write_text("#!/bin/sh\nexport MLOPS_RUNTIME=kubernetes\n")
    b = build_bundle(BundleSpec(ROOT, tmp_path / "out", wheelhouse=wheelhouse, startup_script=script),
                     log=lambda _: None)
    assert "--no-index" in b.requirements_txt.read_text().splitlines()
    assert b.startup_script is not None and b.startup_script.read_text() == script.read_text()
    assert check_plugins_zip(b.plugins_zip, b.requirements_txt) == []
    # A wheel missing from the wheelhouse is caught: MWAA could not install it without an index.
    (wheelhouse / "mlflow_skinny-3.17.2-py3-none-any.whl").unlink()
    b2 = build_bundle(BundleSpec(ROOT, tmp_path / "out2", wheelhouse=wheelhouse), log=lambda _: None)
    assert any("mlflow-skinny==3.17.2" in p for p in check_plugins_zip(b2.plugins_zip, b2.requirements_txt))


def test_wrong_layouts_are_caught(tmp_path: Path) -> None:
    plugin = tmp_path / "p.py"
    plugin.write_text("x = 1\n")
    wrong = tmp_path / "wrong.zip"
    write_zip(wrong, [("plugins/p.py", plugin), ("plugins/__pycache__/p.cpython-312.pyc", plugin)])
    problems = check_plugins_zip(wrong)
    assert any("zip from inside the folder" in p for p in problems)
    assert any("bytecode" in p for p in problems)
    (tmp_path / "not.zip").write_text("nope")
    assert check_plugins_zip(tmp_path / "not.zip") == ["plugins.zip: not.zip is not a zip file"]


def test_requirements_conflicting_with_constraints(bundle: Bundle, tmp_path: Path) -> None:
    copy = Bundle.load(Path(shutil.copytree(bundle.root, tmp_path / "copy")))
    text = copy.requirements_txt.read_text().replace("apache-airflow-providers-amazon==9.39.0",
                                                     "apache-airflow-providers-amazon==9.8.0")
    copy.requirements_txt.write_text(text + "requests>=2\n")
    problems = check_requirements(copy)
    assert any("9.8.0 conflicts with the constraint apache-airflow-providers-amazon==9.39.0" in p for p in problems)
    assert any("'requests>=2' is not pinned" in p for p in problems)
    copy.requirements_txt.write_text("apache-airflow-providers-amazon==9.39.0\n")
    assert check_requirements(copy) == [
        "requirements.txt: needs exactly one --constraint line (MWAA requires it), found 0"
    ]
    # The race of the first deploy: a constraints file in dags/ is not versioned with requirements.txt.
    copy.requirements_txt.write_text('--constraint "/usr/local/airflow/dags/constraints-3.3.1-py3.12.txt"\n')
    (problem,) = check_requirements(copy)
    assert "reads from the DAGs folder, which is not versioned with requirements.txt" in problem
    copy.requirements_txt.write_text('--constraint "/usr/local/airflow/plugins/missing.txt"\n')
    assert check_requirements(copy) == [
        "requirements.txt: --constraint /usr/local/airflow/plugins/missing.txt but plugins.zip has no missing.txt"
    ]


def test_install_set_and_extra_requirements(bundle: Bundle, tmp_path: Path) -> None:
    """The install set changes with what MWAA installs (requirements, Airflow version), never with DAG edits."""
    extra = build_bundle(BundleSpec(ROOT, tmp_path / "extra", extra_requirements=("six",)), log=lambda _: None)
    assert "six==1.17.0" in extra.requirements and extra.install_set != bundle.install_set
    assert check_requirements(extra) == []
    upgraded = build_bundle(BundleSpec(ROOT, tmp_path / "332", airflow_version="3.3.2"), log=lambda _: None)
    assert upgraded.install_set != bundle.install_set
    assert '--constraint "/usr/local/airflow/plugins/constraints-3.3.2-py3.12.txt"' in (
        upgraded.requirements_txt.read_text().splitlines())
    assert Bundle.load(upgraded.root).airflow_version == "3.3.2"
    with pytest.raises(DeployError, match="extra_requirements: 'six==1' is not a distribution name"):
        BundleSpec(ROOT, tmp_path / "x", extra_requirements=("six==1",))
    with pytest.raises(DeployError, match="constraints: no pin for not-a-dist"):
        build_bundle(BundleSpec(ROOT, tmp_path / "y", extra_requirements=("not-a-dist",)), log=lambda _: None)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"airflow_version": "3.3"}, "airflow_version"), ({"python_version": "312"}, "python_version"),
     ({"airflow_version": "9.9.9"}, "airflow_version/python_version")],
)
def test_bad_input_names_the_field(kwargs: dict[str, str], field: str, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=field):
        build_bundle(BundleSpec(ROOT, tmp_path / "x", **kwargs), log=lambda _: None)


def test_cli_runs_without_airflow_imported(tmp_path: Path) -> None:
    """CI runs the CLI before any Airflow is installed: it must not import airflow (nor boto3) to bundle."""
    code = (
        "import sys; from airflow_mlops.deploy.cli import main; "
        f"rc = main(['deploy', 'bundle', '--repo', {str(ROOT)!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'boto3')); "
        "print(bad); sys.exit(rc or bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plugins.zip" in proc.stdout and proc.stdout.strip().endswith("[]")
