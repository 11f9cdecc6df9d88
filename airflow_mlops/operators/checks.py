"""Data and model checks operators: deepchecks suites in the pinned checks environment, with a gate.

Thin shells over :class:`MlopsStepOperator`: the step (``airflow_mlops.steps.checks``) runs in the checks venv
locally or the checks image on Kubernetes; this side validates names at parse time, reads the result, logs the
table, attaches the report to the MLflow run and applies the gate.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.checks import (
    CheckSpec,
    check_gate,
    check_suites,
    drift_conditions,
    format_table,
    needs,
    nothing_ran_message,
    parse_checks,
    report_url,
    verdict,
)
from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.core.step import SecretEnvRef
from airflow_mlops.links.checks import REPORT_URL_KEY, CheckReportLink
from airflow_mlops.operators.step import MlopsStepOperator, StepPlan, _templated

if TYPE_CHECKING:
    from airflow.sdk import Context

CHECKS_MODULE = "airflow_mlops.steps.checks"
XCOM_RETURN_KEY = "return_value"


class ChecksOperator(MlopsStepOperator, SkipMixin):
    """Run deepchecks suites and/or named checks on Parquet data (and precomputed predictions), then gate.

    Locally the step runs in the checks venv (built from the pinned lock on first use, cached by its hash; the
    ``mlops_checks_python`` Variable overrides it); on Kubernetes in the ``mlops_checks_image`` image.

    :param suite: a suite name or list of them: ``data_integrity``, ``train_test_validation``,
        ``model_evaluation``, ``drift`` (feature + prediction drift).
    :param checks: named checks: names or ``{"name", "params", "conditions": {condition: kwargs}}`` dicts; a
        named check replaces the suite's check of the same name.
    :param train_data_uri: train (or reference) Parquet (templated).
    :param test_data_uri: test (or current inference) Parquet (templated).
    :param label_column: label column; None: unlabelled data.
    :param cat_features: categorical feature columns; None: let deepchecks infer them.
    :param index_column: optional index column; :param datetime_column: optional datetime column.
    :param train_predictions_uri: Parquet with ``y_pred`` and ``proba_<class>`` columns, row-aligned with the
        train data (templated); the trainer writes these.
    :param test_predictions_uri: same for the test data (templated).
    :param feature_importance_uri: optional JSON ``{feature: importance}`` (templated).
    :param n_samples: sample each dataset to at most this many rows (fixed seed) before checking.
    :param seed: sampling seed.
    :param fail_on_warning: conditions in deepchecks' WARN category fail their check too (default: a gate is
        strict; deepchecks' default suites rate e.g. 13% duplicate rows only a warning).
    :param gate: ``fail`` (task fails listing failed conditions), ``skip_downstream`` (downstream tasks are
        skipped, this task succeeds with its XCom), ``warn`` (success, warnings in the log). Templated. A run in
        which no check could run (each crashed: deepchecks reports them "not run") has no verdict for a gate to
        weigh: the task fails in every mode, quoting the checks' errors.
    :param mlflow_run_id: attach the report and result JSON to this MLflow run (templated); empty: no MLflow.
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.

    Other parameters as MlopsStepOperator (compute, image, runtime, python, ...).
    """

    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "train_data_uri", "test_data_uri",
                                      "train_predictions_uri", "test_predictions_uri", "feature_importance_uri",
                                      "gate", "mlflow_run_id", "label_column")
    operator_extra_links = (CheckReportLink(),)
    inherits_from_skipmixin = True
    ui_color = "#e3f2d9"

    def __init__(self, *, suite: str | Sequence[str] | None = None,
                 checks: Sequence[str | Mapping[str, Any] | CheckSpec] | None = None,
                 train_data_uri: str, test_data_uri: str | None = None, label_column: str | None = "target",
                 cat_features: Sequence[str] | None = None, index_column: str | None = None,
                 datetime_column: str | None = None, train_predictions_uri: str | None = None,
                 test_predictions_uri: str | None = None, feature_importance_uri: str | None = None,
                 n_samples: int | None = None, seed: int = 42, gate: str = "fail", fail_on_warning: bool = True,
                 mlflow_run_id: str | None = None, mlflow_conn_id: str | None = None,
                 step_name: str | None = None, compute: GpuSpec | Mapping[str, Any] | None = None,
                 timeout_seconds: int = 3600, **kwargs: Any) -> None:
        super().__init__(module=CHECKS_MODULE, step_name=step_name,
                         compute=compute if compute is not None else GpuSpec(cpu_request="1", memory_request="2Gi"),
                         timeout_seconds=timeout_seconds, **kwargs)
        # Names are checked here, at DAG parse time (pure core, no deepchecks import).
        self.suites = check_suites(suite) if suite is not None else ()
        self.checks = parse_checks(checks)
        if not self.suites and not self.checks:
            raise SpecError("suite/checks", "at least one suite or check", None)
        if not _templated(gate):
            check_gate(gate)
        if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int)
                                      or n_samples < 1):
            raise SpecError("n_samples", "an integer >= 1 or None", n_samples)
        required = needs(self.suites, self.checks)
        if "test" in required and not test_data_uri:
            raise SpecError("test_data_uri", "a dataset URI (these checks compare two datasets)", test_data_uri)
        if "predictions" in required and not (train_predictions_uri and test_predictions_uri):
            raise SpecError("train_predictions_uri/test_predictions_uri",
                            "both prediction URIs (these checks read precomputed predictions)",
                            (train_predictions_uri, test_predictions_uri))
        self.train_data_uri = train_data_uri
        self.test_data_uri = test_data_uri
        self.label_column = label_column
        self.cat_features = list(cat_features) if cat_features is not None else None
        self.index_column = index_column
        self.datetime_column = datetime_column
        self.train_predictions_uri = train_predictions_uri
        self.test_predictions_uri = test_predictions_uri
        self.feature_importance_uri = feature_importance_uri
        self.n_samples = n_samples
        self.seed = seed
        self.fail_on_warning = fail_on_warning
        self.gate = gate
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id

    # -- the step -----------------------------------------------------------------------------------

    def check_args(self) -> list[str]:
        """The step's argv after the module (from the rendered fields)."""
        args: list[str] = []
        for suite in self.suites:
            args += ["--suite", suite]
        if self.checks:
            args += ["--checks", json.dumps([c.to_dict() for c in self.checks], sort_keys=True)]
        args += ["--train-uri", self.train_data_uri, "--label", self.label_column or ""]
        optional = {
            "--test-uri": self.test_data_uri, "--train-predictions-uri": self.train_predictions_uri,
            "--test-predictions-uri": self.test_predictions_uri,
            "--feature-importance-uri": self.feature_importance_uri, "--index-column": self.index_column,
            "--datetime-column": self.datetime_column,
            "--cat-features": ",".join(self.cat_features) if self.cat_features is not None else None,
            "--n-samples": str(self.n_samples) if self.n_samples else None,
        }
        for flag, value in optional.items():
            if value is not None and (value != "" or flag == "--cat-features"):
                args += [flag, value]
        args += ["--seed", str(self.seed)]
        return [*args, "--fail-on-warning"] if self.fail_on_warning else args

    def plan(self, context: Context, runtime: str) -> StepPlan:
        plan = super().plan(context, runtime)
        updates: dict[str, Any] = {"args": (*plan.step.args, *self.check_args())}
        if not self.image:
            updates["image"] = plan.config.checks_image
        if runtime == "local" and not self.python:
            updates["python"] = self._checks_python(plan.config.checks_python)
        plan.step = dataclasses.replace(plan.step, **updates)
        return plan

    def _checks_python(self, configured: str | None) -> str:
        if configured:
            return configured
        from airflow_mlops.runtime.checks_env import ensure_checks_env

        return ensure_checks_env(log=self.log.info)

    def step_env(self, context: Context, plan: StepPlan,
                 runtime: str) -> tuple[dict[str, str], tuple[SecretEnvRef, ...]]:
        env, refs = super().step_env(context, plan, runtime)
        if runtime == "local":
            # The checks venv does not contain this package: the step imports the worker's copy, and only that
            # (PYTHONPATH is a folder holding just the package, never the worker's site-packages or PYTHONPATH).
            from airflow_mlops.runtime.checks_env import step_env

            env.update(step_env())
        return env, refs

    # -- after the step -----------------------------------------------------------------------------

    def on_step_success(self, context: Context, plan: StepPlan, result: dict[str, Any],
                        image_digest: str | None) -> dict[str, Any]:
        gate = check_gate(self.gate)  # rendered now
        records = result.get("checks") or []
        strict = bool(result.get("fail_on_warning"))
        seen = verdict(records, fail_on_warning=strict)
        self.log.info("checks (%s), gate %s:\n%s", " + ".join(result.get("suites", []) +
                                                               result.get("checks_requested", [])),
                      gate, format_table(records, fail_on_warning=strict))
        report_uri, json_uri = result.get("report_uri"), result.get("json_uri")
        if report_uri:
            url = report_url(report_uri)
            context["ti"].xcom_push(key=REPORT_URL_KEY, value=url)
            self.log.info("report: %s", url)
            self.log.info("result: %s", json_uri)
        if self.mlflow_run_id:
            outcome = "not run" if seen.nothing_ran else "passed" if seen.passed else "failed"
            self._attach_to_mlflow(plan, result, outcome, self.mlflow_run_id)
        for line in seen.warnings:
            self.log.warning("check warning: %s", line)
        xcom = {
            "passed": seen.passed, "failed_checks": list(seen.failed_checks),
            "failed_conditions": list(seen.failed_conditions), "report_uri": report_uri, "json_uri": json_uri,
            "gate": gate, "suites": result.get("suites", []), "rows": result.get("rows"),
            "sampled": result.get("sampled") or {}, "warnings": len(seen.warnings),
            "checks": [{"name": r.get("name"), "dataset": r.get("dataset"), "status": r.get("status")}
                       for r in records],
            "not_run": list(seen.not_run), "mlflow_run_id": self.mlflow_run_id or None,
        }
        if result.get("drift_conditions"):
            xcom["drift_conditions"] = result["drift_conditions"]
        if image_digest:
            xcom["image_digest"] = image_digest
        if seen.nothing_ran:
            # A crash is not a verdict: with gate warn or skip_downstream a run where nothing ran would read as
            # "checks failed" (the drift monitor would request retraining for it), so it fails in every mode.
            context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=xcom)
            raise AirflowFailException(f"{nothing_ran_message(seen)}. Report: {report_uri}")
        if seen.passed:
            self.log.info("all checks passed (%d checks)", len(records))
            return xcom
        summary = "; ".join(seen.failed_conditions) or ", ".join(seen.failed_checks)
        if gate == "warn":
            for line in seen.failed_conditions:
                self.log.warning("check failed (gate warn, not blocking): %s", line)
            return xcom
        # The task's XCom is recorded even though the task ends by raising (fail) or skipping (skip_downstream).
        context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=xcom)
        self._alert(context, plan, gate, summary, xcom)
        if gate == "fail":
            raise AirflowFailException(f"{len(seen.failed_checks)} check(s) failed: {summary}. Report: "
                                       f"{report_uri}")
        downstream = context["task"].get_flat_relatives(upstream=False)
        self.log.warning("checks failed (%s): skipping %d downstream task(s): %s", summary, len(downstream),
                         ", ".join(sorted(t.task_id for t in downstream)))
        self.skip(ti=context["ti"], tasks=downstream)  # raises DownstreamTasksSkipped: this task succeeds
        return xcom

    def _alert(self, context: Context, plan: StepPlan, gate: str, summary: str, xcom: Mapping[str, Any]) -> None:
        from airflow_mlops.notifiers.channels import emit_alert, mlflow_links

        links: dict[str, str | None] = {"report": report_url(xcom["report_uri"]) if xcom.get("report_uri") else None}
        if self.mlflow_run_id:
            from airflow_mlops.hooks.mlflow import MlflowHook

            hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or plan.config.mlflow_conn_id)
            links.update(mlflow_links(hook, run_id=self.mlflow_run_id))
        model = (context.get("params") or {}).get("model_name") or plan.ctx.dag_id
        action = "the run fails" if gate == "fail" else "downstream tasks are skipped"
        emit_alert(context, event="checks_failed", model=str(model), reason=f"{summary} (gate {gate}: {action})",
                   links=links, details={"failed_checks": xcom.get("failed_checks"), "gate": gate})

    def _attach_to_mlflow(self, plan: StepPlan, result: dict[str, Any], outcome: str, run_id: str) -> None:
        """Log the report and result JSON as artifacts of the run, under ``checks/<task_id>``; tag the outcome
        (``passed``, ``failed``, ``not run``)."""
        from airflow_mlops.hooks.artifacts import ArtifactStoreHook
        from airflow_mlops.hooks.mlflow import MlflowHook

        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or plan.config.mlflow_conn_id)
        client = hook.get_client()
        store = ArtifactStoreHook()
        artifact_path = f"checks/{self.task_id}"
        with tempfile.TemporaryDirectory() as tmp:
            for key, name in (("report_uri", "report.html"), ("json_uri", "result.json")):
                uri = result.get(key)
                if not uri:
                    continue
                if uri.startswith("s3://"):
                    local = os.path.join(tmp, name)
                    with open(local, "w", encoding="utf-8") as fh:
                        fh.write(store.read_text(uri))
                else:
                    local = uri[len("file://"):] if uri.startswith("file://") else uri
                client.log_artifact(run_id, local, artifact_path=artifact_path)
        client.set_tag(run_id, f"mlops.checks.{self.task_id}", outcome)
        self.log.info("attached the report to MLflow run %s under %s", run_id, artifact_path)


