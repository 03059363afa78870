"""Item 2: the server SIGKILLed and restarted mid-run; SQLite under 8 parallel workers.

1. PostgreSQL backend: a server process is SIGKILLed three times while four
   fake workers run a study, and restarted on the same port. The workers ride
   through with their retry/backoff policy (a complete is retried until
   delivered); the invariants hold at the end.
2. SQLite backend: one server process, eight workers with short steps (so the
   write rate is high): zero "database is locked" anywhere, zero 5xx.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    assert_invariants,
    check_invariants,
    finished_count,
    fleet_run,
    server_errors,
    wait_finished,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

RESTARTS = 3


def _crash_loop(server, db_url: str, study: str, trials: int) -> tuple[object, int, str]:  # type: ignore[no-untyped-def]
    """SIGKILL and restart the server ``RESTARTS`` times, each once some progress was made."""
    restarts, logs = 0, server.log()
    for _ in range(RESTARTS):
        before = finished_count(db_url, study)
        wait_finished(db_url, study, min(trials, before + 6), timeout=30)
        server.kill()
        logs += server.log()
        time.sleep(1.0)  # down long enough for workers to hit refused connections
        server = server.start()
        restarts += 1
    return server, restarts, logs


@pytest.mark.postgres
def test_server_sigkilled_three_times_on_postgres(pg_url: str, tmp_path: Path, figures) -> None:
    trials = 40
    with fleet_run(tmp_path, pg_url, "srvcrash", trials, 4, max_concurrent=4) as (server, fleet):
        server, restarts, server_logs = _crash_loop(server, pg_url, "srvcrash", trials)
        done = wait_finished(pg_url, "srvcrash", trials, timeout=120)
        logs = fleet.logs()
        f = check_invariants(pg_url, "srvcrash", trials, logs)
        print(f"\nserver crashes: restarts={restarts}; {f.line()}")
        figures["server SIGKILL (PG)"] = f"restarts survived={restarts} {f.line()}"
        assert done == trials, f.line()
        assert restarts == RESTARTS
        assert_invariants(f, trials)
        assert server_errors(logs) == 0, "a worker saw a 5xx"
        assert "COMPLETED" in logs


def test_sqlite_eight_workers_never_see_database_is_locked(tmp_path: Path, figures) -> None:
    trials = 64
    db_url = f"sqlite:///{tmp_path / 'faults.db'}"
    with fleet_run(tmp_path, db_url, "lite", trials, 8, step_sleep=0.02) as (server, fleet):
        done = wait_finished(db_url, "lite", trials, timeout=150)
        logs = fleet.logs() + server.log()
        locked = logs.lower().count("database is locked")
        f = check_invariants(db_url, "lite", trials, fleet.logs())
        print(f"\nsqlite 8 workers: locked={locked} 5xx={server_errors(logs)}; {f.line()}")
        figures["SQLite 8 workers"] = (
            f"database-is-locked={locked} 5xx={server_errors(logs)} {f.line()}"
        )
        assert done == trials, f.line()
        assert locked == 0, "a 'database is locked' error was seen"
        assert server_errors(logs) == 0 and " 500 " not in server.log()
        assert_invariants(f, trials)
