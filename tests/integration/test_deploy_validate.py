"""validate: every DAG imported in a fresh interpreter; import errors, heavy imports, cycles and house rules caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.deploy.bundle import Bundle, BundleSpec, build_bundle
from airflow_mlops.deploy.validate import check_dags, validate_bundle

ROOT = Path(__file__).resolve().parents[2]
# Each DAG file is imported in its own fresh interpreter (a few seconds each with Airflow).
pytestmark = pytest.mark.slow

GOOD = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("good", schedule=None, start_date=pendulum.datetime(2026, 1, 1), tags=["t"],
         default_args={"owner": "ml-platform", "retries": 2}) as dag:
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
'''
BROKEN = "from airflow.sdk import DAG\nimport no_such_module_xyz\n"
HEAVY = GOOD.replace("import pendulum", "import pendulum\nimport pandas").replace('"good"', '"heavy"')
SLOPPY = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("sloppy", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
    a, b, c = (EmptyOperator(task_id=t) for t in "abc")
    a >> b >> c >> a
'''


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    for name, text in {"good.py": GOOD, "broken.py": BROKEN, "heavy.py": HEAVY, "sloppy.py": SLOPPY}.items():
        (folder / name).write_text(text)
    (folder / "_helpers.py").write_text("raise RuntimeError('helpers are not DAG files')\n")
    return folder


def test_each_problem_is_reported_per_file(dags: Path) -> None:
    reports = {r.file: r for r in check_dags(dags, budget_s=30)}
    assert sorted(reports) == ["broken.py", "good.py", "heavy.py", "sloppy.py"]
    assert reports["good.py"].problems == () and reports["good.py"].dag_ids == ("good",)
    assert reports["broken.py"].problems == (
        "import error: ModuleNotFoundError: No module named 'no_such_module_xyz'",
    )
    heavy = reports["heavy.py"].problems
    assert len(heavy) == 1 and heavy[0].startswith("heavy top-level import(s): pandas")
    sloppy = " | ".join(reports["sloppy.py"].problems)
    assert "sloppy: cycle a -> b -> c -> a" in sloppy
    assert "sloppy: no tags" in sloppy
    assert "sloppy: no owner on a, b, c" in sloppy
    assert "sloppy: retries=0 on a, b, c" in sloppy


def test_dags_import_helpers_beside_them_and_airflowignore_is_honoured(tmp_path: Path) -> None:
    """As Airflow's DAG processor: the DAGs folder and plugins are importable, helper modules (no "airflow" and
    "dag" in them) are not DAG files, .airflowignore excludes files and folders; names of our own modules
    (validate, bundle) do not shadow a DAG's imports."""
    folder = tmp_path / "dags"
    (folder / "common").mkdir(parents=True)
    (folder / "common" / "__init__.py").write_text("")
    (folder / "common" / "defaults.py").write_text("OWNER = 'ml-platform'\n")
    (folder / "bundle.py").write_text("VALUE = 1\n")  # a helper named like a module next to the probe
    (folder / "uses_helpers.py").write_text(GOOD.replace('"good"', '"uses_helpers"').replace(
        "from airflow.sdk import DAG", "from airflow.sdk import DAG\nfrom common.defaults import OWNER\n"
        "import bundle\nassert bundle.VALUE == 1"))
    (folder / "scratch").mkdir()
    (folder / "scratch" / "wip.py").write_text(BROKEN)
    (folder / "old_broken.py").write_text(BROKEN)
    (folder / ".airflowignore").write_text("scratch/\nold_*.py  # retired\n")
    plugins = tmp_path / "plugins.zip"
    import zipfile

    with zipfile.ZipFile(plugins, "w") as zf:
        zf.writestr("team_plugin_helpers.py", "TAGS = ['from-plugins']\n")
    (folder / "uses_plugins.py").write_text(GOOD.replace('"good"', '"uses_plugins"').replace(
        "from airflow.sdk import DAG", "from airflow.sdk import DAG\nfrom team_plugin_helpers import TAGS"))
    reports = {r.file: r for r in check_dags(folder, budget_s=30, plugins=plugins)}
    assert sorted(reports) == ["uses_helpers.py", "uses_plugins.py"]
    assert reports["uses_helpers.py"].problems == (), reports["uses_helpers.py"].problems
    assert reports["uses_plugins.py"].problems == (), reports["uses_plugins.py"].problems


def test_relative_dags_folder(dags: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dags.parent)
    assert [r.problems for r in check_dags(Path("dags"), budget_s=30) if r.file == "good.py"] == [()]


def test_parse_budget(dags: Path) -> None:
    """The heavy import costs parse time; a tight budget flags the file with its measured time."""
    reports = {r.file: r for r in check_dags(dags, budget_s=0.001)}
    assert any("over the 0.00s budget" in p for p in reports["heavy.py"].problems)
    assert reports["heavy.py"].seconds > reports["good.py"].seconds


def test_bundle_with_broken_dag_fails(tmp_path: Path) -> None:
    bundle = build_bundle(BundleSpec(ROOT, tmp_path / "mwaa"), log=lambda _: None)
    (bundle.dags / "broken.py").write_text(BROKEN)
    lines: list[str] = []
    report = validate_bundle(Bundle.load(bundle.root), budget_s=30, log=lines.append)
    assert not report.ok and lines[-1] == "validation: FAILED"
    assert any(line.startswith("broken.py") and "1 problem(s)" in line for line in lines)
