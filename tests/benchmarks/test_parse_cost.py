"""P1 parse cost: our first-slice DAG file vs the same DAG with stock KubernetesPodOperator vs an empty DAG.

Each DAG file is parsed in a fresh interpreter that already imported ``airflow.sdk`` (as a worker has),
several times interleaved, and the medians are compared side by side in this one run. Target: ours / stock
<= 1.1. Run with ``make bench``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FILES = {
    "airflow-mlops": ROOT / "dags" / "mlops_training_pipeline.py",
    "stock KPO": HERE / "dags" / "stock_kpo_pipeline.py",
    "empty DAG": HERE / "dags" / "empty_dag.py",
}
RUNS = 7
PROBE = """
import importlib.util, sys, time, tracemalloc
import airflow.sdk  # a worker has this loaded before it parses a DAG file
path = sys.argv[1]
tracemalloc.start()
began = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_file", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - began
peak = tracemalloc.get_traced_memory()[1]
print(elapsed, peak, len(sys.modules))
"""


def parse_once(path: Path) -> tuple[float, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    seconds, peak, modules = out.stdout.split()
    return float(seconds), int(peak), int(modules)


def test_parse_cost_ratio() -> None:
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in FILES}
    for _ in range(RUNS):  # interleaved, so drift on a noisy machine hits every variant alike
        for name, path in FILES.items():
            samples[name].append(parse_once(path))
    medians = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    peaks = {name: statistics.median(s[1] for s in runs) for name, runs in samples.items()}
    modules = {name: runs[0][2] for name, runs in samples.items()}
    print(f"\nP1 parse cost, median of {RUNS} fresh interpreters (airflow.sdk preloaded):")
    for name in FILES:
        print(f"  {name:14s} {medians[name] * 1000:8.1f} ms   peak alloc {peaks[name] / 1e6:6.1f} MB   "
              f"modules loaded {modules[name]}")
    ours, stock, empty = medians["airflow-mlops"], medians["stock KPO"], medians["empty DAG"]
    print(f"  ratio airflow-mlops / stock KPO = {ours / stock:.2f}  (target <= 1.1)")
    print(f"  ratio airflow-mlops / empty DAG = {ours / empty:.2f}")
    assert ours / stock <= 1.1
