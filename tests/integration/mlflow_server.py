"""A real ``mlflow server`` process (basic auth on) and a tiny fault-injecting HTTP forwarder in front of it."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = ("admin", "admin-password-for-tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    """A running ``mlflow server --app-name basic-auth`` on SQLite."""

    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_mlflow_server(root: Path, timeout: float = 90) -> MlflowServer:
    """Start the server with basic auth (admin user from the auth config) and wait for /health."""
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Checking a password is a deliberate PBKDF2 cost on every request; the tests make hundreds.
        "auth_cache_ttl_seconds = 600\n")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        env.pop(key, None)
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow_cli), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return MlflowServer(url, process, log)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"mlflow server did not become healthy:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@dataclass
class FaultProxy:
    """Forwards HTTP to ``upstream``; scripted faults per path substring; counts requests per path.

    ``faults[path_part] = [503, 503]`` answers the next two matching requests with 503 (``"sleep:2"`` delays
    the answer by 2s instead), then forwards normally.
    """

    upstream: str
    faults: dict[str, list[object]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    url: str = ""
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                path = self.path.split("?")[0]
                proxy.hits[path] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                for part, script in proxy.faults.items():
                    if part in path and script:
                        fault = script.pop(0)
                        if isinstance(fault, int):
                            self.send_response(fault)
                            self.send_header("Content-Type", "text/plain")
                            self.send_header("Content-Length", "11")
                            self.end_headers()
                            self.wfile.write(b"fault-reply")
                            return
                        time.sleep(float(str(fault).split(":")[1]))
                request = urllib.request.Request(proxy.upstream + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items()
                                                          if k.lower() not in ("host", "content-length")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, payload = response.status, response.headers, response.read()
                except urllib.error.HTTPError as err:
                    status, headers, payload = err.code, err.headers, err.read()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
