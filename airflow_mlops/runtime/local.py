"""Local runtime: the step as a subprocess with the same argv and env it would get in a pod."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from airflow_mlops.core.podspec import StepContext, lineage_env
from airflow_mlops.core.step import StepSpec


@dataclass
class ProcessOutcome:
    """How a local step process ended."""

    exit_code: int
    timed_out: bool
    seconds: float
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class LocalProcess:
    """Runs one step as a subprocess, streaming its output line by line to ``log``.

    :param step: the step.
    :param ctx: identity and orchestrator env (secret refs are resolved from the worker's own env).
    :param log: called with each output line.
    :param python: interpreter for module steps; default ``step.python`` or the worker's interpreter.
    :param cwd: working directory.
    :param kill_grace_seconds: time between SIGTERM and SIGKILL on timeout or kill.
    """

    def __init__(self, step: StepSpec, ctx: StepContext, log: Callable[[str], None], python: str | None = None,
                 cwd: str | None = None, kill_grace_seconds: float = 10.0) -> None:
        self.step, self.ctx, self.log = step, ctx, log
        self.python = python or step.python or sys.executable
        self.cwd = cwd
        self.kill_grace_seconds = kill_grace_seconds
        self._proc: subprocess.Popen[str] | None = None

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Worker env + lineage + orchestrator env + step env; secret refs read from the worker env."""
        base = dict(os.environ if base is None else base)
        env = {**base, **lineage_env(self.ctx), **self.ctx.env, **self.step.env, "PYTHONUNBUFFERED": "1"}
        for ref in (*self.ctx.secret_env, *self.step.secret_env):
            if ref.env not in env:
                self.log(f"note: secret env {ref.env} (Secret {ref.secret_name}/{ref.key}) is not set on this "
                         "worker; the local runtime passes secrets from the worker's environment")
        return env

    def run(self) -> ProcessOutcome:
        """Start, stream output, enforce the timeout; return the outcome (never raises on a non-zero exit)."""
        argv = self.step.argv(self.python)
        self.log(f"$ {' '.join(argv)}")
        began = time.monotonic()
        tail: deque[str] = deque(maxlen=40)
        # A new session makes the step a process-group leader, so a timeout kills its children too.
        self._proc = subprocess.Popen(argv, env=self.env(), cwd=self.cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        timed_out = threading.Event()
        timer = threading.Timer(self.step.timeout_seconds, self._timeout, args=(timed_out,))
        timer.daemon = True
        timer.start()
        try:
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.log(line)
            code = self._proc.wait()
        finally:
            timer.cancel()
        return ProcessOutcome(code, timed_out.is_set(), time.monotonic() - began, list(tail))

    def _timeout(self, flag: threading.Event) -> None:
        flag.set()
        self.log(f"step exceeded its timeout of {self.step.timeout_seconds}s: stopping it")
        self.kill()

    def kill(self) -> None:
        """SIGTERM the step's process group, then SIGKILL after the grace period."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=self.kill_grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
