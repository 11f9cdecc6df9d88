"""Reference training pipeline: data -> checks -> train on the declared GPU spec -> checks -> register -> promote.

The same file runs on a laptop (steps as local processes, MLflow on SQLite) and on MWAA + EKS (steps as
GPU pods): only Airflow Variables and Connections differ. Nothing heavy is imported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, Variable, task

from airflow_mlops.assets import RETRAINING_REQUESTED, TRAINING_DATA, training_data_uri
from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.notifiers.channels import ALERTS, AlertOnFailure
from airflow_mlops.operators.checks import DataChecksOperator, ModelChecksOperator
from airflow_mlops.operators.registry import (
    CompareModelVersionsOperator,
    PromoteModelAliasOperator,
    RegisterModelVersionOperator,
    model_alias_asset,
)
from airflow_mlops.operators.step import MlopsStepOperator
from airflow_mlops.operators.training import GpuTrainingOperator

DOC = """
### MLOps training pipeline

1. **prepare_data**: the data to train on, split train/test and written as Parquet to the artifact store; its
   content hash is the data version. The data is the `dataset_uri` param (Parquet or CSV, a path or `s3://`), else
   the `uri` in the `extra` of the `mlops_training_data` event that triggered the run, else the scikit-learn dataset
   named by `dataset`. `label_column` names the label.
2. **data_checks**: deepchecks data integrity and train/test validation in the pinned checks environment; the
   `checks_gate` param decides what a failure does (fail the run, skip what follows, or warn).
3. **hp_grid → train → select_best**: one training job per point of the `hp_grid` param (dynamic task mapping;
   empty grid: one job), each with its own MLflow run and checkpoints; the best by the promotion policy's primary
   metric goes on. **train**: the reference trainer on the declared GPU spec (1x A100, 16Gi, 4Gi `/dev/shm`, spot) on
   Kubernetes, or a local process on a laptop. One MLflow run per logical run, resumed by retries from the
   latest checkpoint.
4. **model_checks**: deepchecks model evaluation from the trainer's train/test predictions and probabilities
   (framework-agnostic); the report is attached to the training run in MLflow.
5. **register**: a new MLflow model version with lineage tags (data version, params hash, git sha, image digest,
   dag/run ids).
6. **compare**: the new version against the `champion` alias under the `promotion_policy` param (primary metric,
   minimum improvement, guard metrics, required check verdicts); the decision and its reasons go to XCom and to
   tags on the version. A reject stops here.
7. **approve** (only when `automation_level` is `approve`, from the param or the `mlops_automation_level`
   Variable): a human approves or rejects in the Airflow UI (HITL).
8. **promote**: moves the `challenger` alias with compare-and-swap (the previous holder stays under
   `challenger_previous`) and emits the Asset event `x-mlflow://<model>@challenger` that schedules the rollout.

Runs weekly, when the `mlops_training_data` asset gets an event (new data landed), when the drift monitor emits
`mlops_retraining_requested` (its event says why), or by hand.

