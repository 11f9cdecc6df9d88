"""Test session set-up: an isolated Airflow home (SQLite) and MLflow store, before anything imports Airflow.

Airflow reads its configuration at import time, so the environment is set at module import of this conftest.
The DAGs folder is a temp dir with links to the repository's dags/ and tests/dags/, because dag.test() runs
only DAGs that live in the configured DAGs folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SESSION = Path(tempfile.mkdtemp(prefix="airflow-mlops-tests-"))
_DAGS = _SESSION / "dags"
_DAGS.mkdir()
for source in [*sorted((ROOT / "dags").glob("*.py")), *sorted((ROOT / "tests" / "dags").glob("*.py"))]:
    (_DAGS / source.name).symlink_to(source)

os.environ.update({
    "AIRFLOW_HOME": str(_SESSION / "airflow"),
    "MLOPS_HOME": str(_SESSION / "mlops"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "GIT_PYTHON_REFRESH": "quiet",
})
os.environ.pop("AIRFLOW_VAR_MLOPS_RUNTIME", None)
(_SESSION / "airflow").mkdir()
# MLflow's defaults (sqlite:///mlflow.db, ./mlruns) are relative to the working directory: keep them out of the repo.
os.chdir(_SESSION)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """The session's scratch root (Airflow home, MLflow store, DAGs folder)."""
    return _SESSION


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite), once per session."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL,
                   env=os.environ.copy())
    return _SESSION / "airflow"


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh embedded stack (artifacts + MLflow SQLite) for one test."""
    home = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    # MLflow reads credentials from os.environ; the hook scopes them to each call, and steps/tests may set them:
    # start every test with none.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")
    return home


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION, ignore_errors=True)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real moto server (S3, SQS, SNS, Secrets Manager, ...) on a free local port, one per test module: boto3 and
    the MWAA stand-in talk HTTP to it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
