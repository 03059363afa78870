"""Pieces the benchmark scripts share: a free port and the wait for a started server
to answer, the service settings they run the app with and
how a finished report is shown and kept, and the bulk inserts that seed a study's
history straight into Optuna's tables."""

from __future__ import annotations

import multiprocessing as mp
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from service.core.config import Settings


def free_port() -> int:
    """A port free on the loopback now (a child process binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen | mp.Process, path: str | None, limit: float
) -> None:
    """Wait up to ``limit`` s until ``proc`` answers on ``port``: a 200 on ``path``, or
    (``path`` None) a TCP connection; RuntimeError when it exits first or never answers."""
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        alive = proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()
        if not alive:
            raise RuntimeError(f"process on port {port} exited")
        try:
            if path is None:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            elif httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port} within {limit} s")


def service_settings(workdir: Path) -> Settings:
    """The app's settings for a benchmark: a SQLite file and tokens in ``workdir``, with
    leases and the reaper slow enough to stay out of the measurement."""
    from service.core.config import Settings

    return Settings(
        database_url=f"sqlite:///{workdir / 'hpo.db'}",
        auth=True,
        token_file=workdir / "tokens.json",
        lease_ttl_s=600.0,
        reaper_interval_s=3600.0,
    )


def publish(text: str, out: str | Path | None) -> None:
    """Print the report; when ``out`` is given, also write it there (folders made)."""
    print(text, end="" if text.endswith("\n") else "\n")
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def insert_in_chunks(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Bulk-insert ``rows`` into ``table``, 5000 rows a statement."""
    from sqlalchemy import insert

    for chunk in range(0, len(rows), 5000):
        conn.execute(insert(table), rows[chunk : chunk + 5000])


def insert_complete_trials(conn: Connection, study_id: int, first: int, n: int) -> list[int]:
    """Insert ``n`` COMPLETE rows numbered from ``first`` into Optuna's trial table of
    study ``study_id`` (no params, no values); their trial ids, in number order."""
    import datetime

    from optuna.storages._rdb import models
    from sqlalchemy import select

    now = datetime.datetime.now()
    rows = [
        {
            "number": first + i,
            "study_id": study_id,
            "state": "COMPLETE",
            "datetime_start": now,
            "datetime_complete": now,
        }
        for i in range(n)
    ]
    insert_in_chunks(conn, models.TrialModel.__table__, rows)
    trial = models.TrialModel
    query = select(trial.trial_id).where(trial.study_id == study_id, trial.number >= first)
    return list(conn.execute(query.order_by(trial.number)).scalars().all())
