"""A person answering a HITL task, through the public HITL API's own handler (what the Required actions UI sends)."""

from __future__ import annotations

import threading
import time


def answer_when_waiting(dag_id: str, task_id: str, option: str, answered: list[str], user_id: str = "alice",
                        user_name: str = "Alice", timeout_s: float = 240) -> threading.Thread:
    """Start a thread that waits until ``dag_id.task_id`` awaits input, then chooses ``option``; the answered
    run ids go to ``answered``."""

    def respond() -> None:
        from types import SimpleNamespace

        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        user = SimpleNamespace(get_id=lambda: user_id, get_name=lambda: user_name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with create_session() as session:
                ti = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id,
                                                        TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                                                        ).one_or_none()
                if ti is None:
                    continue
                update_hitl_detail(dag_id=dag_id, dag_run_id=ti.run_id, task_id=task_id,
                                   update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option]),
                                   user=user, session=session)
                answered.append(ti.run_id)
                return

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread
