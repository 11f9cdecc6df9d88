"""Live traffic for a rollout on a laptop: scoring requests at a steady rate from a thread, counted by response.

The demo sends held-out rows through the local router with it, and the rollout tests use it as load; it
reads the router's ``X-Mlops-Backend`` header to count which version answered. Standard library only at import;
:meth:`TrafficGenerator.from_frame` builds the requests from a frame through the model's input contract
(``airflow_mlops.steps.signature``), so live traffic matches the logged signature.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.steps.signature import InputContract


class TrafficGenerator:
    """POSTs ``payloads`` (round robin) to ``url + path`` at ``rate`` requests per second until stopped.

    ``counts`` maps (backend, HTTP status) to a count; backend ``"?"`` when the answer names none, and status 0
    when the request got no answer at all.

    :param url: base URL of the router or endpoint.
    :param payloads: request bodies (JSON bytes), sent in turn.
    :param rate: requests per second.
    :param path: request path.
    :param timeout: seconds per request.
    """

    def __init__(self, url: str, payloads: Sequence[bytes], rate: float = 25.0, path: str = "/invocations",
                 timeout: float = 10.0) -> None:
        if not payloads:
            raise ValueError("payloads: at least one request body")
        if rate <= 0:
            raise ValueError(f"rate: requests per second > 0, got {rate!r}")
        self.url, self.payloads, self.rate, self.path, self.timeout = url.rstrip("/"), list(payloads), rate, path, \
            timeout
        self.counts: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    @classmethod
    def from_frame(cls, url: str, frame: Any, model_input: InputContract, rows_per_request: int = 1,
                   **kwargs: Any) -> TrafficGenerator:
        """Traffic of ``frame``'s rows, ``rows_per_request`` per request, shaped by the model's input contract
        (its columns in order, its dtypes); other arguments as the constructor.

        :raises SchemaMismatch: the frame lacks a column the contract requires (the message names them).
        """
        return cls(url, model_input.request_bodies(frame, rows_per_request), **kwargs)

    def _run(self) -> None:
        next_at, sent = time.monotonic(), 0
        while not self._stop.is_set():
            request = urllib.request.Request(f"{self.url}{self.path}", data=self.payloads[sent % len(self.payloads)],
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    key = (response.headers.get("X-Mlops-Backend", "?"), response.status)
            except urllib.error.HTTPError as err:
                key = (err.headers.get("X-Mlops-Backend", "?"), err.code)
            except OSError:
                key = ("?", 0)
            self.counts[key] += 1
            sent += 1
            next_at += 1.0 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def describe(self) -> str:
        """``v1: 548x200; v2: 12x200, 3x500`` style summary."""
        by_backend: dict[str, Counter[int]] = {}
        for (backend, status), n in self.counts.items():
            by_backend.setdefault(backend, Counter())[status] += n
        return "; ".join(f"{b}: " + ", ".join(f"{n}x{s}" for s, n in sorted(c.items()))
                         for b, c in sorted(by_backend.items()))
