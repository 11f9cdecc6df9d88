"""Reference progressive rollout: scheduled on the promotion Asset; canary or blue-green on the configured target.

The same file rolls out to the local router (laptop), Kubernetes, KServe or a SageMaker endpoint: the
``mlops_rollout_target`` Variable picks the target, ``mlops_rollout_target_config`` (JSON) its settings, and
``mlops_rollout_analysis_settings`` (JSON) where metrics come from (Prometheus URL, AWS region). Nothing
heavy is imported here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Param, task

from airflow_mlops.notifiers.channels import ALERTS
from airflow_mlops.operators.registry import model_alias_asset
from airflow_mlops.operators.resolve import ResolveRolloutOperator
from airflow_mlops.operators.rollout import ModelRolloutOperator

#: One rollout DAG per served model: Asset URIs are fixed when the DAG is parsed.
MODEL_NAME = "breast_cancer_classifier"
PROMOTED = model_alias_asset(MODEL_NAME, "challenger")

# SageMaker publishes per-variant metrics; the target names a version's variant "{backend}".
SAGEMAKER_DIMENSIONS = {"EndpointName": "{endpoint}", "VariantName": "{backend}"}

# Analysis per target kind. Query templates take {backend}, {version}, {model}, {endpoint}, {window} (seconds),
# {role}; literal braces
# (PromQL label matchers) are doubled. Conditions compare the candidate ("result") with the stable baseline.
ANALYSIS_BY_TARGET = {
    "local": {"metrics": [
        {"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": 10, "count": 3,
         "success_condition": "result <= stable * 1.5 + 0.005", "failure_limit": 0, "inconclusive_limit": 2},
        {"name": "p95_latency", "provider": "router", "query": "latency_p95_seconds", "interval_s": 10, "count": 3,
         "success_condition": "result <= stable * 1.2 + 0.05", "failure_limit": 1, "inconclusive_limit": 2},
    ]},
    "sagemaker": {"metrics": [
        # Invocation5XXErrors is 0 or 1 per request: its Average is the variant's 5xx rate.
        {"name": "error_rate", "provider": "cloudwatch", "query": "AWS/SageMaker/Invocation5XXErrors",
         "interval_s": 60, "count": 3, "success_condition": "result <= stable * 1.5 + 0.005", "failure_limit": 0,
         "inconclusive_limit": 2,
         "params": {"stat": "Average", "period": 60, "dimensions": SAGEMAKER_DIMENSIONS}},
        {"name": "model_latency", "provider": "cloudwatch", "query": "AWS/SageMaker/ModelLatency", "interval_s": 60,
         "count": 3, "success_condition": "result <= stable * 1.2", "failure_limit": 1, "inconclusive_limit": 2,
         "params": {"stat": "p95", "period": 60, "dimensions": SAGEMAKER_DIMENSIONS}},
    ]},
    "kubernetes": {"metrics": [
        {"name": "error_rate", "provider": "prometheus", "interval_s": 60, "count": 3,
         "query": 'sum(rate(http_requests_total{{service="{backend}",code=~"5.."}}[{window}s])) / '
                  'sum(rate(http_requests_total{{service="{backend}"}}[{window}s]))',
         "success_condition": "result <= stable * 1.5 + 0.005", "failure_limit": 0, "inconclusive_limit": 2},
    ]},
    "kserve": {"metrics": [
        {"name": "error_rate", "provider": "prometheus", "interval_s": 60, "count": 3,
         "query": 'sum(rate(revision_request_count{{revision_name=~"{backend}.*",response_code_class="5xx"}}'
                  '[{window}s])) / sum(rate(revision_request_count{{revision_name=~"{backend}.*"}}[{window}s]))',
         "success_condition": "result <= stable * 1.5 + 0.005", "failure_limit": 0, "inconclusive_limit": 2},
    ]},
}

# Blue-green analysis runs after the switch (the preview gets no live traffic to measure, and the stable
# version then serves none, so there is no baseline): absolute thresholds, judged within scale_down_seconds, and a
# failure switches traffic back.
BLUE_GREEN_ANALYSIS_BY_TARGET = {
    "local": {"metrics": [
        {"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": 10, "count": 3,
         "success_condition": "result <= 0.01", "failure_limit": 0, "inconclusive_limit": 2},
    ]},
    "sagemaker": {"metrics": [
        {"name": "error_rate", "provider": "cloudwatch", "query": "AWS/SageMaker/Invocation5XXErrors",
         "interval_s": 60, "count": 3, "success_condition": "result <= 0.01", "failure_limit": 0,
         "inconclusive_limit": 2, "params": {"stat": "Average", "period": 60, "dimensions": SAGEMAKER_DIMENSIONS}},
    ]},
    **{kind: {"metrics": [{**ANALYSIS_BY_TARGET[kind]["metrics"][0], "success_condition": "result <= 0.01"}]}
       for kind in ("kubernetes", "kserve")},
}

DOC = f"""
### MLOps progressive rollout

