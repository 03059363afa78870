"""Soak: the fault suite's chaos scenario for longer, with a chosen size.

    python -m bench.soak --duration 60 --workers 8 [--db sqlite|postgresql]
                         [--kill-every 1.0] [--server-kills 2] [--seed 1] [--keep]

A real server (``python -m service.cli server``, loopback only) and
``--workers`` fake protocol workers (tests/faults/fake_worker.py) run one study
with an unbounded budget; a chaos thread SIGKILLs a worker mid-trial every
``--kill-every`` seconds (and starts a replacement), and the server itself is
SIGKILLed and restarted ``--server-kills`` times. After ``--duration`` seconds
the study is stopped, the fleet drains (leases expire, trials of a stopped study
are failed with a reason) and the invariants are read back through Optuna and
the ``hpo_`` tables: every trial finished (a value, or a failure reason), none
RUNNING, no active lease, nothing completed twice. Exit status 1 if one broke.

PostgreSQL: a fresh database on ``HPO_TEST_POSTGRES_URL`` (default: the local
server), dropped at the end. Everything is bounded: duration at most an hour,
at most 64 workers, every wait has a deadline.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.faults.harness import (
    Chaos,
    Fleet,
    check_invariants,
    server_errors,
    spec,
    start_server,
)
from tests.support import ServerProcess

STUDY = "soak"
DRAIN_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (<= 3600)")
    ap.add_argument("--workers", type=int, default=8, help="fake worker processes (<= 64)")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--kill-every", type=float, default=1.0, help="seconds between worker kills")
    ap.add_argument("--server-kills", type=int, default=2, help="server SIGKILL + restart count")
    ap.add_argument("--step-sleep", type=float, default=0.15, help="fake epoch length (s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, SQLite)")
    args = ap.parse_args(argv)
    if not 1 <= args.duration <= 3600 or not 1 <= args.workers <= 64:
        ap.error("--duration must be 1..3600 and --workers 1..64")
    return args


def database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'soak.db'}"
    from tests.conftest import create_pg_database

    return create_pg_database()


def server_chaos(box: dict[str, ServerProcess], times: int, duration: float, stop: threading.Event):
    """Kill and restart the server ``times`` times, evenly spread over ``duration``."""
    restarts = 0
    for _ in range(times):
        if stop.wait(duration / (times + 1)):
            break
        box["server"].kill()
        box["logs"] = box.get("logs", "") + box["server"].log()  # type: ignore[assignment]
        time.sleep(1.0)
        box["server"] = box["server"].start()
        restarts += 1
    box["restarts"] = restarts  # type: ignore[assignment]


def drain(box: dict[str, ServerProcess], fleet: Fleet) -> None:
    """Stop the study; wait (bounded) until no lease is active and no trial is open."""
    from sqlalchemy import create_engine, text

    with box["server"].client() as api:
        api.post(f"/studies/{STUDY}/stop")
    engine = create_engine(box["server"].settings["HPO_DATABASE_URL"])
    query = text("SELECT count(*) FROM hpo_trials WHERE state <> 'finished'")
    deadline = time.monotonic() + DRAIN_S
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(query).scalar_one() == 0:
                    break
            time.sleep(0.5)
    finally:
        engine.dispose()
    fleet.close()


def run(args: argparse.Namespace, workdir: Path, db_url: str) -> int:
    box: dict[str, ServerProcess] = {"server": start_server(workdir, db_url)}
    with box["server"].client() as api:
        resp = api.post("/studies", json=spec(STUDY, 100_000, max_concurrent=args.workers))
        resp.raise_for_status()
    fleet = Fleet(
        workdir,
        box["server"].url,
        box["server"].tokens()["worker"],
        STUDY,
        step_sleep=args.step_sleep,
        max_seconds=args.duration + DRAIN_S + 60,
    )
    for _ in range(args.workers):
        fleet.spawn()
    max_kills = int(args.duration / args.kill_every) + 1
    chaos = Chaos(fleet, args.kill_every, max_kills, args.duration, seed=args.seed)
    stop = threading.Event()
    killer = threading.Thread(
        target=server_chaos, daemon=True, args=(box, args.server_kills, args.duration, stop)
    )
    started = time.monotonic()
    chaos.start()
    killer.start()
    time.sleep(args.duration)
    chaos.stop.set()
    stop.set()
    chaos.join(timeout=15)
    killer.join(timeout=120)
    try:
        drain(box, fleet)
        return report(args, box, fleet, db_url, time.monotonic() - started)
    finally:
        fleet.close()
        box["server"].kill()


def report(args: argparse.Namespace, box: dict, fleet: Fleet, db_url: str, elapsed: float) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM hpo_trials")).scalar_one()
    engine.dispose()
    logs = fleet.logs()
    f = check_invariants(db_url, STUDY, rows, logs)
    server_log = box.get("logs", "") + box["server"].log()
    fives = server_errors(logs)
    locked = (logs + server_log).lower().count("database is locked")
    print(
        f"soak: db={args.db} workers={args.workers} duration={args.duration:.0f}s "
        f"(elapsed {elapsed:.0f}s)"
    )
    print(f"  worker kills survived:   {fleet.kills}")
    print(f"  server restarts survived: {box.get('restarts', 0)}")
    print(f"  {f.line()}")
    print(f"  5xx seen by workers: {fives}   'database is locked': {locked}")
    ok = not f.problems and f.lost == 0 and f.duplicates == 0 and f.running_left == 0
    ok = ok and f.active_leases == 0 and fives == 0 and locked == 0
    for problem in f.problems[:10]:
        print(f"  PROBLEM: {problem}")
    print("  result: " + ("OK" if ok else "INVARIANT BROKEN"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-soak-"))
    db_url = database(args.db, workdir)
    try:
        return run(args, workdir, db_url)
    finally:
        if args.db == "postgresql":
            from tests.conftest import drop_pg_database

            drop_pg_database(db_url)
        if args.keep:
            print(f"  logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
