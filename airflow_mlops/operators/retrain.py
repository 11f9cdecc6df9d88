"""Ask for retraining through an Airflow Asset event that carries why (drift findings, model version, window)."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else {}
        except (ValueError, SyntaxError):
            raise AirflowFailException(f"{name} must be a mapping (an upstream XCom); got {value!r}") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AirflowFailException(f"{name} must be a mapping (an upstream XCom); got {value!r}")
    return dict(value)


class RequestRetrainingOperator(BaseOperator):
    """Emit an event on ``asset`` (which schedules the training pipeline) with the reasons in its ``extra``.

    An Asset event, not a direct trigger: the training DAG stays decoupled from who asks (drift, new data, a
    person), the request is visible in the Airflow UI's asset view with its reasons, and several requests
    queued while training runs collapse into one run.

    :param asset: the asset the training pipeline is scheduled on; also list it in ``outlets``.
    :param reference: the monitored model (``ModelReferenceOperator``'s XCom; templated).
    :param findings: the drift checks' XCom (templated): failed checks and report URI.
    :param window: the collected traffic (templated): rows and time window.
    :param reason: a short reason (templated); default built from the findings.
    """

    template_fields: Sequence[str] = ("reference", "findings", "window", "reason")
    template_fields_renderers = {"reference": "json", "findings": "json", "window": "json"}
    ui_color = "#fbe3d6"

    def __init__(self, *, asset: Asset, reference: Any = None, findings: Any = None, window: Any = None,
                 reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(asset, Asset):
            raise TypeError(f"asset must be an airflow.sdk.Asset, got {asset!r}")
        if asset not in (self.outlets or []):
            self.outlets = [*(self.outlets or []), asset]
        self.asset = asset
        self.reference = reference
        self.findings = findings
        self.window = window
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        reference = _mapping("reference", self.reference)
        findings = _mapping("findings", self.findings)
        window = _mapping("window", self.window)
        failed = list(findings.get("failed_checks") or [])
        reason = self.reason or (f"drift in {', '.join(failed)}" if failed else "retraining requested")
        ti = context["ti"]
        extra = {
            "reason": reason, "failed_checks": failed, "report_uri": findings.get("report_uri"),
            "model_name": reference.get("model_name"), "model_version": reference.get("version"),
            "data_version": reference.get("data_version"), "rows": window.get("rows"),
            "window_seconds": window.get("since_seconds"), "requested_by": f"{ti.dag_id}/{ti.run_id}",
        }
        extra = {k: v for k, v in extra.items() if v not in (None, [], "")}
        context["outlet_events"][self.asset].extra = extra
        self.log.info("retraining requested on asset %s: %s", self.asset.name, reason)
        for key, value in extra.items():
            self.log.info("  %-15s %s", key, value)
        self._alert(context, reference, extra)
        return extra

    def _alert(self, context: Context, reference: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        from airflow_mlops.notifiers.channels import emit_alert, mlflow_links

        model, version = reference.get("model_name"), reference.get("version")
        links: dict[str, str | None] = {"report": extra.get("report_uri")}
        if model and version:
            from airflow_mlops.hooks.config import load_config
            from airflow_mlops.hooks.mlflow import MlflowHook

            hook = MlflowHook(load_config().mlflow_conn_id)
            links.update(mlflow_links(hook, str(model), str(version), run_id=reference.get("run_id")))
        emit_alert(context, event="drift_detected", model=str(model or self.asset.name),
                   version=str(version) if version else None, reason=str(extra["reason"]), links=links,
                   details={k: extra[k] for k in ("failed_checks", "rows", "window_seconds", "data_version")
                            if k in extra})