Scheduled on the Asset `{PROMOTED.uri}`: the training pipeline's promotion of `{MODEL_NAME}@challenger`.
Also runs by hand with a `candidate_version`.

1. **resolve**: the candidate (the param, else the version in the promotion event, else `@challenger`) and the
   stable version (`@champion`; none means a first deployment, which goes straight to 100%).
2. **rollout**: a **canary** (weights `canary_steps`, `pause_seconds` at each, analysis every step, relative to the
   stable version) or a **blue_green** (`preview_seconds` of preview, then all traffic switches; the
   `blue_green_analysis` runs while the old version is kept for `scale_down_seconds`, and a failure switches back) on
   the target the `mlops_rollout_target` Variable selects (`local` | `kubernetes` | `kserve` | `sagemaker`).
   Every pause and analysis interval is deferred to the triggerer: no worker slot is held while it waits.
   The task log has one line per step: weight, measured values against the stable baseline, decision.
   - success: the candidate serves 100% and `@champion` moves to it (compare-and-swap; the previous champion
     stays under `@champion_previous`);
   - failed analysis (or a killed task): rollback, the stable version serves 100%, `@champion` stays, the task
     fails with the reason. The record is in XCom and in `mlops.rollout.*` tags on the candidate version.

3. **approve_switch → switch** (blue-green with `switch_approval` only; otherwise skipped): the rollout stops at
   the approval gate after the preview (the candidate runs beside stable with no live traffic) and a person answers
   in the Airflow UI's Required actions: **Switch** lets `switch` take the rollout over and move all traffic,
   **Roll back** (or no answer within 24 hours: 12 hours, asked twice) makes it roll back. Who decided is in the
   rollout's history.

