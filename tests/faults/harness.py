"""Shared machinery of the fault suite and of ``bench/soak.py``.

Real processes over real HTTP on 127.0.0.1: ``python -m service.cli server``
(restartable on the same port) and ``tests/faults/fake_worker.py`` processes.
:func:`check_invariants` reads the result back through Optuna itself
(``optuna.load_study`` on the database URL) and through the ``hpo_`` tables.
Every loop here is bounded in count and time.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import Process, ServerProcess, clean_env, study_spec

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")

#: Short leases, frequent heartbeats and reaper passes: faults resolve within seconds.
FAST = {
    "HPO_LEASE_TTL_S": "2",
    "HPO_HEARTBEAT_INTERVAL_S": "0.5",
    "HPO_REAPER_INTERVAL_S": "0.5",
    "HPO_ORPHAN_GRACE_S": "8",
}

#: The space ``fake_worker.py`` understands (the ``fake`` workload: no trainer checks).
FAKE_SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 10.0},
    "k": {"type": "int", "low": 1, "high": 5},
}


def spec(
    name: str, max_trials: int, max_concurrent: int | None = None, max_retries: int = 100
) -> dict[str, Any]:
    """A study of the fake workload (maximize ``fake``, seeded random sampler, no pruner)."""
    budget = {
        "max_trials": max_trials,
        "max_concurrent": max_concurrent,
        "max_retries": max_retries,
    }
    return study_spec(
        name,
        workload="fake",
        objective="fake",
        pruner={"name": "none"},
        budget=budget,
        space=FAKE_SPACE,
    )


def start_server(
    workdir: Path, db_url: str, port: int | None = None, **extra: str
) -> ServerProcess:
    """A started server on ``db_url`` with the :data:`FAST` settings and ``extra`` on top.
    Kill it with ``server.kill()``; ``server.start()`` restarts it on the same port."""
    return ServerProcess(workdir, {"HPO_DATABASE_URL": db_url, **FAST, **extra}, port).start()


class Fleet:
    """Fake worker processes; SIGKILLs and replacements are counted."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        token: str,
        study: str,
        step_sleep: float = 0.15,
        max_seconds: float = 240,
    ) -> None:
        self.workdir, self.url, self.token, self.study = workdir, url, token, study
        self.step_sleep, self.max_seconds = step_sleep, max_seconds
        self.procs: list[Process] = []
        self.live: list[Process] = []
        self.kills = 0
        self.lock = threading.Lock()

    def spawn(self) -> Process:
        n = len(self.procs)
        argv = [
            sys.executable,
            str(FAKE_WORKER),
            "--server",
            self.url,
            "--study",
            self.study,
            "--step-sleep",
            str(self.step_sleep),
            "--max-seconds",
            str(self.max_seconds),
        ]
        proc = Process(argv, clean_env(HPO_TOKEN=self.token), self.workdir / f"fake-{n}.log")
        proc.start()
        with self.lock:
            self.procs.append(proc)
            self.live.append(proc)
        return proc

    def kill_random(self, rng: random.Random, mid_trial_only: bool = True) -> bool:
        """SIGKILL one live worker (preferably one holding a lease) and start a replacement."""
        with self.lock:
            live = [p for p in self.live if p.alive]
            busy = [p for p in live if _mid_trial(p.log())]
            pool = busy or ([] if mid_trial_only else live)
            if not pool:
                return False
            victim = rng.choice(pool)
            self.live.remove(victim)
        victim.kill()
        self.kills += 1
        self.spawn()
        return True

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.procs)


@contextmanager
def fleet_run(
    workdir: Path,
    db_url: str,
    study: str,
    trials: int,
    workers: int,
    *,
    max_concurrent: int | None = None,
    step_sleep: float = 0.2,
) -> Iterator[tuple[ServerProcess, Fleet]]:
    """A started server on ``db_url`` with the study ``study`` (:func:`spec`) and
    ``workers`` fake workers on it; at the end every worker and the server are killed."""
    server = start_server(workdir, db_url)
    fleet: Fleet | None = None
    try:
        with server.client() as api:
            resp = api.post("/studies", json=spec(study, trials, max_concurrent=max_concurrent))
            assert resp.status_code == 201, resp.text
        fleet = Fleet(workdir, server.url, server.tokens()["worker"], study, step_sleep=step_sleep)
        for _ in range(workers):
            fleet.spawn()
        yield server, fleet
    finally:
        if fleet is not None:
            fleet.close()
        server.kill()


def _mid_trial(log: str) -> bool:
    last = log.rstrip().rsplit("\n", 1)[-1] if log.strip() else ""
    return last.startswith("LEASED")


class Chaos(threading.Thread):
    """Kills a random mid-trial worker every ``every`` seconds (bounded count and time)."""

    def __init__(
        self, fleet: Fleet, every: float, max_kills: int, max_seconds: float, seed: int = 1
    ) -> None:
        super().__init__(daemon=True)
        self.fleet, self.every, self.max_kills, self.max_seconds = (
            fleet,
            every,
            max_kills,
            max_seconds,
        )
        self.rng = random.Random(seed)
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.wait(self.every) and time.monotonic() < deadline:
            if self.fleet.kills >= self.max_kills:
                return
            for _ in range(10):  # wait briefly for some worker to be mid-trial
                if self.fleet.kill_random(self.rng) or self.stop.wait(0.05):
                    break


def finished_count(db_url: str, study: str) -> int:
    from sqlalchemy import create_engine, text

    eng = create_engine(db_url)
    try:
        with eng.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM hpo_trials t JOIN hpo_studies s ON s.study_id=t.study_id "
                    "WHERE s.name=:n AND t.state='finished'"
                ),
                {"n": study},
            ).scalar_one()
    finally:
        eng.dispose()


