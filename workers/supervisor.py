"""One worker process per GPU: start, watch, restart on crash, forward SIGTERM.

``hpo worker --device cuda --gpus all`` (or ``--gpus 0,1``) runs a
:class:`Supervisor` that starts ``python -m workers`` once per GPU with
``CUDA_VISIBLE_DEVICES`` pinned to that GPU (so each child trains on its
``cuda:0``). A child that exits with an error is restarted with exponential
backoff, at most ``max_restarts`` times in a row; the others keep running. A
child that exits 0 (``--max-trials`` reached) or 2 (configuration problem: a
restart would fail the same way) is not restarted. The first SIGTERM/SIGINT is
forwarded to every child (each abandons its trial and exits 0); a second one
kills them and exits at once. The token goes to children through the
environment (``HPO_TOKEN``), never on their command line.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from workers.options import OPTIONS_ENV, ExitCode, WorkerOptions

log = logging.getLogger("workers.supervisor")


def child_command(options: WorkerOptions, gpu: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the worker process pinned to ``gpu``.

    The options travel as JSON in ``HPO_WORKER_OPTIONS`` (so no option is listed
    here), the token separately in ``HPO_TOKEN``, never on a command line.
    """
    name = options.name or socket.gethostname()
    child = options.model_copy(
        update={"device": "cuda:0", "gpus": None, "name": f"{name}:gpu{gpu}", "token": None}
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
    env[OPTIONS_ENV] = child.model_dump_json()
    env.pop("HPO_TOKEN", None)
    if options.token:
        env["HPO_TOKEN"] = options.token
    return [sys.executable, "-m", "workers"], env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One GPU's worker process and its restart bookkeeping."""

    gpu: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    gave_up: bool = False
    exit_code: int | None = None


class Supervisor:
    """Runs and watches one worker process per GPU (see the module docstring)."""

    def __init__(
        self,
        options: WorkerOptions,
        gpus: list[str],
        *,
        command: Callable[[WorkerOptions, str], tuple[list[str], dict[str, str]]] = child_command,
        max_restarts: int = 5,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        stable_after_s: float = 300.0,
        poll_s: float = 0.5,
        install_signals: bool = True,
    ) -> None:
        self.options = options
        self.children = [Child(gpu) for gpu in gpus]
        self._command = command
        self.max_restarts = max_restarts
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.stable_after_s = stable_after_s
        self.poll_s = poll_s
        self._install = install_signals
        self.stopping = False
        self._forwarded = False
        self._signals = 0

    def run(self) -> int:
        """Start every child, supervise until all are done; the exit code."""
        if self._install:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        log.info("starting one worker process per GPU: %s", ", ".join(self._gpus()))
        for child in self.children:
            self._start(child)
        while not all(child.done for child in self.children):
            if self.stopping and not self._forwarded:
                self._forward(signal.SIGTERM)
            for child in self.children:
                self._check(child)
            time.sleep(self.poll_s)
        return self._exit_code()

    def request_shutdown(self) -> None:
        """Stop: children get SIGTERM (abandon their trials) and are not restarted."""
        if not self.stopping:
            log.info("stopping %d worker process(es)", len(self.children))
        self.stopping = True

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: killing worker processes", signal.Signals(signum).name)
            self._forward(signal.SIGKILL)
            os._exit(128 + signum)
        self.request_shutdown()

    def _gpus(self) -> list[str]:
        return [child.gpu for child in self.children]

    def _start(self, child: Child) -> None:
        argv, env = self._command(self.options, child.gpu)
        child.proc = subprocess.Popen(  # our own interpreter and module
            argv, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        child.started = time.monotonic()
        log.info("GPU %s: worker process %d started", child.gpu, child.proc.pid)

    def _forward(self, sig: signal.Signals) -> None:
        self._forwarded = True
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(sig)

    def _check(self, child: Child) -> None:
        if child.done:
            return
        if child.proc is None:  # waiting for a restart
            if self.stopping:
                child.done = True
            elif time.monotonic() >= child.next_start:
                self._start(child)
            return
        code = child.proc.poll()
        if code is None:
            return
        child.proc, child.exit_code = None, code
        if self.stopping or code in (ExitCode.OK, ExitCode.CONFIG):
            log.info("GPU %s: worker process exited with %d", child.gpu, code)
            child.done = True
            return
        self._schedule_restart(child, code)

    def _schedule_restart(self, child: Child, code: int) -> None:
        if time.monotonic() - child.started > self.stable_after_s:
            child.restarts = 0  # it ran fine for a while: this is a fresh problem
        child.restarts += 1
        if child.restarts > self.max_restarts:
            log.error(
                "GPU %s: worker process exited with %d; gave up after %d restarts",
                child.gpu,
                code,
                self.max_restarts,
            )
            child.done = child.gave_up = True
            return
        delay = min(self.backoff_cap_s, self.backoff_s * 2 ** (child.restarts - 1))
        log.warning(
            "GPU %s: worker process exited with %d; restart %d/%d in %.1fs",
            child.gpu,
            code,
            child.restarts,
            self.max_restarts,
            delay,
        )
        child.next_start = time.monotonic() + delay

    def _exit_code(self) -> int:
        if self.stopping:
            return ExitCode.OK
        if any(child.gave_up for child in self.children):
            return ExitCode.ERROR
        if any(child.exit_code == ExitCode.CONFIG for child in self.children):
            return ExitCode.CONFIG
        return ExitCode.OK
