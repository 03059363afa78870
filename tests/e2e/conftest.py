"""End-to-end fixtures: the real server and real worker processes over real HTTP.

``stack`` starts ``python -m service.cli server`` (:class:`tests.support.ServerProcess`:
a free port, a SQLite file in the test's temp folder, auth on, bootstrap tokens
in a 0600 file) and ``python -m workers`` processes against it. Everything
started is killed at teardown; when a test fails, the tail of every process log
is printed.

MNIST comes from ``HPO_DATA_DIR``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mnist_root
from tests.support import Process, ServerProcess, clean_env, wait_for

__all__ = ["Api", "Server", "Stack", "need_mnist", "stack_for", "wait_for"]

#: Short leases, frequent heartbeats and reaper passes: failures show within seconds.
E2E_SETTINGS = {
    "HPO_LEASE_TTL_S": "3",
    "HPO_HEARTBEAT_INTERVAL_S": "1",
    "HPO_REAPER_INTERVAL_S": "1",
}


class Api:
    """The admin's view of a server: create studies, list trials."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = server.client("admin")

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


class Server(ServerProcess):
    """A :class:`ServerProcess` with :meth:`api`, the admin's view used by e2e tests."""

    def api(self) -> Api:
        return Api(self)


class Stack:
    """Starts servers and workers for one test; cleans them all up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Process] = []
        self.data_dir = mnist_root()

    def server(self, port: int | None = None, **settings: str) -> Server:
        """A started server with :data:`E2E_SETTINGS` and ``settings`` on top."""
        server = Server(self.workdir, {**E2E_SETTINGS, **settings}, port)
        self.procs.append(server)
        server.start()
        return server

    def worker(
        self,
        url: str,
        token: str,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """A started ``python -m workers`` on the CPU; ``env`` adds variables, ``cwd`` is
        its working directory (default: the repository)."""
        n = sum(1 for p in self.procs if not isinstance(p, ServerProcess))
        argv = [sys.executable, "-m", "workers", "--server", url, "--device", "cpu"]
        argv += ["--data-dir", str(self.data_dir), "--log-level", "DEBUG", "--idle-backoff", "1"]
        extra = {"HPO_TOKEN": token, **(env or {})}  # the token via env, as an operator would
        proc = Process(argv + list(args), clean_env(**extra), self.workdir / f"worker-{n}.log", cwd)
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


def need_mnist() -> None:
    """Skip the test unless the MNIST files are in :func:`tests.conftest.mnist_root`."""
    if not (mnist_root() / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found in {mnist_root()} (set HPO_DATA_DIR)")


def stack_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A :class:`Stack` for one test (a fixture's body: ``yield from``), closed after it;
    when the test failed, the tail of every process's log is printed."""
    s = Stack(tmp_path)
    yield s
    s.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(s.logs())


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    need_mnist()
    yield from stack_for(request, tmp_path)
