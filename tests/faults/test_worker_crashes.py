"""Item 1: workers SIGKILLed mid-trial (at least 20 kills) and replaced; nothing lost.

Six fake protocol workers (real processes, real HTTP) run a study of 60 trials
against one server on PostgreSQL; a chaos thread SIGKILLs a worker that holds
a lease every ~0.35 s and starts a replacement. The killed leases expire
(TTL 2 s) and their trials are re-run elsewhere. At the end: exactly 60
finished trials in Optuna, each with a value, no trial completed twice, none
left RUNNING, no active lease.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    Chaos,
    assert_invariants,
    check_invariants,
    fleet_run,
    server_errors,
    wait_finished,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.timeout(240)]

TRIALS = 60
WORKERS = 6
MIN_KILLS = 20


def test_sigkilled_workers_lose_no_trial(pg_url: str, tmp_path: Path, figures) -> None:
    run = fleet_run(tmp_path, pg_url, "crashy", TRIALS, WORKERS, max_concurrent=WORKERS)
    with run as (server, fleet):
        chaos = Chaos(fleet, every=0.35, max_kills=MIN_KILLS + 4, max_seconds=120, seed=11)
        started = time.monotonic()
        chaos.start()
        done = wait_finished(pg_url, "crashy", TRIALS, timeout=180)
        chaos.stop.set()
        chaos.join(timeout=10)
        elapsed = time.monotonic() - started
        logs = fleet.logs()
        f = check_invariants(pg_url, "crashy", TRIALS, logs)
        print(f"\nworker crashes: kills={fleet.kills} in {elapsed:.0f}s; {f.line()}")
        figures["worker crashes (PG)"] = f"kills survived={fleet.kills} {f.line()}"
        assert done == TRIALS, f"only {done} of {TRIALS} finished: {f.line()}"
        assert fleet.kills >= MIN_KILLS, f"only {fleet.kills} kills"
        assert f.reruns >= 1, "no killed trial was re-run: the kills missed every lease"
        assert_invariants(f, TRIALS)
        assert f.complete == TRIALS, f.line()
        assert server_errors(logs) == 0, "a worker saw a 5xx"
        assert "Traceback" not in server.log(), server.log()[-3000:]
