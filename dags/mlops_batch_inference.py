"""Reference batch inference (ETML): score a batch with the champion; blue-green against a candidate by param.

The same file runs on a laptop (scoring as a local process, MLflow on SQLite) and on MWAA + EKS (scoring as a
pod, batches in S3): only Airflow Variables and Connections differ. Nothing heavy is imported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.notifiers.channels import ALERTS
from airflow_mlops.operators.batch import BatchScoreOperator, PublishBatchScoresOperator

DOC = """
### MLOps batch inference

1. **score**: reads a Parquet batch (`input_uri`; empty = a bundled sample dataset on a laptop) and scores it
   with `models:/<model_name>@champion`. The alias is pinned to its version first, so the output says exactly
   which version scored it. Scores (`prediction`, `proba_<class>`) land as Parquet in the artifact store.
   In **blue_green** mode the candidate (`@challenger` by default) scores the same rows, and the step measures
   how far the two outputs agree (same-class share, mean probability difference, class-rate shift).
2. **publish**: consumers read a pointer, `serving/batch/<model>/current.json` under the artifact root, never a
   fixed path. It moves to the candidate's output only when the outputs agree within the thresholds; otherwise
   consumers keep the champion's scores and the reasons are logged (or the task fails, if
   `on_disagreement=fail`). The previous pointer is kept inside the new one for rollback.
"""

with DAG(
    dag_id="mlops_batch_inference",
    description="Score a batch with the champion model; blue-green against a candidate before switching consumers",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["mlops", "batch-inference", "mlflow"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2), **ALERTS},
    params={
        "model_name": Param("breast_cancer_classifier", type="string", minLength=1,
                            description="Registered model name in MLflow"),
        "input_uri": Param("", type="string",
                           description="Parquet batch to score (local path or s3://). Empty: the bundled "
                                       "`sample_dataset` (laptop demo)"),
        "sample_dataset": Param("breast_cancer", enum=["breast_cancer", "wine", "iris", "digits"],
                                description="Scored when input_uri is empty"),
        "mode": Param("champion", enum=["champion", "blue_green"],
                      description="champion: score with the champion only. blue_green: also score with the "
                                  "candidate and switch consumers only if the outputs agree"),
        "alias": Param("champion", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
                       description="Alias serving production"),
        "candidate_alias": Param("challenger", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
                                 description="Alias of the candidate (blue_green mode)"),
        "min_agreement": Param(0.95, type="number", minimum=0, maximum=1,
                               description="Minimum share of rows where both models predict the same class"),
        "max_mean_abs_proba_diff": Param(0.1, type="number", minimum=0, maximum=1,
                                         description="Maximum mean absolute difference of class probabilities"),
        "max_class_rate_shift": Param(0.05, type="number", minimum=0, maximum=1,
                                      description="Maximum change of any predicted class's share of rows"),
        "on_disagreement": Param("keep_current", enum=["keep_current", "fail"],
                                 description="When the candidate disagrees: keep serving the champion's scores, "
                                             "or also fail the run so someone looks"),
    },
) as dag:
    score = BatchScoreOperator(
        task_id="score",
        model_name="{{ params.model_name }}",
        alias="{{ params.alias }}",
        candidate_alias="{{ params.candidate_alias if params.mode == 'blue_green' else '' }}",
        input_uri="{{ params.input_uri }}",
        sample_dataset="{{ params.sample_dataset }}",
        compute={"cpu_request": "2", "memory_request": "8Gi", "memory_limit": "8Gi"},
        timeout_seconds=2 * 3600,
    )

    publish = PublishBatchScoresOperator(
        task_id="publish",
        score_result="{{ ti.xcom_pull(task_ids='score') }}",
        policy={
            "min_agreement": "{{ params.min_agreement }}",
            "max_mean_abs_proba_diff": "{{ params.max_mean_abs_proba_diff }}",
            "max_class_rate_shift": "{{ params.max_class_rate_shift }}",
            "on_disagreement": "{{ params.on_disagreement }}",
        },
    )

    score >> publish
