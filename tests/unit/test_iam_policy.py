"""The MWAA execution role allows every AWS call the rollout code makes, and the two copies of it agree.

The calls are read from the source (ast), not from a hand-kept list: attribute calls on the SageMaker client in
``rollout/targets/sagemaker.py`` (including ``get_paginator("...")`` names) and on the CloudWatch client in
``rollout/analysis/cloudwatch.py``. botocore's service model maps each client method to its API operation,
which is the IAM action (``sagemaker:<Operation>``). Clients are built with dummy credentials: no network.

Both policies are checked: ``infra/iam/mwaa-execution-role.json`` (what parliament lints) and the inline policy of
``infra/cloudformation/mwaa-environment.yaml``, resolved with its parameter defaults and the same sample account,
region and bucket stack, so that it must equal the JSON file statement for statement.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY_JSON = ROOT / "infra/iam/mwaa-execution-role.json"
ENV_TEMPLATE = ROOT / "infra/cloudformation/mwaa-environment.yaml"
SAGEMAKER_TARGET = ROOT / "airflow_mlops/rollout/targets/sagemaker.py"
CLOUDWATCH_PROVIDER = ROOT / "airflow_mlops/rollout/analysis/cloudwatch.py"

# The sample values infra/iam/*.json uses.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "111122223333"}
IMPORTS = {  # Fn::ImportValue of the bucket stack's outputs
    "BucketArn": "arn:aws:s3:::airflow-mlops-example",
    "KmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000",
}

# A SageMaker target named "mlops-churn" (names under the policy's mlops-* prefix), as the target names them.
SM = "arn:aws:sagemaker:us-east-1:111122223333"
ENDPOINT, CONFIG, MODEL = f"{SM}:endpoint/mlops-churn", f"{SM}:endpoint-config/mlops-churn-1767225600000", \
    f"{SM}:model/mlops-churn-v3"
# The resources each operation is authorized against (the Service Authorization Reference's resource types).
# A call the code starts making that is not here fails the test: decide its resource, then grant it.
RESOURCES: dict[str, list[str]] = {
    "sagemaker:CreateModel": [MODEL],
    "sagemaker:DescribeModel": [MODEL],
    "sagemaker:DeleteModel": [MODEL],
    "sagemaker:CreateEndpointConfig": [CONFIG],
    "sagemaker:DeleteEndpointConfig": [CONFIG],
    "sagemaker:CreateEndpoint": [ENDPOINT, CONFIG],
    "sagemaker:UpdateEndpoint": [ENDPOINT, CONFIG],
    "sagemaker:DescribeEndpoint": [ENDPOINT],
    "sagemaker:UpdateEndpointWeightsAndCapacities": [ENDPOINT],
    "sagemaker:DeleteEndpoint": [ENDPOINT],
    # AddTags: the state tags on the endpoint, and Create* with Tags= (which needs AddTags on what it creates).
    "sagemaker:AddTags": [ENDPOINT, CONFIG, MODEL],
    "sagemaker:ListTags": [ENDPOINT],
    "sagemaker:DeleteTags": [ENDPOINT],
    # List* actions support no resource-level permissions: only Resource "*" grants them.
    "sagemaker:ListEndpointConfigs": ["*"],
    "sagemaker:ListModels": ["*"],
    "cloudwatch:GetMetricData": ["*"],
}
# What the code calls that needs no IAM action.
NOT_API = {"meta", "exceptions", "can_paginate"}


# -- the calls the code makes --------------------------------------------------------------------------------


def _is_self_attr(node: ast.expr, attr: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.value, ast.Name) \
        and node.value.id == "self"


def _sagemaker_client(node: ast.expr) -> bool:
    """``self.client`` (the SageMakerHook's client) in SageMakerTarget."""
    return _is_self_attr(node, "client")


def _cloudwatch_client(node: ast.expr) -> bool:
    """``self._client()`` in CloudWatchMetrics."""
    return isinstance(node, ast.Call) and _is_self_attr(node.func, "_client")


def client_methods(path: Path, is_client: Callable[[ast.expr], bool]) -> set[str]:
    """Client method names used on the client in ``path``: ``client.x(...)``, ``client.x`` passed as a callable,
    and the operation of ``client.get_paginator("x")``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    methods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_client(node.value):
            methods.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_client(node.func.value) \
                and node.func.attr in ("get_paginator", "get_waiter"):
            assert node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str), (
                f"{path.name}:{node.lineno}: {node.func.attr} with a non-literal name; the test cannot see which "
                "operation it pages")
            if node.func.attr == "get_waiter":
                raise AssertionError(f"{path.name}:{node.lineno}: map the waiter's operation to its IAM action here")
            methods.add(node.args[0].value)
    return methods - {"get_paginator"}


@cache
def _method_to_operation(service: str) -> dict[str, str]:
    import botocore.session

    session = botocore.session.get_session()
    client = session.create_client(service, region_name="us-east-1", aws_access_key_id="x",
                                   aws_secret_access_key="x")
    mapping = dict(client.meta.method_to_api_mapping)
    model = session.get_service_model(service)
    assert set(mapping.values()) <= set(model.operation_names)
    return mapping


def iam_actions(service: str, prefix: str, methods: set[str]) -> set[str]:
    mapping = _method_to_operation(service)
    unknown = sorted(m for m in methods - NOT_API if m not in mapping)
    assert not unknown, f"{service} client has no method(s) {unknown}: a typo, or the matcher caught a non-client"
    return {f"{prefix}:{mapping[m]}" for m in methods - NOT_API}


def needed_actions() -> set[str]:
    sm = client_methods(SAGEMAKER_TARGET, _sagemaker_client)
    cw = client_methods(CLOUDWATCH_PROVIDER, _cloudwatch_client)
    # The matchers found the code's clients (an empty set would make every check below pass vacuously).
    assert {"create_endpoint", "update_endpoint_weights_and_capacities", "list_tags", "delete_model"} <= sm
    assert cw == {"get_metric_data"}
    return iam_actions("sagemaker", "sagemaker", sm) | iam_actions("cloudwatch", "cloudwatch", cw)


# -- the policies ---------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (``!Sub x`` becomes ``{"Fn::Sub": x}``)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def _resolve(value: Any, names: dict[str, str]) -> Any:
    """Evaluate Ref / Fn::Sub / Fn::ImportValue against ``names`` (parameter defaults and pseudo parameters)."""
    if isinstance(value, list):
        return [_resolve(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return names[arg]
        if key == "Fn::Sub":
            template, extra = (arg, {}) if isinstance(arg, str) else (arg[0], _resolve(arg[1], names))
            scope = {**names, **extra}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(scope[m.group(1)]), template)
        if key == "Fn::ImportValue":
            export = _resolve(arg, names)
            return IMPORTS[export.rsplit("-", 1)[1]]
        if key.startswith("Fn::"):
            raise AssertionError(f"the test cannot evaluate {key} in a policy")
    return {k: _resolve(v, names) for k, v in value.items()}


def cfn_policy() -> dict[str, Any]:
    template = yaml.load(ENV_TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    names = {**PSEUDO, **{k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}}
    policies = template["Resources"]["ExecutionRole"]["Properties"]["Policies"]
    assert len(policies) == 1
    return dict(_resolve(policies[0]["PolicyDocument"], names))


def json_policy() -> dict[str, Any]:
    return dict(json.loads(POLICY_JSON.read_text()))


POLICIES = {"json": json_policy, "cloudformation": cfn_policy}


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str, *, case: bool) -> bool:
    if case:
        return any(fnmatch.fnmatchcase(value, p) for p in _listify(patterns))
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in _listify(patterns))


def decision(policy: dict[str, Any], action: str, resource: str) -> str:
    """``allow`` / ``deny`` / ``conditional`` / ``implicit deny`` for one action on one resource."""
    verdicts = set()
    for st in policy["Statement"]:
        assert "NotAction" not in st and "NotResource" not in st, "the evaluator handles Action/Resource only"
        if _matches(st["Action"], action, case=False) and _matches(st["Resource"], resource, case=True):
            verdicts.add("deny" if st["Effect"] == "Deny" else "conditional" if st.get("Condition") else "allow")
    for verdict in ("deny", "allow", "conditional"):
        if verdict in verdicts:
            return verdict
    return "implicit deny"


def granted_actions(policy: dict[str, Any], prefix: str) -> set[str]:
    return {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in _listify(st["Action"])
            if a.lower().startswith(f"{prefix}:")}


# -- the checks -----------------------------------------------------------------------------------------------


def test_every_call_has_a_resource_entry() -> None:
    missing = sorted(needed_actions() - set(RESOURCES))
    assert not missing, f"new AWS call(s) {missing}: add their IAM resources to RESOURCES and grant them"


@pytest.mark.parametrize("which", sorted(POLICIES))
def test_execution_role_allows_every_call_the_rollout_code_makes(which: str) -> None:
    policy = POLICIES[which]()
    refused = [f"{action} on {resource}: {verdict}"
               for action in sorted(needed_actions()) for resource in RESOURCES.get(action, [])
               if (verdict := decision(policy, action, resource)) != "allow"]
    assert not refused, f"{which} policy refuses: " + "; ".join(refused)


@pytest.mark.parametrize("which", sorted(POLICIES))
def test_execution_role_grants_no_sagemaker_action_the_code_does_not_use(which: str) -> None:
    granted = granted_actions(POLICIES[which](), "sagemaker")
    assert not [a for a in granted if "*" in a or "?" in a], "no wildcard SageMaker actions"
    needed = {a for a in needed_actions() if a.startswith("sagemaker:")}
    assert granted == needed, f"unused: {sorted(granted - needed)}; missing: {sorted(needed - granted)}"


@pytest.mark.parametrize("which", sorted(POLICIES))
def test_scoped_sagemaker_actions_stay_on_the_targets_prefix(which: str) -> None:
    policy = POLICIES[which]()
    other = f"{SM}:endpoint/someone-elses-endpoint"
    for action in sorted(a for a, res in RESOURCES.items() if a.startswith("sagemaker:") and res != ["*"]):
        assert decision(policy, action, other) == "implicit deny", action


def _normalized(policy: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for st in policy["Statement"]:
        st = {k: v for k, v in st.items() if k != "Sid"}
        st["Action"], st["Resource"] = sorted(_listify(st["Action"])), sorted(_listify(st["Resource"]))
        if "Condition" in st:
            st["Condition"] = {op: {k: sorted(_listify(v)) for k, v in kv.items()}
                               for op, kv in st["Condition"].items()}
        out.append(st)
    return out


def test_cloudformation_inline_policy_equals_the_json_file() -> None:
    assert _normalized(cfn_policy()) == _normalized(json_policy())
