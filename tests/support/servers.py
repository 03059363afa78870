"""The real server for tests, started one of two ways.

* :func:`live_app` / :func:`serve_app`: the app under uvicorn in a thread of the
  test process, on a socket bound to port 0 and handed to uvicorn (no port race).
  The test keeps direct access to the app's context (database, Optuna store).
  For API and CLI tests.
* :class:`ServerProcess`: ``python -m service.cli server`` as a child process,
  exactly as an operator runs it (migrations, bootstrap tokens written to a 0600
  file, graceful SIGTERM); it can be killed and started again on the same port.
  For end-to-end and fault tests.

Both wait until the server answers, capture its log in a file and shut down cleanly.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import LOOPBACK, bound_socket, free_port
from tests.support.processes import Process, clean_env

API = "/api/v1"
START_TIMEOUT_S = 90.0


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- in-process


@dataclass
class LiveApp:
    """A served app: its base URL, the app and its context, and minted tokens."""

    url: str
    app: Any
    ctx: Any
    tokens: Any  # tests.conftest.Tokens

    def client(self, role: str = "admin") -> httpx.Client:
        """An httpx client on ``/api/v1`` sending the token of ``role``."""
        token = getattr(self.tokens, role)
        return httpx.Client(base_url=self.url + API, headers=_bearer(token), timeout=10)


@contextmanager
def _log_to(path: Path | None) -> Iterator[None]:
    """While inside: records reaching the root logger are also written to ``path``."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


@contextmanager
def serve_app(
    app: Any, lifespan: str = "auto", log_file: Path | None = None, port: int = 0
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yields its base URL.

    The listening socket is bound here (to a free port unless ``port`` is given) and
    handed to uvicorn, so the port cannot be taken in between. Waits until uvicorn
    has started; on exit asks it to stop and joins the thread.
    """
    import uvicorn

    sock = bound_socket(port=port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    with _log_to(log_file):
        thread.start()
        try:
            _wait_started(server, thread)
            yield f"http://{LOOPBACK}:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def _wait_started(server: Any, thread: threading.Thread, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)


@contextmanager
def live_app(
    workdir: Path, database_url: str | None = None, lifespan: str = "auto", **settings: Any
) -> Iterator[LiveApp]:
    """The real app (auth on, SQLite in ``workdir`` unless ``database_url``) with
    admin/worker/viewer tokens minted, served by :func:`serve_app`; its log goes to
    ``workdir/server.log``. ``settings`` override ``tests.conftest.make_settings``."""
    from service.app import create_app
    from tests.conftest import make_settings, mint_tokens

    url = database_url or f"sqlite:///{workdir / 'hpo.db'}"
    app = create_app(make_settings(url, workdir, **settings))
    try:
        tokens = mint_tokens(app.state.ctx)
        with serve_app(app, lifespan, workdir / "server.log") as base:
            yield LiveApp(base, app, app.state.ctx, tokens)
    finally:
        app.state.ctx.close()


# --------------------------------------------------------------------------- child process


class ServerProcess(Process):
    """``python -m service.cli server`` on 127.0.0.1, configured by ``HPO_*`` variables.

    Defaults: SQLite in ``workdir``, auth on, bootstrap tokens in ``workdir/tokens.json``;
    ``settings`` (e.g. ``HPO_LEASE_TTL_S``) override them, and nothing else of this
    process's ``HPO_*`` environment leaks in. ``log_level`` ``info`` logs every request.
    Without ``port`` a free one is picked
    (and another one if that was taken before the server bound it). ``start`` again
    after ``stop``/``kill`` restarts it on the same port, database and token file.
    """

    def __init__(
        self,
        workdir: Path,
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
        log_name: str = "server.log",
        log_level: str = "info",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.settings = workdir, dict(settings or {})
        self.token_file = Path(self.settings.get("HPO_TOKEN_FILE", workdir / "tokens.json"))
        self.log_level, self._port_fixed = log_level, port is not None
        self.port = port or free_port()
        env = clean_env(
            **{
                "HPO_DATABASE_URL": f"sqlite:///{workdir / 'server.db'}",
                "HPO_AUTH": "true",
                "HPO_TOKEN_FILE": str(self.token_file),
                **self.settings,
            }
        )
        super().__init__(self._argv(), env, workdir / log_name)

    def _argv(self) -> list[str]:
        cmd = [sys.executable, "-m", "service.cli", "server", "--host", LOOPBACK]
        return cmd + ["--port", str(self.port), "--log-level", self.log_level]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        """Start and wait until ``/healthz`` answers (migrations and tokens are done then)."""
        return self.launch().ready(timeout)

    def launch(self) -> ServerProcess:
        """Start the process without waiting (launch several, then ``ready`` each)."""
        super().start()
        return self

    def ready(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        """Wait until the launched server answers; fail with its log if it exited."""
        for _attempt in range(3):
            if self._wait_ready(timeout):
                self._port_fixed = True  # restarts come back on the same port
                return self
            if self._port_fixed or "address already in use" not in self.log().lower():
                break
            self.port = free_port()  # lost the race for the port: try another one
            self.argv = self._argv()
            super().start()
        code = self.proc and self.proc.poll()
        pytest.fail(f"server exited with {code}:\n{self.log()[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once ``/healthz`` answers 200, False if the process exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass  # not listening yet: poll again
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"timed out after {timeout:.0f}s waiting for the server on port {self.port}")

    def tokens(self) -> dict[str, str]:
        """The bootstrap tokens the server wrote on its first start (admin, worker)."""
        return json.loads(self.token_file.read_text())

    def client(self, role: str = "admin") -> httpx.Client:
        """An httpx client on ``/api/v1`` sending the bootstrap token of ``role``."""
        headers = _bearer(self.tokens()[role])
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=10)
