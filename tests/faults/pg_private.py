"""A private PostgreSQL instance for tests that stop and restart the database.

The shared server (``HPO_TEST_POSTGRES_URL``) is never restarted: this starts
its own cluster with ``initdb`` + ``pg_ctl`` in a fresh temporary folder, on a
free loopback port, with its socket inside that folder. As root the cluster
runs as the ``postgres`` OS user (PostgreSQL refuses to run as root). Without
the binaries the test is skipped, or fails under ``HPO_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _unavailable(reason: str) -> None:
    if os.environ.get("HPO_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"private PostgreSQL required (HPO_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"private PostgreSQL unavailable: {reason}")


class PrivatePostgres:
    """initdb/pg_ctl wrapper; every command is bounded in time."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self.logfile = root / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def init(self) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as in a real restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30
                )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    bindir = _bindir()
    if bindir is None:
        _unavailable("no initdb/pg_ctl found (install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' OS user")
    root = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
    pg = PrivatePostgres(bindir, root, free_port())  # type: ignore[arg-type]
    try:
        pg.init()
        pg.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pg.close()
        _unavailable(str(exc))
    yield pg
    pg.close()