Where it runs is configuration: the `mlops_runtime` Variable (`local` | `kubernetes`), `mlops_artifact_root`,
the `mlflow_default` and `kubernetes_default` connections. See the README's settings table.
"""

with DAG(
    dag_id="mlops_training_pipeline",
    description="Data, data checks, GPU training, model checks, register, compare with the champion, promote",
    # Weekly, when new training data lands, or when the drift monitor (or a person) asks for retraining.
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC"),
                                 assets=(TRAINING_DATA | RETRAINING_REQUESTED)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["mlops", "training", "mlflow"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2), **ALERTS},
    user_defined_macros={"training_data_uri": training_data_uri},
    params={
        "model_name": Param("breast_cancer_classifier", type="string", minLength=1,
                            description="Registered model name in MLflow"),
        "dataset_uri": Param("", type="string", pattern=r"^$|^(s3://|file://|/)\S+\.(parquet|pq|csv|csv\.gz)$",
                             description="Data to train on (Parquet or CSV; s3:// or an absolute path). Empty: the "
                                         "uri of the triggering mlops_training_data event, else `dataset`"),
        "label_column": Param("target", type="string", minLength=1,
                              description="Label column of dataset_uri (the bundled datasets use `target`)"),
        "dataset": Param("breast_cancer", enum=["breast_cancer", "wine", "iris", "digits"],
                         description="scikit-learn bundled dataset, when there is no dataset_uri or data event"),
        "framework": Param("sklearn", enum=["auto", "sklearn", "torch"],
                           description="Trainer: scikit-learn, PyTorch MLP, or torch when installed"),
        "epochs": Param(20, type="integer", minimum=1, maximum=1000, description="Training epochs"),
        "learning_rate": Param(0.01, type="number", exclusiveMinimum=0, description="Learning rate"),
        "gpus": Param(1, type="integer", minimum=0, maximum=8, description="GPUs per worker (Kubernetes)"),
        "gpu_type": Param("a100", type=["string", "null"], description="GPU model, e.g. a100, h100, l4, t4"),
        "hp_grid": Param([], type="array", maxItems=32,
                         items={"type": "object", "minProperties": 1, "additionalProperties": False,
                                "properties": {"framework": {"enum": ["auto", "sklearn", "torch"]},
                                               "epochs": {"type": "integer", "minimum": 1},
                                               "learning_rate": {"type": "number", "exclusiveMinimum": 0},
                                               "batch_size": {"type": "integer", "minimum": 1},
                                               "hidden": {"type": "integer", "minimum": 1},
                                               "seed": {"type": "integer"}}},
                         description="Hyperparameter fan-out: one training job per point (overrides of the params "
                                     "above), e.g. [{\"learning_rate\": 0.01}, {\"learning_rate\": 0.1}]; the best "
                                     "by the promotion policy's primary metric goes on. Empty: one job"),
        "fault_percent": Param(0, type="integer", minimum=0, maximum=100,
                               description="DEMO SWITCH: the served model fails this % of requests (offline checks "
                                           "pass; the progressive rollout must catch it). Keep 0"),
        "checks_gate": Param("fail", enum=["fail", "skip_downstream", "warn"],
                             description="When data or model checks fail: fail the run, skip what follows, or warn"),
        "num_workers": Param(1, type="integer", minimum=1, maximum=16,
                             description="Workers; more than 1 runs an Indexed Job with torchrun env"),
        "automation_level": Param(None, type=["null", "string"], enum=[None, "auto", "approve"],
                                  description="auto: promote on a passing decision; approve: ask a human first. "
                                              "Empty: the mlops_automation_level Variable (default auto)"),
        "promotion_policy": Param(
            {"primary_metric": "test_accuracy", "direction": "maximize", "min_improvement": 0.0,
             "guards": [{"name": "test_log_loss", "direction": "minimize", "tolerance": 0.05}],
             "required_checks": ["data_checks", "model_checks"], "no_champion": "promote"},
            type="object", description="PromotionPolicy: challenger vs the champion alias"),
    },
) as dag:
    prepare_data = MlopsStepOperator(
        task_id="prepare_data",
        step_name="prepare-data",
        module="airflow_mlops.steps.prepare_data",
        args=["--dataset", "{{ params.dataset }}", "--label", "{{ params.label_column }}",
              "--source-uri", "{{ params.dataset_uri or training_data_uri(triggering_asset_events) }}"],
        compute=GpuSpec(cpu_request="1", memory_request="2Gi"),
        timeout_seconds=900,
    )

    @task(task_id="hp_grid")
    def hp_grid(params: dict | None = None) -> list[dict]:
        """One hyperparameter set per grid point (validated: unknown keys and repeats name the point)."""
        from airflow_mlops.core.hparams import expand_grid

        assert params is not None
        base = {"framework": params["framework"], "epochs": params["epochs"],
                "learning_rate": params["learning_rate"]}
        if params.get("fault_percent"):
            base["fault_percent"] = params["fault_percent"]
        return expand_grid(base, params.get("hp_grid"))

    grid = hp_grid()

    train = GpuTrainingOperator.partial(
        task_id="train",
        experiment_name="{{ params.model_name }}",
        train_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['train_uri'] }}",
        test_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['test_uri'] }}",
        data_version="{{ ti.xcom_pull(task_ids='prepare_data')['data_version'] }}",
        label_column="{{ ti.xcom_pull(task_ids='prepare_data')['label'] }}",
        compute={
            "gpus": "{{ params.gpus }}",
            "gpu_type": "{{ params.gpu_type if params.gpus else '' }}",
            "num_workers": "{{ params.num_workers }}",
            "cpu_request": "4",
            "memory_request": "16Gi",
            "memory_limit": "16Gi",
            "shm_size": "4Gi",
            "capacity_type": "spot",
        },
        timeout_seconds=4 * 3600,
        on_failure_callback=AlertOnFailure("training_failed"),
    ).expand(hyperparams=grid)

    @task(task_id="select_best")
    def select_best(results: list[dict], params: dict | None = None) -> dict:
        """The best training run of the fan-out by the promotion policy's primary metric."""
        from airflow_mlops.core.hparams import pick_best

        assert params is not None
        runs = list(results)
        policy = params["promotion_policy"]
        best = pick_best(runs, policy["primary_metric"], policy.get("direction", "maximize"))
        metric = policy["primary_metric"]
        for i, run in enumerate(runs):
            print(f"{'->' if i == best else '  '} train[{i}] {run.get('mlflow_run_id')}: {metric}="
                  f"{run['metrics'][metric]:.4f} ({run.get('framework')}, {run.get('epochs')} epochs)")
        return {**runs[best], "fanout": {"runs": len(runs), "picked": best, "metric": metric}}

    best = select_best(train.output)

    # Data checks before training: data integrity of both splits and train/test validation (drift, leakage).
    # The scikit-learn datasets carry derived features (radius, perimeter, area) that correlate by construction
    # and are genuinely predictive, and predictive-power (PPS) estimates on a test split of ~150 rows are noisy:
    # those three checks report without gating; everything else gates.
    data_checks = DataChecksOperator(
        task_id="data_checks",
        train_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['train_uri'] }}",
        test_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['test_uri'] }}",
        label_column="{{ ti.xcom_pull(task_ids='prepare_data')['label'] }}",
        cat_features=[],
        checks=[
            {"name": "feature_feature_correlation", "conditions": {}},
            {"name": "feature_label_correlation", "conditions": {}},
            {"name": "feature_label_correlation_change", "conditions": {}},
        ],
        gate="{{ params.checks_gate }}",
        timeout_seconds=1800,
    )

    # Model checks after training, from the trainer's predictions (never the model object).
    model_checks = ModelChecksOperator(
        task_id="model_checks",
        train_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['train_uri'] }}",
        test_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['test_uri'] }}",
        train_predictions_uri="{{ ti.xcom_pull(task_ids='select_best')['predictions']['train'] }}",
        test_predictions_uri="{{ ti.xcom_pull(task_ids='select_best')['predictions']['test'] }}",
        label_column="{{ ti.xcom_pull(task_ids='prepare_data')['label'] }}",
        cat_features=[],
        gate="{{ params.checks_gate }}",
        mlflow_run_id="{{ ti.xcom_pull(task_ids='select_best')['mlflow_run_id'] }}",
        timeout_seconds=1800,
    )

    register = RegisterModelVersionOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        training_result="{{ ti.xcom_pull(task_ids='select_best') }}",
        check_results={"data_checks": "{{ ti.xcom_pull(task_ids='data_checks') }}",
                       "model_checks": "{{ ti.xcom_pull(task_ids='model_checks') }}"},
    )

    compare = CompareModelVersionsOperator(
        task_id="compare",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        policy="{{ params.promotion_policy | tojson }}",
        champion_alias="champion",
        target_alias="challenger",
    )

    @task.branch(task_id="route")
    def route(decision: dict, level: str | None) -> list[str]:
        """Reject: stop. Promote: straight to promote (auto) or through a human approval (approve)."""
        if not decision or not decision.get("promote"):
            return []
        level = level or Variable.get("mlops_automation_level", default="auto")
        return ["approve"] if level == "approve" else ["promote"]

    approve = ApprovalOperator(
        task_id="approve",
        subject="Promote {{ params.model_name }} v{{ ti.xcom_pull(task_ids='register')['version'] }} to challenger?",
        body="{% for r in ti.xcom_pull(task_ids='compare')['reasons'] %}- {{ r }}\n{% endfor %}",
        response_timeout=timedelta(days=2),
    )

    promote = PromoteModelAliasOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        alias="challenger",
        decision="{{ ti.xcom_pull(task_ids='compare') | tojson }}",
        approval="{{ {'responded_by_user': (ti.xcom_pull(task_ids='approve') or {}).get('responded_by_user')} "
                 "| tojson }}",
        # The event's URI names the default model; its extra carries the model, alias and version moved.
        outlets=[model_alias_asset("breast_cancer_classifier", "challenger")],
        trigger_rule="none_failed_min_one_success",
    )
    routed = route(compare.output, "{{ params.automation_level or '' }}")

    prepare_data >> data_checks >> grid
    best >> model_checks >> register
    register >> compare >> routed
    routed >> [approve, promote]
    approve >> promote
