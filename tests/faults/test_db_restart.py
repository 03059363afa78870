"""Item 3: PostgreSQL stopped and restarted mid-run (a private instance, never the shared one).

While the database is down every API call answers 503 (never 500) and
``/readyz`` says so; when it is back the server recovers by itself (pre-ping
pool, no server restart) and no completion is lost: the workers' completes
are retried through the 503s and land once the database answers again.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import (
    assert_invariants,
    check_invariants,
    fleet_run,
    server_errors,
    wait_finished,
)
from tests.faults.pg_private import PrivatePostgres, private_pg  # noqa: F401 - fixture
from tests.support import API

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.timeout(240)]

TRIALS = 30
RESTARTS = 2
DOWN_S = 3.0


def _probe(url: str, tokens: dict[str, str], seconds: float) -> Counter[str]:
    """Hit reads, a lease and readiness while the database is down; count status codes."""
    seen: Counter[str] = Counter()
    adm = {"Authorization": f"Bearer {tokens['admin']}"}
    wrk = {"Authorization": f"Bearer {tokens['worker']}"}
    calls = [
        ("GET", "/readyz", None, None),
        ("GET", f"{API}/studies", adm, None),
        ("GET", f"{API}/studies/dbdown", adm, None),
        ("GET", f"{API}/studies/dbdown/trials", adm, None),
        ("POST", f"{API}/trials/lease", wrk, {"worker_id": "nobody"}),
        ("POST", f"{API}/leases/nolease/heartbeat", wrk, None),
    ]
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=15) as http:
        while time.monotonic() < deadline:
            for method, path, headers, body in calls:
                resp = http.request(method, path, headers=headers, json=body)
                seen[f"{method} {path.split('/')[-1]} {resp.status_code}"] += 1
                if resp.status_code == 503 and path != "/readyz":
                    assert "database" in resp.json()["detail"], resp.text
            time.sleep(0.2)
    return seen


def _wait_ready(url: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass  # still down: poll again
        time.sleep(0.2)
    raise AssertionError(f"server not ready {timeout:.0f}s after the database came back")


def test_database_restart_answers_503_and_loses_nothing(
    private_pg: PrivatePostgres,  # noqa: F811
    tmp_path: Path,
    figures,
) -> None:
    db_url = private_pg.url
    codes: Counter[str] = Counter()
    with fleet_run(tmp_path, db_url, "dbdown", TRIALS, 3, max_concurrent=3) as (server, fleet):
        recovered: list[float] = []
        for i in range(RESTARTS):
            wait_finished(db_url, "dbdown", 8 * (i + 1), timeout=60)
            private_pg.stop()
            codes += _probe(server.url, server.tokens(), DOWN_S)
            private_pg.start()
            recovered.append(_wait_ready(server.url, 30))
        done = wait_finished(db_url, "dbdown", TRIALS, timeout=120)
        logs = fleet.logs()
        f = check_invariants(db_url, "dbdown", TRIALS, logs)
        fives = {k: v for k, v in codes.items() if k.endswith(" 500")}
        summary = f"restarts survived={RESTARTS} 500s={sum(fives.values())} {f.line()}"
        print(f"\ndb restart: {summary}\n  while down: {dict(codes)}\n  ready after {recovered}")
        figures["PostgreSQL restart"] = summary
        assert not fives, f"500 while the database was down: {fives}"
        assert all(k.endswith(" 503") for k in codes), dict(codes)
        assert done == TRIALS, f.line()
        assert_invariants(f, TRIALS)
        assert server_errors(logs) == 0, "a worker saw a 5xx that is not retried"
        assert " 500 " not in server.log(), server.log()[-4000:]
