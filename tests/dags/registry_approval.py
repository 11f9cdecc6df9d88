"""Test DAG: compare, then a human approval (HITL ApprovalOperator), then promote with the approver audited."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param

from airflow_mlops.operators.registry import CompareModelVersionsOperator, PromoteModelAliasOperator

with DAG(dag_id="registry_approval", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"model_name": Param("approval_model", type="string"), "version": Param("1", type="string")}) as dag:
    compare = CompareModelVersionsOperator(task_id="compare", model_name="{{ params.model_name }}",
                                           version="{{ params.version }}", policy={"primary_metric": "acc"})
    approve = ApprovalOperator(task_id="approve", subject="Promote {{ params.model_name }} v{{ params.version }}?",
                               body="{% for r in ti.xcom_pull(task_ids='compare')['reasons'] %}- {{ r }}\n"
                                    "{% endfor %}", response_timeout=timedelta(minutes=5))
    promote = PromoteModelAliasOperator(
        task_id="promote", model_name="{{ params.model_name }}", alias="challenger",
        decision="{{ ti.xcom_pull(task_ids='compare') | tojson }}",
        approval="{{ {'responded_by_user': (ti.xcom_pull(task_ids='approve') or {}).get('responded_by_user')} "
                 "| tojson }}")
    compare >> approve >> promote