Analysis defaults per target are in the `analysis` param (router metrics locally, CloudWatch on SageMaker,
Prometheus on Kubernetes/KServe); edit them in the trigger form.
"""

# Where to roll out, from the Variables: one template for the rollout and the approved switch.
TARGET = ("{{ dict(var.json.get('mlops_rollout_target_config', {}),"
          " kind=var.value.get('mlops_rollout_target', 'local'),"
          " name=(params.endpoint or macros.airflow_mlops.endpoint_name(params.model_name))) | tojson }}")
STRATEGY = (
    "{% set kind = var.value.get('mlops_rollout_target', 'local') %}"
    "{% if params.strategy == 'canary' %}"
    "{{ {'kind': 'canary', 'steps': params.canary_steps, 'pause_s': params.pause_seconds,"
    " 'analysis': params.analysis[kind]} | tojson }}"
    "{% else %}"
    "{{ {'kind': 'blue_green', 'preview_pause_s': params.preview_seconds, 'preview_analysis': None,"
    " 'auto_promote': not params.switch_approval,"
    " 'post_promotion_analysis': params.blue_green_analysis[kind],"
    " 'scale_down_delay_s': params.scale_down_seconds} | tojson }}"
    "{% endif %}"
)
# What both rollout tasks share. The switch runs after a failed approval too (trigger_rule all_done), so also when
# resolve failed: the versions render empty then, and it skips.
ROLLOUT = {
    "model_name": "{{ params.model_name }}",
    "candidate_version": "{{ (ti.xcom_pull(task_ids='resolve') or {}).get('candidate_version') or '' }}",
    "stable_version": "{{ (ti.xcom_pull(task_ids='resolve') or {}).get('stable_version') or '' }}",
    "strategy": STRATEGY,
    "target": TARGET,
    "analysis_settings": "{{ var.json.get('mlops_rollout_analysis_settings', {}) | tojson }}",
    "champion_alias": "champion",
    "on_kill": "rollback",
    "on_retry": "continue",
    "ready_timeout_s": 900,
    "poll_s": 2,
}

with DAG(
    dag_id="mlops_progressive_rollout",
    description="Canary or blue-green rollout of the promoted model with analysis and automatic rollback",
    schedule=[PROMOTED],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two rollouts of one model must never interleave
    doc_md=DOC,
    tags=["mlops", "rollout", "deployment"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=30), **ALERTS},
    params={
        "model_name": Param(MODEL_NAME, type="string", enum=[MODEL_NAME],
                            description="The model this DAG rolls out (fixed: the schedule's Asset names it)"),
        "candidate_version": Param("", type="string", pattern=r"^[0-9]*$",
                                   description="Version to roll out; empty: the promotion event's, else @challenger"),
        "strategy": Param("canary", enum=["canary", "blue_green"], description="Rollout strategy"),
        "canary_steps": Param([10, 50, 100], type="array", items={"type": "integer", "minimum": 1, "maximum": 100},
                              minItems=1, description="Candidate traffic % per canary step, increasing, ending at 100"),
        "pause_seconds": Param(300, type="number", exclusiveMinimum=0, maximum=86400,
                               description="Seconds at each canary step; at least the analysis window "
                                           "(interval x count) of the target's metrics"),
        "preview_seconds": Param(60, type="number", exclusiveMinimum=0, maximum=86400,
                                 description="Blue-green: seconds the candidate runs beside stable before the switch"),
        "scale_down_seconds": Param(300, type="number", exclusiveMinimum=0, maximum=86400,
                                    description="Blue-green: seconds the old version keeps running after the switch, "
                                                "while blue_green_analysis judges the new one (at least its window)"),
        "endpoint": Param("", type="string", pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$",
                          description="Endpoint/service name at the target; empty: derived from the model name"),
        "switch_approval": Param(False, type="boolean",
                                 description="Blue-green: after the preview a person approves the switch in the "
                                             "Airflow UI (Required actions); Roll back, or no answer within "
                                             "24 hours, rolls back"),
        "analysis": Param(ANALYSIS_BY_TARGET, type="object",
                          description="Canary AnalysisSpec per target kind (metrics, conditions, intervals, limits)"),
        "blue_green_analysis": Param(BLUE_GREEN_ANALYSIS_BY_TARGET, type="object",
                                     description="Blue-green AnalysisSpec per target kind, judged after the switch"),
    },
) as dag:
    resolve = ResolveRolloutOperator(task_id="resolve", model_name="{{ params.model_name }}",
                                     candidate_version="{{ params.candidate_version }}")

    rollout = ModelRolloutOperator(
        task_id="rollout",
        **ROLLOUT,
        pause_at_approval=True,  # the gate is a HITL task below, visible in the UI, not a silent wait
    )

    @task.short_circuit(task_id="needs_switch_approval")
    def needs_switch_approval(record: dict | None) -> bool:
        """Only a blue-green with switch_approval stops at the gate; everything else is finished here."""
        return bool(record) and record.get("outcome") == "awaiting_approval"

    approve_switch = HITLOperator(
        task_id="approve_switch",
        subject="Switch {{ params.model_name }} to v{{ ti.xcom_pull(task_ids='resolve')['candidate_version'] }}?",
        body=("Blue-green preview of **{{ params.model_name }}** "
              "v{{ ti.xcom_pull(task_ids='resolve')['candidate_version'] }} is up beside "
              "v{{ ti.xcom_pull(task_ids='resolve')['stable_version'] }}, with no live traffic yet.\n\n"
              "- **Switch**: all traffic moves to the candidate, judged by the post-switch analysis for "
              "{{ params.scale_down_seconds }}s (a failure switches back); `@champion` moves on success.\n"
              "- **Roll back**: the candidate is removed; the stable version keeps 100%."),
        options=["Switch", "Roll back"],
        response_timeout=timedelta(hours=12),  # with the DAG's one retry: asked twice, 24 hours in all
    )

    switch = ModelRolloutOperator(
        task_id="switch",
        **ROLLOUT,
        adopt_from="rollout",
        # The HITL result without its datetime (not JSON); none when the approval timed out or failed.
        approval=("{% set r = ti.xcom_pull(task_ids='approve_switch') or {} %}"
                  "{{ {'chosen_options': r.get('chosen_options'), 'responded_by_user': r.get('responded_by_user'),"
                  " 'params_input': r.get('params_input')} | tojson }}"),
        trigger_rule="all_done",  # also after a timed-out or failed approval: that rejects, i.e. rolls back
    )

    gate = needs_switch_approval(rollout.output)
    resolve >> rollout >> gate >> approve_switch >> switch
