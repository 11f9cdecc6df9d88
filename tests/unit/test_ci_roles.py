"""The CI deploy roles: each GitHub environment's role reaches only its own environment.

Evaluates the policy documents (infra/iam/ci-deploy-<env>.json) the way IAM matches an Allow statement: action
and resource patterns with ``*`` and ``?`` wildcards. No Deny statements are involved, so an action on a resource is
allowed exactly when some statement matches both.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

IAM = Path(__file__).resolve().parents[2] / "infra" / "iam"
ENVS = ("staging", "production")


def _policy(env: str) -> list[dict[str, Any]]:
    return list(json.loads((IAM / f"ci-deploy-{env}.json").read_text())["Statement"])


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether an Allow statement matches the action and the resource (IAM's wildcard matching, case-sensitive
    resources, case-insensitive actions)."""
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(st.get("Action", []))):
            continue
        if any(fnmatch.fnmatchcase(resource, r) for r in _as_list(st.get("Resource", []))):
            return True
    return False


def _concrete(pattern: str) -> str:
    """A resource a pattern names (wildcards filled in), e.g. ``.../dags/*`` -> ``.../dags/x``."""
    return pattern.replace("*", "x").replace("?", "x")


@pytest.mark.parametrize(("mine", "other"), [("staging", "production"), ("production", "staging")])
def test_a_deploy_role_cannot_touch_the_other_environment(mine: str, other: str) -> None:
    own, theirs = _policy(mine), _policy(other)
    reached = []
    for st in theirs:
        for action in _as_list(st["Action"]):
            for resource in _as_list(st["Resource"]):
                if resource == "*":
                    continue
                if allowed(own, action.replace("*", "Get"), _concrete(resource)):
                    reached.append(f"{action} on {resource}")
    assert reached == [], f"the {mine} role reaches {other}'s resources: {reached}"


@pytest.mark.parametrize("env", ENVS)
def test_each_role_does_what_the_deploy_cli_needs_on_its_own_environment(env: str) -> None:
    statements = _policy(env)
    bucket = next(r for st in statements for r in _as_list(st["Resource"]) if r.startswith("arn:aws:s3:::")
                  and "/" not in r)
    environment = next(r for st in statements for r in _as_list(st["Resource"]) if ":environment/" in r)
    needs = [
        ("s3:PutObject", f"{bucket}/dags/mlops_training_pipeline.py"),  # sync
        ("s3:DeleteObject", f"{bucket}/dags/old.py"),  # sync's stale deletes
        ("s3:PutObject", f"{bucket}/requirements.txt"),  # update / rollback's copy-back
        ("s3:GetObjectVersion", f"{bucket}/plugins.zip"),  # rollback preflight and copy source
        ("s3:PutObject", f"{bucket}/.airflow-mlops/releases/x.json"),  # the release ledger
        ("s3:ListBucket", bucket),
        ("airflow:UpdateEnvironment", environment),
        ("airflow:GetEnvironment", environment),
    ]
    missing = [f"{a} on {r}" for a, r in needs if not allowed(statements, a, r)]
    assert missing == []
    # Never the requirements/plugins deletes (a rollback needs their versions) nor another key of the bucket.
    assert not allowed(statements, "s3:DeleteObject", f"{bucket}/requirements.txt")
    assert not allowed(statements, "s3:PutObject", f"{bucket}/other/thing")


@pytest.mark.parametrize("env", ENVS)
def test_each_role_is_trusted_only_from_its_github_environment(env: str) -> None:
    trust = json.loads((IAM / f"ci-deploy-{env}-trust.json").read_text())
    (statement,) = trust["Statement"]
    sub = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
    assert sub.endswith(f":environment:{env}") and "*" not in sub
