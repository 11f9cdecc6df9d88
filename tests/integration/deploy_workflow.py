"""Run ``.github/workflows/deploy.yml``'s deploy job, command by command, against local endpoints.

The commands are read from the workflow file itself, so the tests follow its order and its arguments: when the
workflow changes, the tests run the new one. Steps that only set up a GitHub runner (checkout, setup-python,
pip installs, OIDC credentials) are skipped. Two substitutions, both named in :data:`SUBSTITUTED`:

- ``deploy parity-venv`` is skipped: it installs Airflow on Python 3.12 (minutes); ``deploy validate`` imports
  the DAGs with this test venv's interpreter instead, and without ``--resolve`` (the MWAA stand-in runs pip's
  resolver over the same requirements on every update, which is where MWAA resolves them).
- ``--poll 0.2`` is added to ``deploy update``: the stand-in's update takes about a second, not 30 minutes.

Every ``airflow-mlops`` command runs in-process through :func:`airflow_mlops.deploy.cli.main`, with the step's
``env:`` expressions filled from ``expressions`` (an unknown expression fails loudly) and ``$VAR`` expanded as the
runner's shell would.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
SUBSTITUTED = {
    "parity-venv": "skipped: installs Airflow on Python 3.12; validate imports with the test venv instead",
    "--resolve": "dropped from validate: the MWAA stand-in runs pip's resolver on every update",
    "--poll": "0.2 s for update/rollback: the stand-in's update takes about a second",
}
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepRun:
    """One workflow step as it ran.

    :param name: the step's name
    :param argv: the CLI arguments after ``airflow-mlops``
    :param rc: exit code
    :param output: what it printed (stdout and stderr)
    :param seconds: wall time
    """

    name: str
    argv: list[str]
    rc: int
    output: str
    seconds: float


@dataclass
class DeployRun:
    """A whole deploy job as it ran."""

    steps: list[StepRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every step exited 0 (the job stops at the first failure, as GitHub Actions does)."""
        return bool(self.steps) and all(s.rc == 0 for s in self.steps)

    @property
    def seconds(self) -> float:
        """Wall time of the commands."""
        return sum(s.seconds for s in self.steps)

    def step(self, command: str) -> StepRun:
        """The first step running ``deploy <command>``."""
        return next(s for s in self.steps if s.argv[:2] == ["deploy", command])

    def log(self) -> str:
        """Everything the job printed, by step."""
        return "\n".join(f"--- {s.name} (rc {s.rc}, {s.seconds:.1f}s)\n{s.output}" for s in self.steps)


