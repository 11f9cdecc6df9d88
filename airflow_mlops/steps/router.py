"""A small weighted HTTP router for the local rollout target: the laptop stand-in for a load balancer.

Not a production component: on Kubernetes the Gateway API / Service does this, on SageMaker the endpoint's
production variants. It runs as its own process (``python -m airflow_mlops.steps.router``), never imports
Airflow, and offers what a rollout needs from a load balancer:

- ``POST /invocations`` (any path not below): forwarded to one backend, chosen by smooth weighted
  round-robin over the current weights (deterministic: 5% means exactly 1 request in 20);
- ``GET /metrics[?window=S]``: per-backend requests, errors and latency in Prometheus text format, cumulative
  counters plus gauges over the last ``S`` seconds (error ratio, p50/p95 latency, request rate);
- ``GET /admin/routes`` and ``POST /admin/routes`` (``{"backends": {name: url}, "weights": {name: pct}}``):
  read or replace the routing table; it is written atomically to ``--routes`` so a restarted router resumes;
- ``GET /health``;
- an optional inference log (``--inference-log``, JSONL: time, backend, status, latency, request, response)
  that the drift monitor reads.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import json
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WINDOW_KEEP_S = 900.0
MAX_LOGGED_BODY = 64 * 1024


class Routes:
    """The routing table (backends and weights) with smooth weighted round-robin selection."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.backends: dict[str, str] = {}
        self.weights: dict[str, int] = {}
        self.current: dict[str, int] = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.replace(json.load(f), persist=False)

    def replace(self, table: dict[str, Any], persist: bool = True) -> dict[str, Any]:
        """Validate and install ``table``; write it to disk first so a crash never loses an applied change."""
        backends = {str(k): str(v) for k, v in (table.get("backends") or {}).items()}
        weights = {str(k): int(v) for k, v in (table.get("weights") or {}).items()}
        unknown = sorted(set(weights) - set(backends))
        if unknown:
            raise ValueError(f"weights name unknown backends {unknown}; backends: {sorted(backends)}")
        if any(w < 0 for w in weights.values()) or (weights and sum(weights.values()) != 100):
            raise ValueError(f"weights must be >= 0 and sum to 100, got {weights}")
        snapshot = {"backends": backends, "weights": weights}
        if persist and self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(snapshot, f)
            os.replace(tmp, self.path)
        with self.lock:
            self.backends, self.weights = backends, weights
            self.current = {name: 0 for name in weights}
        return snapshot

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"backends": dict(self.backends), "weights": dict(self.weights)}

    def pick(self) -> tuple[str, str] | None:
        """Smooth weighted round-robin (nginx): exact shares over every 100 requests, evenly interleaved."""
        with self.lock:
            live = {n: w for n, w in self.weights.items() if w > 0}
            if not live:
                return None
            total = sum(live.values())
            for name, weight in live.items():
                self.current[name] = self.current.get(name, 0) + weight
            best = max(live, key=lambda n: self.current[n])
            self.current[best] -= total
            return best, self.backends[best]


