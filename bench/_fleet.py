"""A server and worker processes for the fleet benchmarks (compression, packs_fleet).

``Fleet(workdir)`` starts ``hpo server`` on SQLite in ``workdir`` and waits for
it; ``worker(*args, threads=N)`` starts a worker process with ``N`` torch
threads; leaving the ``with`` block stops them all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """The server and the workers of one benchmark run."""

    def __init__(self, workdir: Path, data_dir: str) -> None:
        self.workdir, self.data_dir = workdir, data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.tokens: dict[str, str] = {}

    def __enter__(self) -> Fleet:
        port = _free_port()
        env = dict(
            self.env,
            HPO_DATABASE_URL=f"sqlite:///{self.workdir / 'hpo.db'}",
            HPO_TOKEN_FILE=str(self.workdir / "tokens.json"),
        )
        self._start(
            [sys.executable, "-m", "service.cli", "server", "--port", str(port)], env, "server.log"
        )
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(900):  # migrations, then uvicorn: ready once /healthz answers
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.tokens = json.loads((self.workdir / "tokens.json").read_text())
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)

    def worker(self, *args: str, threads: int = 1) -> None:
        """A worker process on the CPU with ``threads`` torch threads."""
        argv = [
            sys.executable,
            "-m",
            "workers",
            "--server",
            self.url,
            "--device",
            "cpu",
            "--data-dir",
            self.data_dir,
            *args,
        ]
        env = dict(self.env, HPO_TOKEN=self.tokens["worker"], OMP_NUM_THREADS=str(threads))
        self._start(argv, env, f"worker-{len(self.procs)}.log")

    def _start(self, argv: list[str], env: dict[str, str], log: str) -> None:
        out = open(self.workdir / log, "w")  # noqa: SIM115 - lives as long as the process
        self.procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=out))
