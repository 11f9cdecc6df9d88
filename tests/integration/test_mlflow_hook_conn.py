"""The mlflow connection type: form fields in the Airflow UI, settings parsing and validation, secret masking."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.hooks.mlflow import MlflowHook, is_retryable


def test_connection_form_fields_are_registered() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for field in ("auth_type", "token", "registry_uri", "databricks_host", "databricks_token", "max_retries",
                  "backoff_factor", "timeout"):
        assert f"extra__mlflow__{field}" in widgets, sorted(k for k in widgets if "mlflow" in k)
    assert widgets["extra__mlflow__token"].is_sensitive and widgets["extra__mlflow__databricks_token"].is_sensitive
    assert not widgets["extra__mlflow__registry_uri"].is_sensitive
    behaviour = manager.field_behaviours["mlflow"]
    assert behaviour["relabeling"]["host"] == "Tracking URI" and "port" in behaviour["hidden_fields"]


def _hook(monkeypatch: pytest.MonkeyPatch, conn_id: str, **conn: object) -> MlflowHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **conn}))
    return MlflowHook(conn_id)


def test_settings_auth_databricks_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    bearer = _hook(monkeypatch, "m_bearer", host="mlflow.internal", port=5000,
                   extra={"extra__mlflow__token": "tok-123", "max_retries": "5"}).settings
    assert bearer["tracking_uri"] == "http://mlflow.internal:5000"
    assert (bearer["auth_type"], bearer["token"], bearer["max_retries"]) == ("bearer", "tok-123", 5)
    dbx = _hook(monkeypatch, "m_dbx", extra={"databricks_host": "https://dbc-1.cloud.databricks.com",
                                            "databricks_token": "dapi-1"}).settings
    assert dbx["tracking_uri"] == "databricks" and dbx["ui_url"] == "https://dbc-1.cloud.databricks.com"
    with pytest.raises(ValueError, match=r"extra.auth_type must be one of \('none', 'basic', 'bearer'\), got 'oauth'"):
        _ = _hook(monkeypatch, "m_bad", host="http://x", extra={"auth_type": "oauth"}).settings
    with pytest.raises(ValueError, match="auth_type basic needs a login"):
        _ = _hook(monkeypatch, "m_nologin", host="http://x", extra={"auth_type": "basic"}).settings
    with pytest.raises(ValueError, match=r"extra.max_retries must be a number >= 0, got '-1'"):
        _ = _hook(monkeypatch, "m_retries", host="http://x", extra={"max_retries": "-1"}).settings


def test_retry_rule_classifies_real_client_errors() -> None:
    """Errors as MLflow raises them: a RestException from a JSON error body, and a wrapped transport error."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    assert is_retryable(RestException({"error_code": "PERMISSION_DENIED", "message": "no"})) == (False, "HTTP 403")
    assert is_retryable(RestException({"error_code": "INTERNAL_ERROR", "message": "boom"})) == (True, "HTTP 500")
    assert is_retryable(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"}))[0] is False
    try:
        try:
            raise requests.exceptions.ReadTimeout("read timed out")
        except requests.exceptions.ReadTimeout as err:
            raise MlflowException("API request to x failed with timeout exception") from err
    except MlflowException as wrapped:
        assert is_retryable(wrapped) == (True, "timeout (ReadTimeout)")
    assert is_retryable(ValueError("bad input")) == (False, "ValueError")
