"""End-to-end fixtures: the real server and real worker processes over real HTTP.

``stack`` starts ``python -m service.cli server`` on a free port with a SQLite
file in the test's temp folder (auth on, bootstrap tokens written to a 0600
file), and ``python -m workers`` processes against it. Everything started is
killed at teardown; when a test fails, the tail of every process log is printed.

MNIST comes from ``HPO_DATA_DIR``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"


def mnist_dir() -> Path:
    return Path(os.environ.get("HPO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log_path = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)


class Server(Proc):
    """``python -m service.cli server`` on a fixed port and SQLite file (restartable)."""

    def __init__(self, workdir: Path, port: int, settings: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token_file = workdir / "tokens.json"
        defaults = {
            "HPO_DATABASE_URL": f"sqlite:///{workdir / 'e2e.db'}",
            "HPO_AUTH": "true",
            "HPO_TOKEN_FILE": str(self.token_file),
            "HPO_LEASE_TTL_S": "3",
            "HPO_HEARTBEAT_INTERVAL_S": "1",
            "HPO_REAPER_INTERVAL_S": "1",
        }
        env = _clean_env(**{**defaults, **settings})
        argv = [sys.executable, "-m", "service.cli", "server", "--host", "127.0.0.1"]
        super().__init__(argv + ["--port", str(port)], env, workdir / "server.log")

    def start(self) -> Server:
        super().start()
        wait_for(self._ready, 90, f"the server on port {self.port}")
        return self

    def _ready(self) -> bool:
        if not self.alive:
            pytest.fail(
                f"server exited with {self.proc and self.proc.poll()}:\n{self.log()[-3000:]}"
            )
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM and wait (graceful), SIGKILL after 20 s."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tokens(self) -> dict[str, str]:
        return json.loads(self.token_file.read_text())

    def api(self) -> Api:
        return Api(self.url, self.tokens()["admin"])


class Api:
    """The admin's view of the server: create studies, list trials."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url + API, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def create_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/studies", json=spec)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def trials(self, study: str) -> list[dict[str, Any]]:
        resp = self.http.get(f"/studies/{study}/trials", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return body["items"] if isinstance(body, dict) else body

    def trial(self, study: str, number: int) -> dict[str, Any]:
        resp = self.http.get(f"/studies/{study}/trials/{number}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def finished(self, study: str, count: int) -> list[dict[str, Any]] | None:
        """All trials once ``count`` of them are complete/pruned/fail, else None."""
        items = self.trials(study)
        done = [t for t in items if t["state"] in ("complete", "pruned", "fail")]
        return items if len(done) >= count else None

    def running_with_reports(self, study: str, number: int = 0) -> dict[str, Any] | None:
        """The trial once it runs and has reported at least one epoch."""
        items = [t for t in self.trials(study) if t["number"] == number]
        if not items or items[0]["state"] != "running":
            return None
        detail = self.trial(study, number)
        return detail if detail.get("intermediate_values") else None


class Stack:
    """Starts servers and workers for one test; cleans them all up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.data_dir = mnist_dir()

    def server(self, port: int | None = None, **settings: str) -> Server:
        server = Server(self.workdir, port or free_port(), settings)
        self.procs.append(server)
        return server.start()

    def worker(self, url: str, token: str, *args: str) -> Proc:
        n = sum(1 for p in self.procs if not isinstance(p, Server))
        argv = [sys.executable, "-m", "workers", "--server", url, "--device", "cpu"]
        argv += ["--data-dir", str(self.data_dir), "--log-level", "DEBUG", "--idle-backoff", "1"]
        env = _clean_env(HPO_TOKEN=token)  # the token via env, as an operator would
        proc = Proc(argv + list(args), env, self.workdir / f"worker-{n}.log")
        self.procs.append(proc)
        return proc.start()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        parts = []
        for proc in self.procs:
            parts.append(f"----- {proc.log_path.name} (tail)\n{proc.log()[-4000:]}")
        return "\n".join(parts)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if not (mnist_dir() / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found in {mnist_dir()} (set HPO_DATA_DIR)")
    s = Stack(tmp_path)
    yield s
    s.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(s.logs())
