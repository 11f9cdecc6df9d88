"""P4: the checks operator vs a bare deepchecks ``suite.run()``; sampled runs on 10k / 100k / 1M rows.

Printed, never asserted (these machines are noisy). Both sides use the same cached checks venv and data:
- operator: the ``data_checks`` task's duration under ``dag.test()`` (plan, step process with interpreter start
  and imports, Parquet read, the suites, HTML + JSON report, result read back, table and gate);
- bare: a process in the same venv that imports deepchecks, reads the same Parquet and calls ``suite.run()``.
Target: ratio <= 1.2 with the venv cached.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.runtime.checks_env import ensure_checks_env, step_pythonpath
from airflow_mlops.steps import contract
from tests.dagfiles import load_dag

BARE = """
import logging, sys, time, warnings
warnings.filterwarnings("ignore")
began = time.perf_counter()
import pandas as pd
from deepchecks import set_verbosity
from deepchecks.tabular import Dataset, Suite
from deepchecks.tabular.suites import data_integrity, train_test_validation
set_verbosity(logging.WARNING)
train, test = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
suite = Suite("bare", *data_integrity().checks.values(), *train_test_validation().checks.values())
ds = lambda f: Dataset(f, label="target", cat_features=["color"])
suite.run(train_dataset=ds(train), test_dataset=ds(test))
print(f"BARE {time.perf_counter() - began:.3f}")
"""


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    out = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    out["color"] = rng.choice(["red", "green", "blue"], size=rows)
    out["target"] = ((x[:, 0] + rng.normal(scale=1.5, size=rows)) > 0).astype(int)
    return out


@pytest.fixture(scope="module")
def checks_python() -> str:
    return ensure_checks_env()


def test_p4_operator_vs_bare_suite_run(airflow_db: Path, mlops_home: Path, tmp_path: Path,
                                       checks_python: str) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    frame(569, 1).to_parquet(train, index=False)
    frame(569, 2).to_parquet(test, index=False)
    env = {**os.environ, "PYTHONPATH": step_pythonpath()}
    bare, operator = [], []
    for _ in range(3):
        began = time.perf_counter()
        proc = subprocess.run([checks_python, "-c", BARE, str(train), str(test)], env=env, capture_output=True,
                              text=True, check=True)
        bare.append(time.perf_counter() - began)
        assert "BARE" in proc.stdout
        run = load_dag("checks_bench_test").test(run_conf={"train_uri": str(train), "test_uri": str(test)})
        (ti,) = [t for t in run.get_task_instances() if t.task_id == "data_checks"]
        assert str(ti.state) == "success"
        operator.append((ti.end_date - ti.start_date).total_seconds())
    b, o = sorted(bare)[1], sorted(operator)[1]
    print(f"\nP4 checks operator vs bare suite.run() (569 rows, data_integrity + train_test_validation, median of 3):"
          f"\n  bare process {b:.2f}s, operator task {o:.2f}s, ratio {o / b:.2f} (target <= 1.2)")


@pytest.mark.parametrize("rows", [10_000, 100_000, 1_000_000])
def test_p4_sampled_rows_wall_time_and_peak_memory(tmp_path: Path, checks_python: str, rows: int) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    frame(rows, 1).to_parquet(train, index=False)
    frame(max(rows // 4, 1), 2).to_parquet(test, index=False)
    env = {**os.environ, "PYTHONPATH": step_pythonpath(), contract.OUTPUT_URI: str(tmp_path / "out"),
           contract.RESULT_URI: str(tmp_path / "result.json")}
    began = time.perf_counter()
    proc = subprocess.Popen([checks_python, "-m", "airflow_mlops.steps.checks", "--suite", "data_integrity",
                             "--suite", "train_test_validation", "--train-uri", str(train), "--test-uri", str(test),
                             "--cat-features", "color", "--n-samples", "10000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - began
    assert proc.returncode == 0
    print(f"\nP4 sampled checks: {rows:>9,} train rows (n_samples 10,000): wall {seconds:.1f}s, "
          f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