class DataChecksOperator(ChecksOperator):
    """Data checks before training: ``data_integrity`` and ``train_test_validation`` by default."""

    def __init__(self, *, suite: str | Sequence[str] | None = ("data_integrity", "train_test_validation"),
                 **kwargs: Any) -> None:
        super().__init__(suite=suite, **kwargs)


class ModelChecksOperator(ChecksOperator):
    """Model checks after training, from precomputed predictions: ``model_evaluation`` by default."""

    def __init__(self, *, suite: str | Sequence[str] | None = "model_evaluation", **kwargs: Any) -> None:
        super().__init__(suite=suite, **kwargs)


class DriftChecksOperator(ChecksOperator):
    """Feature drift and prediction drift: recent inference data vs the training data.

    :param reference_data_uri: the training data (templated).
    :param current_data_uri: recent inference data (templated); the label may be absent.
    :param reference_predictions_uri: predictions on the training data (templated); with
        ``current_predictions_uri``, adds prediction drift.
    :param current_predictions_uri: predictions on the inference data (templated).
    :param feature_drift_threshold: the drift score (0, 1] at which a feature counts as drifted (Kolmogorov-Smirnov
        for numeric, Cramer's V for categorical features); None or "": deepchecks' default 0.2. Templated (a
        number in text is accepted): checked at parse time when literal, at task start when templated.
    :param prediction_drift_threshold: the prediction drift score (0, 1] above which predictions count as
        drifted; None or "": deepchecks' default 0.15. Templated, checked as above.
    """

    template_fields: Sequence[str] = (*ChecksOperator.template_fields, "feature_drift_threshold",
                                      "prediction_drift_threshold")

    def __init__(self, *, reference_data_uri: str, current_data_uri: str,
                 reference_predictions_uri: str | None = None, current_predictions_uri: str | None = None,
                 suite: str | Sequence[str] | None = "drift", feature_drift_threshold: float | str | None = None,
                 prediction_drift_threshold: float | str | None = None, **kwargs: Any) -> None:
        if bool(reference_predictions_uri) != bool(current_predictions_uri):
            raise SpecError("reference_predictions_uri/current_predictions_uri", "both or neither",
                            (reference_predictions_uri, current_predictions_uri))
        super().__init__(suite=suite, train_data_uri=reference_data_uri, test_data_uri=current_data_uri,
                         train_predictions_uri=reference_predictions_uri,
                         test_predictions_uri=current_predictions_uri, **kwargs)
        self.feature_drift_threshold = feature_drift_threshold
        self.prediction_drift_threshold = prediction_drift_threshold
        literal = {k: v for k, v in self._thresholds().items() if not _templated(v)}
        drift_conditions(literal)  # SpecError at parse time for a literal bad value
        if any(v not in (None, "") for v in self._thresholds().values()) and "drift" not in self.suites:
            raise SpecError("feature_drift_threshold/prediction_drift_threshold", "thresholds for the drift suite "
                            "(suite must include 'drift')", list(self.suites))

    def _thresholds(self) -> dict[str, Any]:
        return {"feature_drift": self.feature_drift_threshold, "prediction_drift": self.prediction_drift_threshold}

    def check_args(self) -> list[str]:
        """The base step args plus the drift suite's thresholds (``--drift-conditions``), from rendered fields."""
        try:
            conditions = drift_conditions(self._thresholds())
        except SpecError as err:  # a rendered template: a bad value fails the task at start, without retries
            raise AirflowFailException(f"bad drift threshold: {err}") from None
        args = super().check_args()
        if conditions:
            self.log.info("drift thresholds: %s", ", ".join(f"{k} {next(iter(v.values()))}"
                                                            for k, v in conditions.items()))
            args += ["--drift-conditions", json.dumps(conditions, sort_keys=True)]
        return args
