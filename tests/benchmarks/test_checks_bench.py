"""P4: the checks operator vs a bare deepchecks ``suite.run()``; sampled runs on 10k / 100k / 1M rows.

Timings are printed, never asserted (these machines are noisy). Like for like: the same cached checks venv, the
same Parquet, the same suites (data_integrity + train_test_validation, label ``target``, ``color`` categorical)
and the same work and exit on both sides:
- bare: a process that imports deepchecks, reads the Parquet, calls ``suite.run()``, saves a JSON summary and the
  HTML report, then exits as the step does (stops joblib's workers, runs atexit, ``os._exit``: no interpreter
  teardown on either side);
- step: ``python -m airflow_mlops.steps.checks`` as its own process, with the same inputs;
- operator: the ``data_checks`` task under ``dag.test()`` (plan, the step process, result read back, table, gate).
Both processes are timed from outside as whole processes (interpreter start to exit); each also reports its
in-process ``suite.run()`` time, so the overhead around deepchecks is visible separately from deepchecks itself.
Target: operator task / bare process <= 1.2 with the venv cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.runtime.checks_env import ensure_checks_env, step_env
from airflow_mlops.steps import contract
from tests.dagfiles import load_dag

BARE = """
import atexit, json, logging, os, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from deepchecks import set_verbosity
from deepchecks.tabular import Dataset, Suite
from deepchecks.tabular.suites import data_integrity, train_test_validation
set_verbosity(logging.WARNING)
train, test, out = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]), sys.argv[3]
suite = Suite("bare", *data_integrity().checks.values(), *train_test_validation().checks.values())
ds = lambda f: Dataset(f, label="target", cat_features=["color"])
began = time.perf_counter()
result = suite.run(train_dataset=ds(train), test_dataset=ds(test))
ran = time.perf_counter() - began
os.makedirs(out, exist_ok=True)
summary = [{"header": str(r.get_header()),
            "conditions": [c.category.name for c in getattr(r, "conditions_results", [])]} for r in result.results]
with open(os.path.join(out, "result.json"), "w") as fh:
    json.dump({"checks": summary, "seconds": {"run": ran}}, fh)
result.save_as_html(os.path.join(out, "report.html"), as_widget=False)
print(f"BARE suite_run {ran:.3f}")
# The step's exit (airflow_mlops.steps.checks._exit): stop joblib's loky workers, run atexit, skip teardown.
loky = sys.modules.get("joblib.externals.loky.reusable_executor")
executor = getattr(loky, "_executor", None)
if executor is not None:
    executor.shutdown(wait=True, kill_workers=True)
atexit._run_exitfuncs()
sys.stdout.flush()
os._exit(0)
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


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Run a whole process; return (wall seconds from outside, exit code, peak RSS in KiB)."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None
    output = proc.stdout.read()
    proc.stdout.close()
    assert proc.returncode == 0, output[-3000:]
    return seconds, proc.returncode, usage.ru_maxrss


def _step_argv(python: str, train: Path, test: Path, *extra: str) -> list[str]:
    return [python, "-m", "airflow_mlops.steps.checks", "--suite", "data_integrity", "--suite",
            "train_test_validation", "--train-uri", str(train), "--test-uri", str(test), "--label", "target",
            "--cat-features", "color", *extra]


def test_p4_operator_vs_bare_suite_run(airflow_db: Path, mlops_home: Path, tmp_path: Path,
                                       checks_python: str) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    frame(569, 1).to_parquet(train, index=False)
    frame(569, 2).to_parquet(test, index=False)
    base = {**os.environ, **step_env()}
    runs: dict[str, list[float]] = {k: [] for k in ("bare", "step", "operator", "bare_suite", "step_suite",
                                                    "operator_suite")}
    for i in range(3):
        bare_out = tmp_path / f"bare-{i}"
        seconds, _, _ = _timed([checks_python, "-c", BARE, str(train), str(test), str(bare_out)], base)
        runs["bare"].append(seconds)
        runs["bare_suite"].append(json.loads((bare_out / "result.json").read_text())["seconds"]["run"])
        assert (bare_out / "report.html").stat().st_size > 100_000  # the same HTML work as the step

        step_out = tmp_path / f"step-{i}"
        env = {**base, contract.OUTPUT_URI: str(step_out), contract.RESULT_URI: str(step_out / "record.json")}
        seconds, _, _ = _timed(_step_argv(checks_python, train, test), env)
        runs["step"].append(seconds)
        result = json.loads((step_out / "result.json").read_text())
        runs["step_suite"].append(result["seconds"]["run"])
        assert (step_out / "report.html").stat().st_size > 100_000
        assert len(result["checks"]) == len(json.loads((bare_out / "result.json").read_text())["checks"])

        run = load_dag("checks_bench_test").test(run_conf={"train_uri": str(train), "test_uri": str(test)})
        (ti,) = [t for t in run.get_task_instances() if t.task_id == "data_checks"]
        assert str(ti.state) == "success"
        runs["operator"].append((ti.end_date - ti.start_date).total_seconds())
        xcom = ti.xcom_pull(task_ids="data_checks")
        runs["operator_suite"].append(json.loads(Path(xcom["json_uri"]).read_text())["seconds"]["run"])
    med = {k: sorted(v)[1] for k, v in runs.items()}
    print("\nP4 checks operator vs bare suite.run() (569 rows, data_integrity + train_test_validation, median of 3;"
          "\n    all sides: suite.run + JSON + HTML report, same exit):"
          f"\n  bare process       {med['bare']:6.2f}s  (suite.run in process {med['bare_suite']:.2f}s)"
          f"\n  step process       {med['step']:6.2f}s  (suite.run in process {med['step_suite']:.2f}s), "
          f"ratio to bare {med['step'] / med['bare']:.2f}"
          f"\n  operator task      {med['operator']:6.2f}s  (suite.run in process {med['operator_suite']:.2f}s), "
          f"ratio to bare {med['operator'] / med['bare']:.2f} (target <= 1.2)")


@pytest.mark.parametrize("rows", [10_000, 100_000, 1_000_000])
def test_p4_sampled_rows_wall_time_and_peak_memory(tmp_path: Path, checks_python: str, rows: int) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    test_rows = max(rows // 4, 1)
    frame(rows, 1).to_parquet(train, index=False)
    frame(test_rows, 2).to_parquet(test, index=False)
    n_samples = 10_000
    env = {**os.environ, **step_env(), contract.OUTPUT_URI: str(tmp_path / "out"),
           contract.RESULT_URI: str(tmp_path / "result.json")}
    seconds, _, peak_kib = _timed(_step_argv(checks_python, train, test, "--n-samples", str(n_samples)), env)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    # Sampling happened where a dataset is larger than n_samples, and the JSON says so.
    assert result["n_samples"] == n_samples and result["rows"] == {"train": rows, "test": test_rows}
    expected = {role: n_samples for role, n in (("train", rows), ("test", test_rows)) if n > n_samples}
    assert result["sampled"] == expected, result["sampled"]
    if rows == 1_000_000:
        assert result["sampled"] == {"train": n_samples, "test": n_samples}
    print(f"\nP4 sampled checks: {rows:>9,} train rows (n_samples {n_samples:,}, sampled {result['sampled']}): "
          f"wall {seconds:.1f}s (suite.run {result['seconds']['run']:.1f}s, load {result['seconds']['load']:.1f}s), "
          f"peak RSS {peak_kib / 1024:.0f} MiB")
