"""Which files in a DAGs folder Airflow parses as DAG files: one rule for validation and for the sync order."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

AIRFLOWIGNORE = ".airflowignore"


def read_airflowignore(folder: Path) -> list[str]:
    """The glob patterns of ``folder/.airflowignore`` (Airflow 3's default syntax), comments dropped.

    :param folder: the DAGs folder
    """
    ignore = folder / AIRFLOWIGNORE
    if not ignore.is_file():
        return []
    patterns = [line.split("#", 1)[0].strip() for line in ignore.read_text().splitlines()]
    return [p for p in patterns if p]


def is_airflowignored(rel: str, patterns: Sequence[str]) -> bool:
    """Whether ``.airflowignore`` patterns exclude ``rel`` (a path relative to the DAGs folder) or a folder above it.

    :param rel: posix path relative to the DAGs folder
    :param patterns: from :func:`read_airflowignore`
    """
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pat = pattern.lstrip("/").rstrip("/")
        for cand in candidates:
            if fnmatch.fnmatchcase(cand, pat) or ("/" not in pat and fnmatch.fnmatchcase(cand.rsplit("/", 1)[-1], pat)):
                return True
    return False


def might_contain_dag(path: Path) -> bool:
    """Airflow's safe-mode heuristic: a file is parsed as a DAG file only if it mentions both words.

    :param path: the file
    """
    text = path.read_bytes().lower()
    return b"airflow" in text and b"dag" in text


def is_dag_file(path: Path, rel: str, patterns: Sequence[str]) -> bool:
    """Whether Airflow's DAG processor would import this file as a DAG file.

    :param path: the file
    :param rel: its path relative to the DAGs folder
    :param patterns: the folder's ``.airflowignore`` patterns
    """
    name = rel.rsplit("/", 1)[-1]
    return (
        name.endswith(".py")
        and not name.startswith("_")
        and "__pycache__" not in rel.split("/")
        and not is_airflowignored(rel, patterns)
        and might_contain_dag(path)
    )