def wait_finished(db_url: str, study: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        try:
            done = finished_count(db_url, study)
        except Exception:  # noqa: BLE001 - database briefly down in some tests
            done = done
        if done >= count:
            return done
        time.sleep(0.5)
    return done


@dataclass
class Figures:
    trials: int = 0
    finished: int = 0
    complete: int = 0
    failed: int = 0
    reruns: int = 0
    leases: int = 0
    lost: int = 0
    duplicates: int = 0
    running_left: int = 0
    active_leases: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"trials={self.trials} finished={self.finished} complete={self.complete} "
            f"failed={self.failed} re-runs={self.reruns} leases={self.leases} "
            f"lost={self.lost} duplicates={self.duplicates} running_left={self.running_left} "
            f"active_leases={self.active_leases} failed_orphans={self.orphans}"
        )


def _read_rows(db_url: str, study: str) -> tuple[list[Any], list[Any]]:
    """The study's hpo_trials rows and hpo_leases rows."""
    from sqlalchemy import create_engine, text

    eng = create_engine(db_url)
    try:
        with eng.connect() as conn:
            sid = conn.execute(
                text("SELECT study_id FROM hpo_studies WHERE name=:n"), {"n": study}
            ).scalar_one()
            rows = conn.execute(
                text(
                    "SELECT id, optuna_trial_id, number, state, final_state, value, fail_reason, "
                    "attempts FROM hpo_trials WHERE study_id=:s"
                ),
                {"s": sid},
            ).all()
            leases = conn.execute(
                text(
                    "SELECT l.trial_row_id, l.state, l.lease_id FROM hpo_leases l "
                    "JOIN hpo_trials t ON t.id=l.trial_row_id WHERE t.study_id=:s"
                ),
                {"s": sid},
            ).all()
    finally:
        eng.dispose()
    return list(rows), list(leases)


def _check_rows(f: Figures, rows: list[Any], by_id: dict[int, Any]) -> None:
    for row in rows:
        if row.state != "finished":
            f.problems.append(f"hpo_trials row {row.id} left in state {row.state}")
            continue
        ot = by_id.get(row.optuna_trial_id)
        if ot is None:
            f.problems.append(f"hpo_trials row {row.id} has no optuna trial")
            continue
        if ot.state.name == "COMPLETE" and ot.value is None:
            f.problems.append(f"trial #{ot.number} complete without a value")
        if ot.state.name == "FAIL" and not (row.fail_reason or ot.user_attrs.get("fail_reason")):
            f.problems.append(f"trial #{ot.number} failed without a reason")


def _check_orphans(f: Figures, orphans: list[Any]) -> None:
    """Optuna trials without a row: a server died between ask() and recording the lease.
    They are not part of the budget; each must be FAIL with the reaper's reason."""
    f.orphans = len(orphans)
    for ot in orphans:
        if ot.state.name != "FAIL" or not ot.user_attrs.get("fail_reason"):
            f.problems.append(f"orphan optuna trial #{ot.number} is {ot.state.name}, no reason")


def _worker_duplicates(worker_logs: str) -> int:
    """Worker-side view: a trial completed through two different leases."""
    per_trial: dict[str, set[str]] = {}
    for trial, lease in re.findall(r"COMPLETED trial=(\d+) number=\d+ lease=(\S+)", worker_logs):
        per_trial.setdefault(trial, set()).add(lease)
    return sum(len(v) - 1 for v in per_trial.values() if len(v) > 1)


def check_invariants(db_url: str, study: str, expected: int, worker_logs: str = "") -> Figures:
    """Exactly ``expected`` finished trials, each with a value or a failure reason; none
    RUNNING; no active lease; no trial completed through two leases. Optuna trials left
    by a server killed between ask() and the lease (no hpo_trials row) are counted apart
    as ``orphans`` and must be failed with a reason."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f = Figures()
    trials = optuna.load_study(study_name=study, storage=db_url).get_trials(deepcopy=False)
    rows, leases = _read_rows(db_url, study)
    row_ids = {r.optuna_trial_id for r in rows}
    ours = [t for t in trials if t._trial_id in row_ids]
    _check_orphans(f, [t for t in trials if t._trial_id not in row_ids])
    f.trials = len(ours)
    states = Counter(t.state.name for t in ours)
    f.complete, f.failed = states.get("COMPLETE", 0), states.get("FAIL", 0)
    f.running_left = sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING"))
    f.finished = f.complete + f.failed + states.get("PRUNED", 0)
    if len({t.number for t in trials}) != len(trials):
        f.problems.append("duplicate optuna trial numbers")
    f.leases = len(leases)
    f.reruns = max(0, len(leases) - len(rows))
    f.active_leases = sum(1 for r in leases if r.state == "active")
    completed = Counter(r.trial_row_id for r in leases if r.state == "completed")
    f.duplicates = sum(n - 1 for n in completed.values() if n > 1)
    f.duplicates += _worker_duplicates(worker_logs)
    _check_rows(f, rows, {t._trial_id: t for t in trials})
    f.lost = max(0, expected - f.finished) + f.running_left
    if len(rows) != expected or f.trials != expected:
        f.problems.append(
            f"expected {expected} trials, optuna has {f.trials}, hpo_trials has {len(rows)}"
        )
    return f


def assert_invariants(f: Figures, expected: int) -> None:
    assert f.problems == [], f.problems
    assert f.finished == expected, f.line()
    assert f.running_left == 0, f.line()
    assert f.active_leases == 0, f.line()
    assert f.duplicates == 0, f.line()
    assert f.lost == 0, f.line()


def server_errors(text_: str) -> int:
    return len(re.findall(r"SERVER-ERROR", text_))


def json_dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
