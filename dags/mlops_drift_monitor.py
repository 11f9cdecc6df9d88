"""Reference drift monitor: recent inference traffic vs the champion's training data; drift requests retraining.

The same file runs on a laptop (the local router's inference log) and on MWAA (SageMaker Data Capture in S3):
only Airflow Variables differ. Nothing heavy is imported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param

from airflow_mlops.assets import RETRAINING_REQUESTED
from airflow_mlops.core.checks import DEFAULT_DRIFT_THRESHOLDS
from airflow_mlops.notifiers.channels import ALERTS
from airflow_mlops.operators.checks import DriftChecksOperator
from airflow_mlops.operators.monitoring import ModelReferenceOperator
from airflow_mlops.operators.retrain import RequestRetrainingOperator
from airflow_mlops.operators.step import MlopsStepOperator

DOC = """
### MLOps drift monitor

1. **reference**: resolves `models:/<model_name>@champion` to its version and the lineage the training pipeline
   recorded: training data, and the trainer's predictions on it.
2. **collect**: reads captured inference traffic (`inference_log_uri`: the local router's JSONL log on a laptop,
   SageMaker Data Capture files under S3 in production) for the last `window_hours`, and writes features and
   predictions as Parquet.
3. **drift**: deepchecks feature drift and prediction drift (pinned checks environment) comparing that traffic
   with the training data, with the `feature_drift_threshold` and `prediction_drift_threshold` params as the
   conditions; the report goes to the artifact store (the **Check report** link). If no check could run (a
   crash, e.g. too few rows) the task fails: that is an error, not drift, and requests nothing.
4. **drifted**: continues only if drift was found.
5. **request_retraining**: emits an event on the `mlops_retraining_requested` asset (which schedules
   `mlops_training_pipeline`) carrying why: the failed checks, the report, the model version and the window.
"""

with DAG(
    dag_id="mlops_drift_monitor",
    description="Compare recent inference traffic with the champion's training data; request retraining on drift",
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["mlops", "monitoring", "drift"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5), **ALERTS},
    params={
        "model_name": Param("breast_cancer_classifier", type="string", minLength=1,
                            description="Registered model whose champion is monitored"),
        "alias": Param("champion", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
                       description="Alias of the served version"),
        "inference_log_uri": Param("", type="string",
                                   description="Captured traffic: a JSONL file or a prefix (router log or SageMaker "
                                               "Data Capture). Empty: the mlops_inference_log_uri Variable, else the "
                                               "local router's log for this model"),
        "window_hours": Param(24, type="number", exclusiveMinimum=0, maximum=24 * 90,
                              description="Only traffic this recent"),
        "min_rows": Param(50, type="integer", minimum=10, description="Fewer rows than this: no verdict (fail)"),
        "feature_drift_threshold": Param(
            DEFAULT_DRIFT_THRESHOLDS["feature_drift"], type="number", exclusiveMinimum=0, maximum=1,
            description="Feature drift: a feature whose drift score (Kolmogorov-Smirnov for numeric, Cramer's V for "
                        "categorical features, 0..1) reaches this counts as drifted. Lower: more sensitive"),
        "prediction_drift_threshold": Param(
            DEFAULT_DRIFT_THRESHOLDS["prediction_drift"], type="number", exclusiveMinimum=0, maximum=1,
            description="Prediction drift: a drift score (0..1) of the model's outputs above this counts as drifted "
                        "(applies when the champion's training predictions were recorded). Lower: more sensitive"),
    },
) as dag:
    reference = ModelReferenceOperator(task_id="reference", model_name="{{ params.model_name }}",
                                       alias="{{ params.alias }}")

    collect = MlopsStepOperator(
        task_id="collect",
        step_name="collect-inference",
        module="airflow_mlops.steps.inference_log",
        args=[
            "--log-uri",
            "{{ params.inference_log_uri or macros.airflow_mlops.inference_log_uri(params.model_name) }}",
            "--reference-uri", "{{ ti.xcom_pull(task_ids='reference')['train_uri'] }}",
            "--label", "{{ ti.xcom_pull(task_ids='reference')['label_column'] }}",
            "--since-seconds", "{{ params.window_hours * 3600 }}",
            "--min-rows", "{{ params.min_rows }}",
            "--reference-predictions-uri", "{{ ti.xcom_pull(task_ids='reference')['train_predictions_uri'] or '' }}",
        ],
        compute={"cpu_request": "1", "memory_request": "4Gi", "memory_limit": "4Gi"},
        timeout_seconds=3600,
    )

    drift = DriftChecksOperator(
        task_id="drift",
        reference_data_uri="{{ ti.xcom_pull(task_ids='reference')['train_uri'] }}",
        current_data_uri="{{ ti.xcom_pull(task_ids='collect')['features_uri'] }}",
        # A version trained without recorded predictions gets feature drift only ("or ''": never the text None).
        reference_predictions_uri="{{ ti.xcom_pull(task_ids='reference')['train_predictions_uri'] or '' }}",
        current_predictions_uri="{{ ti.xcom_pull(task_ids='reference')['train_predictions_uri'] and "
                                "ti.xcom_pull(task_ids='collect')['predictions_uri'] or '' }}",
        label_column="{{ ti.xcom_pull(task_ids='reference')['label_column'] }}",
        cat_features=[],
        # Rendered from the params (validated against their schema at trigger time, and again at task start).
        feature_drift_threshold="{{ params.feature_drift_threshold }}",
        prediction_drift_threshold="{{ params.prediction_drift_threshold }}",
        gate="warn",  # drift is a finding to act on, not a failure of the monitor (a crash still fails the task)
        timeout_seconds=1800,
    )

    drifted = ShortCircuitOperator(
        task_id="drifted",
        python_callable=lambda ti: not ti.xcom_pull(task_ids="drift")["passed"],
        ignore_downstream_trigger_rules=False,
    )

    request_retraining = RequestRetrainingOperator(
        task_id="request_retraining",
        asset=RETRAINING_REQUESTED,
        reference="{{ ti.xcom_pull(task_ids='reference') }}",
        findings="{{ ti.xcom_pull(task_ids='drift') }}",
        window="{{ ti.xcom_pull(task_ids='collect') }}",
        outlets=[RETRAINING_REQUESTED],
    )

    reference >> collect >> drift >> drifted >> request_retraining
