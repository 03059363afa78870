"""Child processes for tests: output in a log file, bounded waits, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``HPO_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Process:
    """A child process (own session, cwd the repository unless ``cwd``) writing to a log file.

    ``start`` may be called again after the process ended: the log is appended to.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.argv, self.env, self.log_path = argv, env, log
        self.cwd = cwd or REPO_ROOT
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start the command; stdout and stderr go to the log file."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL (a crash, as far as the process can tell) and reap it."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait (graceful shutdown), SIGKILL after ``timeout`` seconds."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
