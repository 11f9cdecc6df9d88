"""Child-process probe: import one DAG file the way Airflow's DAG processor does and report on it as JSON.

Run as a script (``python _dag_probe.py FILE``) by ``validate`` in a fresh interpreter, possibly a different
one (the MWAA-parity venv), so it imports nothing from airflow_mlops itself. The last stdout line is the report.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback

HEAVY = ("mlflow", "deepchecks", "sklearn", "torch", "pandas", "boto3", "pyarrow", "kubernetes", "tensorflow")


def _cycle(tasks: dict) -> list[str]:
    """A cycle of task ids, or [] when the graph is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(tid: str) -> list[str]:
        state[tid] = 1
        stack.append(tid)
        for nxt in sorted(tasks[tid].downstream_task_ids):
            if nxt not in tasks:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[tid] = 2
        return []

    for tid in sorted(tasks):
        if tid not in state:
            found = visit(tid)
            if found:
                return found
    return []


def main(path: str) -> dict:
    """Import ``path`` and describe its DAGs."""
    import airflow.sdk  # noqa: F401  # preloaded, as in Airflow's DAG processor: not charged to the file
    from airflow.sdk import DAG

    before = set(sys.modules)
    report: dict = {"file": path, "error": None, "dags": [], "heavy": [], "seconds": 0.0}
    module = None
    started = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location("mwaa_probe_target", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException:
        report["error"] = traceback.format_exc(limit=-3)
    report["seconds"] = time.perf_counter() - started
    loaded = {m.split(".")[0] for m in set(sys.modules) - before}
    report["heavy"] = sorted(m for m in loaded if m in HEAVY)
    for value in vars(module).values() if module is not None else ():
        if not isinstance(value, DAG):
            continue
        tasks = dict(value.task_dict)
        report["dags"].append(
            {
                "dag_id": value.dag_id,
                "tags": sorted(value.tags or ()),
                "cycle": _cycle(tasks),
                "tasks": [
                    {"task_id": t.task_id, "owner": t.owner, "retries": t.retries}
                    for t in sorted(tasks.values(), key=lambda t: t.task_id)
                ],
            }
        )
    return report


def _import_path(extra: list[str]) -> None:
    """``sys.path`` as Airflow's DAG processor has it: the DAGs folder and the plugins folder (MWAA: plugins.zip
    extracted to /usr/local/airflow/plugins; a zip on ``sys.path`` imports the same), never this script's folder."""
    here = sys.path[0]
    sys.path[:] = [*extra, *(p for p in sys.path[1:] if p != here)]


if __name__ == "__main__":
    import os

    _import_path([p for p in os.environ.get("MLOPS_PROBE_PATH", "").split(os.pathsep) if p])
    print(json.dumps(main(sys.argv[1])))