class Stats:
    """Per-backend counters and a time window of (time, latency, error) samples."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency_sum: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.buckets: dict[str, list[int]] = {}
        self.samples: dict[str, collections.deque[tuple[float, float, bool]]] = {}

    def record(self, backend: str, status: int, seconds: float) -> None:
        now = time.time()
        with self.lock:
            self.requests[(backend, status)] += 1
            self.latency_sum[backend] += seconds
            counts = self.buckets.setdefault(backend, [0] * (len(self.BUCKETS) + 1))
            counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            window = self.samples.setdefault(backend, collections.deque())
            window.append((now, seconds, status >= 500))
            while window and window[0][0] < now - WINDOW_KEEP_S:
                window.popleft()

    def render(self, weights: dict[str, int], window_s: float | None) -> str:
        lines = ["# HELP mlops_router_requests_total Requests forwarded, by backend and HTTP status.",
                 "# TYPE mlops_router_requests_total counter"]
        now = time.time()
        with self.lock:
            for (backend, status), n in sorted(self.requests.items()):
                lines.append(f'mlops_router_requests_total{{backend="{backend}",code="{status}"}} {n}')
            lines += ["# TYPE mlops_router_request_duration_seconds histogram"]
            for backend, counts in sorted(self.buckets.items()):
                running = 0
                for le, n in zip((*self.BUCKETS, math.inf), counts, strict=True):
                    running += n
                    bound = "+Inf" if le == math.inf else f"{le:g}"
                    lines.append(f'mlops_router_request_duration_seconds_bucket{{backend="{backend}",le="{bound}"}} '
                                 f"{running}")
                lines.append(f'mlops_router_request_duration_seconds_sum{{backend="{backend}"}} '
                             f"{self.latency_sum[backend]:.6f}")
                lines.append(f'mlops_router_request_duration_seconds_count{{backend="{backend}"}} {running}')
            lines += ["# TYPE mlops_router_weight gauge"]
            lines += [f'mlops_router_weight{{backend="{b}"}} {w}' for b, w in sorted(weights.items())]
            if window_s:
                lines += [f"# Gauges over the last {window_s:g}s (NaN: no requests in the window).",
                          "# TYPE mlops_router_window_requests gauge"]
                for backend in sorted(set(self.samples) | set(weights)):
                    recent = [s for s in self.samples.get(backend, ()) if s[0] >= now - window_s]
                    errors = sum(1 for s in recent if s[2])
                    latencies = sorted(s[1] for s in recent)
                    label = f'{{backend="{backend}",window="{window_s:g}"}}'
                    lines.append(f"mlops_router_window_requests{label} {len(recent)}")
                    lines.append(f"mlops_router_window_errors{label} {errors}")
                    lines.append(f"mlops_router_window_error_ratio{label} "
                                 f"{errors / len(recent) if recent else math.nan}")
                    lines.append(f"mlops_router_window_request_rate{label} {len(recent) / window_s}")
                    for q in (50, 95, 99):
                        value = latencies[min(len(latencies) - 1, math.ceil(q / 100 * len(latencies)) - 1)] \
                            if latencies else math.nan
                        lines.append(f"mlops_router_window_latency_p{q}_seconds{label} {value}")
        return "\n".join(lines) + "\n"


class InferenceLog:
    """Append-only JSONL of requests and responses (one line each) for the drift monitor."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, backend: str, status: int, seconds: float, request: bytes, response: bytes) -> None:
        if not self.path:
            return
        entry = {"ts": time.time(), "backend": backend, "status": status, "latency_s": round(seconds, 6),
                 "request": _json_or_none(request), "response": _json_or_none(response) if status < 400 else None}
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.lock, open(self.path, "a") as f:
            f.write(line)


def _json_or_none(body: bytes) -> Any:
    if len(body) > MAX_LOGGED_BODY:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def make_handler(routes: Routes, stats: Stats, log: InferenceLog, timeout_s: float) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to this router's state."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # access logs would drown the task log
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/health":
                self._send(200, b'{"status": "ok"}')
            elif url.path == "/metrics":
                window = parse_qs(url.query).get("window", [None])[0]
                try:
                    window_s = float(window) if window else None
                except ValueError:
                    self._send(400, b'{"error": "window must be a number of seconds"}')
                    return
                text = stats.render(routes.snapshot()["weights"], window_s)
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            elif url.path == "/admin/routes":
                self._send(200, json.dumps(routes.snapshot()).encode())
            else:
                self._forward(b"")

        def do_POST(self) -> None:
            body = self._body()
            if urlsplit(self.path).path == "/admin/routes":
                try:
                    snapshot = routes.replace(json.loads(body))
                except (ValueError, TypeError, AttributeError) as err:
                    self._send(400, json.dumps({"error": str(err)}).encode())
                    return
                self._send(200, json.dumps(snapshot).encode())
                return
            self._forward(body)

        def _forward(self, body: bytes) -> None:
            chosen = routes.pick()
            if chosen is None:
                self._send(503, b'{"error": "no backend has weight"}')
                return
            name, base = chosen
            started = time.perf_counter()
            request = urllib.request.Request(base.rstrip("/") + self.path, data=body or None,
                                             method=self.command,
                                             headers={"Content-Type": self.headers.get("Content-Type") or
                                                      "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    status, payload = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, payload = err.code, err.read()
            except (urllib.error.URLError, OSError) as err:
                status, payload = 502, json.dumps({"error": f"backend {name} unreachable: {err}"}).encode()
            seconds = time.perf_counter() - started
            stats.record(name, status, seconds)
            log.write(name, status, seconds, body, payload)
            self._send(status, payload, headers={"X-Mlops-Backend": name})

    return Handler


def serve(port: int, routes_path: str | None, inference_log: str | None, host: str = "127.0.0.1",
          timeout_s: float = 30.0) -> ThreadingHTTPServer:
    """Build the router's server (not started)."""
    routes = Routes(routes_path)
    server = ThreadingHTTPServer((host, port), make_handler(routes, Stats(), InferenceLog(inference_log), timeout_s))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--routes", help="routing table file (read at start, written on every change)")
    parser.add_argument("--inference-log", help="append requests/responses as JSONL here")
    parser.add_argument("--timeout", type=float, default=30.0, help="backend timeout, seconds")
    args = parser.parse_args(argv)
    server = serve(args.port, args.routes, args.inference_log, args.host, args.timeout)
    print(f"router listening on http://{args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
