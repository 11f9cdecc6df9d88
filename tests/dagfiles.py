"""Load a DAG object from the test session's DAGs folder (where dag.test() can serialize it)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any


def load_dag(name: str) -> Any:
    """Import ``<DAGS_FOLDER>/<name>.py`` and return its module-level ``dag``."""
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
