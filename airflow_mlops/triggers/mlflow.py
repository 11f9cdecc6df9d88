"""Poll the MLflow registry from the triggerer until a RegistryWait is met or its deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.core.promotion import RegistryWait


class MlflowRegistryTrigger(BaseTrigger):
    """Fires ``{"status": "met", ...}`` when the wait is met, ``{"status": "timeout", ...}`` at the deadline.

    Registry calls are blocking (MlflowClient); each poll runs in a thread so the triggerer's loop stays free.

    :param wait: the RegistryWait as a dict.
    :param mlflow_conn_id: connection id.
    :param poll_interval: seconds between polls.
    :param deadline: epoch seconds after which the trigger reports a timeout.
    """

    def __init__(self, wait: Mapping[str, Any], mlflow_conn_id: str, poll_interval: float, deadline: float) -> None:
        super().__init__()
        self.wait = dict(wait)
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"wait": self.wait, "mlflow_conn_id": self.mlflow_conn_id, "poll_interval": self.poll_interval,
                 "deadline": self.deadline})

    def _poll(self, wait: RegistryWait) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id).registry_state(wait.model_name, wait.alias)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        wait = RegistryWait(**self.wait)
        polls = 0
        while True:
            polls += 1
            try:
                state = await asyncio.to_thread(self._poll, wait)
                met, seen = wait.evaluate(state)
            except Exception as err:  # a registry outage is "not yet", reported; the deadline still applies
                state, met, seen = {}, False, f"registry error: {err}"
            if met:
                yield TriggerEvent({"status": "met", "awaited": wait.describe(), "seen": seen, "state": state,
                                    "polls": polls})
                return
            left = self.deadline - time.time()
            if left <= 0:
                yield TriggerEvent({"status": "timeout", "awaited": wait.describe(), "seen": seen, "polls": polls})
                return
            self.log.info("waiting for %s; seen: %s (%.0fs left)", wait.describe(), seen, left)
            await asyncio.sleep(min(self.poll_interval, max(left, 0.01)))
