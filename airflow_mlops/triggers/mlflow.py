"""Poll the MLflow registry from the triggerer until a RegistryWait is met or its deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.core.promotion import RegistryWait

#: 4xx answers that mean "later", not "never": a poll is itself a later try, so they keep the trigger polling.
POLL_AGAIN_STATUSES = frozenset({408, 429})
MISSING_MODEL = ("wait", "fail")


def poll_error(err: BaseException) -> tuple[bool, str]:
    """Whether a failed poll should be polled again (True) or end the wait now (False), and why.

    The hook's rule (:func:`~airflow_mlops.hooks.mlflow.is_retryable`): 5xx answers, timeouts and connection
    errors are transient, so the trigger keeps polling until its deadline; 408 and 429 too. Any other error is
    final: a 401/403 (credentials or permissions), a 404 that is not an unknown model (a wrong tracking URI), a
    bad request, or a bug. Polling for days would not change it, so the sensor fails at once and says why.
    """
    from airflow_mlops.hooks.mlflow import http_status, is_retryable

    retry, why = is_retryable(err)
    if retry:
        return True, why
    status = http_status(err)
    if status in POLL_AGAIN_STATUSES:
        return True, why
    hint = {401: "the connection's credentials were refused", 403: "the connection's user may not read this model",
            404: "no such endpoint: is the tracking URI an MLflow server?"}.get(status or 0)
    return False, f"{why}: {hint}" if hint else why


class MlflowRegistryTrigger(BaseTrigger):
    """Fires ``{"status": "met", ...}`` when the wait is met, ``{"status": "timeout", ...}`` at the deadline, and
    ``{"status": "error", ...}`` at once on an error that polling cannot fix (see :func:`poll_error`).

    Registry calls are blocking (MlflowClient); each poll runs in a thread so the triggerer's loop stays free.

    :param wait: the RegistryWait as a dict.
    :param mlflow_conn_id: connection id.
    :param poll_interval: seconds between polls.
    :param deadline: epoch seconds after which the trigger reports a timeout.
    :param missing_model: ``wait`` (an absent model is "not yet": it may be registered later) or ``fail``
        (an absent model ends the wait with an error, e.g. a misspelt name).
    """

    def __init__(self, wait: Mapping[str, Any], mlflow_conn_id: str, poll_interval: float, deadline: float,
                 missing_model: str = "wait") -> None:
        super().__init__()
        if missing_model not in MISSING_MODEL:
            raise ValueError(f"missing_model must be one of {MISSING_MODEL}, got {missing_model!r}")
        self.wait = dict(wait)
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.missing_model = missing_model

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"wait": self.wait, "mlflow_conn_id": self.mlflow_conn_id, "poll_interval": self.poll_interval,
                 "deadline": self.deadline, "missing_model": self.missing_model})

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
            except Exception as err:
                again, why = poll_error(err)
                if not again:
                    yield TriggerEvent({"status": "error", "awaited": wait.describe(), "error": f"{why}: {err}",
                                        "polls": polls})
                    return
                # A registry outage is "not yet", reported; the deadline still applies.
                state, met, seen = {}, False, f"registry error ({why}): {err}"
            if not met and self.missing_model == "fail" and state.get("exists") is False:
                yield TriggerEvent({"status": "error", "awaited": wait.describe(), "polls": polls,
                                    "error": f"registered model {wait.model_name!r} does not exist (missing_model="
                                             "'fail')"})
                return
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
