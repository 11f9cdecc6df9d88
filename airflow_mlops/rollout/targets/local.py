"""The local (embedded default) target: MLflow scoring-server processes behind the weighted router process.

Layout under ``<root>`` (default ``$MLOPS_HOME/rollout/<name>``): ``routes.json`` (the router's table, which it
rewrites on every change), ``state.json`` (the rollout state, next to the router), ``router.json`` and
``servers/<version>.json`` (pid and port of each process), ``inference.jsonl`` and the processes' logs.
The processes run in their own sessions: they outlive the task that started them, as a load balancer and
model servers outlive a deployment job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from airflow_mlops.core.rollout import RolloutState
from airflow_mlops.rollout.targets.base import RolloutTarget


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap our own exited child (a zombie still answers kill(pid, 0)).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalTarget(RolloutTarget):
    """Rollout target on this machine: one ``mlflow models serve`` process per version, one router in front.

    :param name: the endpoint's name (a directory under ``root``).
    :param model: registered model name; versions are served as ``models:/<model>/<version>``.
    :param tracking_uri: MLflow tracking/registry URI the scoring servers load models from.
    :param root: state directory; default ``$MLOPS_HOME/rollout/<name>``.
    :param router_port: the router's port (0: a free one, chosen once and kept in ``router.json``).
    :param start_timeout_s: how long a scoring server may take to answer ``/ping``.
    """

    kind = "local"

    def __init__(self, name: str, model: str, tracking_uri: str, root: str | None = None, router_port: int = 0,
                 start_timeout_s: float = 180.0, env: dict[str, str] | None = None) -> None:
        from airflow_mlops.core.config import mlops_home

        self.name = name
        self.model = model
        self.tracking_uri = tracking_uri
        self.root = root or os.path.join(mlops_home(), "rollout", name)
        self.router_port = router_port
        self.start_timeout_s = start_timeout_s
        self.env = dict(env or {})
        os.makedirs(os.path.join(self.root, "servers"), exist_ok=True)

    # -- files -------------------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _read_json(self, *parts: str) -> Any:
        try:
            with open(self._path(*parts)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def _write_json(self, data: Any, *parts: str) -> None:
        path = self._path(*parts)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new file, never half of one

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> int:
        log = open(self._path(log_name), "ab")  # noqa: SIM115 (the child owns it)
        full_env = {**os.environ, **self.env, **(env or {})}
        # The scoring server execs `uvicorn` by name: this interpreter's bin dir must be on PATH.
        full_env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), full_env.get("PATH", "")])
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, start_new_session=True, cwd=self.root)
        finally:
            log.close()
        return proc.pid

    @staticmethod
    def _stop(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    @property
    def router_url(self) -> str:
        """The router's base URL (starts the router if it is not running)."""
        return self.ensure_router()

    def ensure_router(self) -> str:
        """Start the router unless it runs; it reloads ``routes.json``, so a restart keeps the traffic split."""
        record = self._read_json("router.json")
        if record and _alive(record["pid"]) and _healthy(f"http://127.0.0.1:{record['port']}/health"):
            return f"http://127.0.0.1:{record['port']}"
        port = (record or {}).get("port") or self.router_port or free_port()
        pid = self._spawn([sys.executable, "-m", "airflow_mlops.steps.router", "--port", str(port),
                           "--routes", self._path("routes.json"), "--inference-log", self._path("inference.jsonl")],
                          "router.log")
        self._write_json({"pid": pid, "port": port}, "router.json")
        url = f"http://127.0.0.1:{port}"
        self._wait(f"{url}/health", pid, "router", 30)
        return url

    def server_url(self, version: str) -> str | None:
        """The scoring server of ``version``, if it runs."""
        record = self._read_json("servers", f"{version}.json")
        if record and _alive(record["pid"]):
            return f"http://127.0.0.1:{record['port']}"
        return None

    def start_server(self, version: str) -> str:
        """Start ``mlflow models serve`` for ``version`` unless it runs; returns its URL (may still be loading)."""
        url = self.server_url(version)
        if url:
            return url
        port = free_port()
        pid = self._spawn([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{self.model}/{version}",
                           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                          f"server-{version}.log", env={"MLFLOW_TRACKING_URI": self.tracking_uri})
        self._write_json({"pid": pid, "port": port, "version": version}, "servers", f"{version}.json")
        return f"http://127.0.0.1:{port}"

    def stop_server(self, version: str) -> None:
        """Stop the scoring server of ``version``."""
        record = self._read_json("servers", f"{version}.json")
        if record:
            self._stop(record["pid"])
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path("servers", f"{version}.json"))

    def _wait(self, url: str, pid: int, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if not _alive(pid):
                raise RuntimeError(f"{what} exited while starting; see {self.root}/*.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not healthy at {url} after {timeout:g}s; see {self.root}/*.log")
            time.sleep(0.1)

    def wait_ready(self, version: str) -> str:
        """Block until ``version``'s server answers (used outside tasks: bootstrapping, demos)."""
        url = self.start_server(version)
        record = self._read_json("servers", f"{version}.json")
        self._wait(f"{url}/ping", record["pid"], f"scoring server for {self.model} v{version}", self.start_timeout_s)
        return url

    # -- routing -----------------------------------------------------------------------------------

    def _routes(self) -> dict[str, Any]:
        status, body = _http("GET", f"{self.router_url}/admin/routes")
        if status != 200:
            raise RuntimeError(f"router answered {status}: {body}")
        return dict(body)

    def _set_routes(self, weights: dict[str, int]) -> None:
        backends = {}
        for name in weights:
            version = name[1:]
            url = self.server_url(version) or self.start_server(version)
            backends[name] = url
        status, body = _http("POST", f"{self.router_url}/admin/routes", {"backends": backends, "weights": weights})
        if status != 200:
            raise RuntimeError(f"router refused weights {weights}: {status} {body}")

    # -- the contract ------------------------------------------------------------------------------

    def serving_version(self) -> str | None:
        weights = self._routes().get("weights", {})
        full = [name for name, w in weights.items() if w == 100]
        return full[0][1:] if full else None

    def deploy_initial(self, version: str) -> None:
        self.wait_ready(version)
        self._set_routes({self.backend_name(version): 100})

    def deploy_candidate(self, state: RolloutState) -> None:
        self.save_state(state)
        if state.stable and not self.server_url(state.stable):
            self.start_server(state.stable)  # stable died (machine restart): bring it back first
        self.start_server(state.candidate)

    def candidate_ready(self, state: RolloutState) -> bool:
        url = self.server_url(state.candidate)
        return bool(url and _healthy(f"{url}/ping"))

    def observed_weight(self, state: RolloutState) -> int:
        weights = self._routes().get("weights", {})
        return int(weights.get(self.backend_name(state.candidate), 0))

    def apply_weight(self, state: RolloutState) -> None:
        self.save_state(state)
        weights = {self.backend_name(state.candidate): state.weight}
        if state.stable:
            weights[self.backend_name(state.stable)] = 100 - state.weight
        self._set_routes({k: v for k, v in weights.items() if v > 0 or k == self.backend_name(state.candidate)})

    def promote(self, state: RolloutState) -> None:
        self.save_state(state)
        self._set_routes({self.backend_name(state.candidate): 100})
        if state.stable and state.stable != state.candidate:
            self.stop_server(state.stable)

    def rollback(self, state: RolloutState) -> None:
        self.save_state(state)
        if state.stable:
            self._set_routes({self.backend_name(state.stable): 100})
        if state.candidate != state.stable:
            self.stop_server(state.candidate)

    def load_state(self) -> RolloutState | None:
        data = self._read_json("state.json")
        return RolloutState.from_dict(data) if data else None

    def save_state(self, state: RolloutState) -> None:
        self._write_json(state.to_dict(), "state.json")

    def backends(self, state: RolloutState) -> dict[str, Any]:
        found = super().backends(state)
        from dataclasses import replace

        return {role: replace(b, url=self.server_url(b.version)) for role, b in found.items()}

    def cleanup(self) -> None:
        for name in os.listdir(self._path("servers")):
            if name.endswith(".json"):
                self.stop_server(name[:-5])
        record = self._read_json("router.json")
        if record:
            self._stop(record["pid"])
        shutil.rmtree(self.root, ignore_errors=True)

    def analysis_settings(self) -> dict[str, Any]:
        return {"router_url": self.router_url}

    def describe(self) -> dict[str, Any]:
        record = self._read_json("router.json") or {}
        return {"kind": self.kind, "name": self.name, "root": self.root,
                "router": f"http://127.0.0.1:{record['port']}" if record else None}