def _resolve(text: str, expressions: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr not in expressions:
            raise KeyError(f"deploy.yml uses ${{{{ {expr} }}}}: give it a value in the test's expressions")
        return expressions[expr]

    return _EXPR.sub(one, str(text))


def _condition_holds(condition: str, expressions: Mapping[str, str]) -> bool:
    match = re.fullmatch(r"\s*([\w.-]+)\s*!=\s*''\s*", condition)
    if not match:
        raise ValueError(f"deploy.yml step condition {condition!r}: the test runner understands only `X != ''`")
    return expressions.get(match.group(1), "") != ""


def deploy_steps(expressions: Mapping[str, str]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(name, run text, step env) for each ``airflow-mlops deploy`` step of the deploy job, in order.

    :param expressions: values of the ``${{ }}`` expressions the job uses
    """
    data = yaml.safe_load(WORKFLOW.read_text())
    job = data["jobs"]["deploy"]
    job_env = {k: _resolve(v, expressions) for k, v in job.get("env", {}).items()}
    for step in job["steps"]:
        run = str(step.get("run", "")).strip()
        if not run.startswith("airflow-mlops deploy"):
            continue
        if "if" in step and not _condition_holds(str(step["if"]), expressions):
            continue
        env = dict(job_env)
        env.update({k: _resolve(v, expressions) for k, v in step.get("env", {}).items()})
        yield str(step.get("name", run)), run, env


def _argv(run: str, env: Mapping[str, str]) -> list[str]:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, "") or (m.group(3) or "")

    expanded = re.sub(r"\$(\w+)|\$\{(\w+)(?::-([^}]*))?\}", value, run)
    words = shlex.split(expanded)
    assert words[0] == "airflow-mlops", run
    argv = words[1:]
    if argv[:2] == ["deploy", "validate"]:
        argv = [a for a in argv if a != "--resolve"]
        if "--python" in argv:
            argv[argv.index("--python") + 1] = sys.executable
    if argv[:2] in (["deploy", "update"], ["deploy", "rollback"]) and "--poll" not in argv:
        argv += ["--poll", "0.2"]
    return argv


def run_cli(argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """One ``airflow-mlops`` command in-process, in ``cwd`` with ``env`` added to os.environ.

    :param argv: arguments after ``airflow-mlops``
    :param cwd: working directory (the checkout)
    :param env: environment variables for the command
    """
    from airflow_mlops.deploy.cli import main

    out = io.StringIO()
    saved_env = dict(os.environ)
    saved_cwd = Path.cwd()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse errors
                rc = int(exc.code or 0)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return rc, out.getvalue()


def run_deploy(
    checkout: Path,
    *,
    env: Mapping[str, str],
    expressions: Mapping[str, str],
    edit: Callable[[list[str]], list[str]] | None = None,
    validated: dict[str, int] | None = None,
) -> DeployRun:
    """Run the deploy job's commands in order, stopping at the first failure.

    :param checkout: the repository checkout the job runs in
    :param env: process env (AWS endpoints, credentials, region)
    :param expressions: ``${{ }}`` values (secrets, needs outputs, inputs)
    :param edit: a change to a command's argv (what a user edits in the workflow, e.g. the bundle's
        ``--airflow-version``)
    :param validated: memo of bundles already validated (by manifest digest) so an identical bundle is imported once
    """
    result = DeployRun()
    for name, run, step_env in deploy_steps(expressions):
        argv = _argv(run, step_env)
        if argv[:2] == ["deploy", "parity-venv"]:
            continue
        if edit is not None:
            argv = edit(argv)
        if argv[:2] == ["deploy", "validate"] and validated is not None and "--bucket-only" not in argv:
            digest = _bundle_digest(checkout / argv[argv.index("--bundle") + 1])
            if digest in validated:
                result.steps.append(StepRun(name, argv, validated[digest], "(identical bundle validated before)", 0.0))
                continue
        started = time.perf_counter()
        rc, output = run_cli(argv, cwd=checkout, env={**env, **step_env})
        result.steps.append(StepRun(name, argv, rc, output, time.perf_counter() - started))
        if argv[:2] == ["deploy", "validate"] and validated is not None and "--bucket-only" not in argv:
            validated[_bundle_digest(checkout / argv[argv.index("--bundle") + 1])] = rc
        if rc != 0:
            break
    return result


def _bundle_digest(bundle: Path) -> str:
    import hashlib

    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def expressions_for(*, environment: str, bucket: str, images: Mapping[str, str], smoke_dag: str = "",
                    ) -> dict[str, Any]:
    """The ``${{ }}`` values a deploy run sees: the GitHub environment's secrets, the images job's outputs, inputs.

    :param environment: MWAA environment name
    :param bucket: its source bucket
    :param images: ``trainer_image``, ``checks_image``, ``serving_image`` digests
    :param smoke_dag: the smoke_dag input
    """
    return {
        "secrets.MWAA_ENVIRONMENT": environment,
        "secrets.MWAA_BUCKET": bucket,
        "secrets.DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/airflow-mlops-deploy-staging",
        "secrets.AWS_REGION": "us-east-1",
        "secrets.MWAA_VARIABLES_PREFIX": "",
        "github.run_id": "4242",
        "github.event.inputs.smoke_dag": smoke_dag,
        "github.event.inputs.take_over_sync == 'true' && '--take-over' || ''": "",
        **{f"needs.images.outputs.{k}": v for k, v in images.items()},
    }
