"""Point an MWAA environment at the images CI built: Airflow Variables set by digest.

The step, checks and serving images are Airflow Variables (``mlops_image``, ``mlops_checks_image``,
``mlops_serving_image``; :data:`airflow_mlops.core.config.SETTINGS`). The deploy sets them to the digests the
images workflow pushed, so the image recorded in a model's lineage is always one that CI built and scanned. Two
ways, chosen by how the environment reads Variables:

``secrets-manager``
    The environment's secrets backend (``SecretsManagerBackend``, ``variables_prefix`` ``airflow/variables``, as
    ``infra/cloudformation/mwaa-environment.yaml`` configures it): one secret per Variable, created or given a new
    value. Survives ``mwaa-env.sh down/up``; takes precedence over the metadata DB.
``rest-api``
    The Airflow REST API through mwaa InvokeRestApi (``POST /variables``, ``PATCH /variables/{key}``): Variables
    in the metadata DB, for environments without a secrets backend. The caller's MWAA web role must be ``Op`` or
    ``Admin`` (Airflow's ``User`` role may not edit Variables), and the Variables go with the metadata database
    when the environment is deleted.

Only a value that differs is written; an unchanged deploy writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_mlops.deploy import DeployError

# CLI flag -> Airflow Variable.
IMAGE_VARIABLES = {
    "mlops_image": "mlops_image",
    "checks_image": "mlops_checks_image",
    "serving_image": "mlops_serving_image",
}
BACKENDS = ("secrets-manager", "rest-api")
DEFAULT_VARIABLES_PREFIX = "airflow/variables"
_DIGEST_REF = re.compile(r"[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}")


def check_image_ref(field: str, ref: str) -> str:
    """An image reference pinned by digest (``repo@sha256:<64 hex>``), else DeployError naming the field.

    :param field: the option it came from, for the message
    :param ref: the image reference
    """
    ref = ref.strip()
    if not _DIGEST_REF.fullmatch(ref):
        raise DeployError(
            f"{field}: {ref!r} is not pinned by digest; give REPOSITORY@sha256:<64 hex> as the images workflow "
            "outputs it (a tag can move; the lineage must name the image CI built)"
        )
    return ref


SECRETS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"


def check_secrets_backend(env: Mapping[str, Any], prefix: str) -> None:
    """The environment reads Variables from Secrets Manager under ``prefix``, else DeployError saying what it reads.

    :param env: GetEnvironment's ``Environment`` (its ``AirflowConfigurationOptions``)
    :param prefix: the ``variables_prefix`` the secrets are written under
    """
    import json

    options = env.get("AirflowConfigurationOptions") or {}
    name = env.get("Name", "the environment")
    backend = str(options.get("secrets.backend", ""))
    if backend != SECRETS_BACKEND:
        raise DeployError(
            f"backend: {name} has secrets.backend={backend or '(none)'}, so it would not read Variables written to "
            f"Secrets Manager; configure {SECRETS_BACKEND} (infra/cloudformation/mwaa-environment.yaml does) or use "
            "--backend rest-api"
        )
    try:
        kwargs = json.loads(str(options.get("secrets.backend_kwargs") or "{}"))
    except ValueError as exc:
        raise DeployError(f"backend: {name}'s secrets.backend_kwargs is not JSON: {exc}") from exc
    # The amazon provider's SecretsManagerBackend default variables_prefix is airflow/variables.
    configured = str(kwargs.get("variables_prefix", DEFAULT_VARIABLES_PREFIX) if isinstance(kwargs, dict) else "")
    if configured.rstrip("/") != prefix.rstrip("/"):
        raise DeployError(
            f"variables_prefix: {name} reads Variables under {configured!r} but these would be written under "
            f"{prefix!r}; pass --variables-prefix {configured}"
        )


@dataclass(frozen=True)
class VariableChange:
    """One Variable as the deploy found and left it.

    :param key: Variable name
    :param old: value before (None: not set)
    :param new: value after
    """

    key: str
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        """Whether a write was needed."""
        return self.old != self.new


def _set_secrets_manager(sm: Any, prefix: str, key: str, value: str, description: str) -> str | None:
    from botocore.exceptions import ClientError

    secret_id = f"{prefix.rstrip('/')}/{key}"
    try:
        old = sm.get_secret_value(SecretId=secret_id).get("SecretString")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        sm.create_secret(Name=secret_id, SecretString=value, Description=description)
        return None
    if old != value:
        sm.put_secret_value(SecretId=secret_id, SecretString=value)
    return str(old) if old is not None else None


def _set_rest_api(mwaa: Any, name: str, key: str, value: str, description: str) -> str | None:
    from airflow_mlops.deploy.update import RestApiError, rest_call

    try:
        current = rest_call(mwaa, name, "GET", f"/variables/{key}") or {}
    except RestApiError as exc:
        if exc.status != 404:
            raise DeployError(f"variables: reading {key} on {name}: {exc}") from exc
        rest_call(mwaa, name, "POST", "/variables", {"key": key, "value": value, "description": description})
        return None
    old = current.get("value")
    if old != value:
        rest_call(mwaa, name, "PATCH", f"/variables/{key}", {"key": key, "value": value, "description": description})
    return str(old) if old is not None else None


def set_variables(
    values: Mapping[str, str],
    *,
    backend: str,
    environment: str,
    mwaa: Any = None,
    secretsmanager: Any = None,
    prefix: str = DEFAULT_VARIABLES_PREFIX,
    log: Callable[[str], None] = print,
) -> list[VariableChange]:
    """Set Airflow Variables on an MWAA environment, writing only values that differ.

    :param values: Variable name -> value
    :param backend: ``secrets-manager`` or ``rest-api``
    :param environment: MWAA environment name (the REST path; named in the secrets' description)
    :param mwaa: boto3 MWAA client (rest-api)
    :param secretsmanager: boto3 Secrets Manager client (secrets-manager)
    :param prefix: the secrets backend's ``variables_prefix``
    :param log: where lines go
    """
    if backend not in BACKENDS:
        raise DeployError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if not values:
        raise DeployError("values: give at least one image (--mlops-image, --checks-image, --serving-image)")
    changes = []
    for key, value in sorted(values.items()):
        description = f"set by airflow-mlops deploy for MWAA environment {environment}"
        if backend == "secrets-manager":
            if secretsmanager is None:
                raise DeployError("secretsmanager: a client is needed for the secrets-manager backend")
            old = _set_secrets_manager(secretsmanager, prefix, key, value, description)
        else:
            if mwaa is None:
                raise DeployError("mwaa: a client is needed for the rest-api backend")
            old = _set_rest_api(mwaa, environment, key, value, description)
        change = VariableChange(key, old, value)
        log(f"  variable {key:<22} {'unchanged' if not change.changed else (old or '(unset)') + ' -> ' + value}")
        changes.append(change)
    return changes
