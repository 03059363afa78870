"""Load generators for bench/service.py: one function per kind of simulated worker.

Each runs in its own process, loops until ``t_end`` (time.monotonic, which is
system-wide on Linux, so the parent's clock is shared), and puts one result
dict on ``out``: completed lifecycles inside the measurement window and the
latencies (seconds) of each operation started inside it.

* ``service_worker``: real HTTP (http.client, keep-alive) against the server:
  register, then lease -> report x3 -> complete, with an instant objective.
* ``direct_worker``: Optuna with RDBStorage on the same database: ask,
  suggest, report x3, tell.
* ``grpc_worker``: the same through ``optuna.storages.GrpcStorageProxy``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import warnings
from typing import Any

REPORTS = 3


def objective_s() -> float:
    """Seconds each trial "trains" between lease and first report (bench/service.py
    ``--objective-s`` sets ``HPO_BENCH_OBJECTIVE_S``; 0: the instant objective)."""
    return float(os.environ.get("HPO_BENCH_OBJECTIVE_S", "0") or 0)


warnings.filterwarnings("ignore", message=".*experimental.*")
MAX_ERRORS = 200


def _result(kind: str, ops: dict[str, list[float]], done: int, errors: list[str]) -> dict:
    return {"kind": kind, "ops": ops, "done": done, "errors": errors[:5], "n_errors": len(errors)}


class _Http:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body)
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _sync(clock: Any) -> tuple[float, float]:
    """Wait until every process is set up; the parent then publishes the window."""
    barrier, t_start, duration = clock
    barrier.wait(timeout=600)
    for _ in range(6000):  # bounded: 60 s
        if t_start.value > 0:
            break
        time.sleep(0.01)
    return t_start.value, t_start.value + duration


def service_worker(idx: int, port: int, token: str, study: str, clock: Any, out: Any) -> None:
    api = "/api/v1"
    http_ = _Http(port, token)
    ops: dict[str, list[float]] = {"lease": [], "report": [], "complete": []}
    errors: list[str] = []
    done = 0
    status, info = http_.post(
        f"{api}/workers/register",
        {"hostname": "bench", "name": f"bench:{idx}", "devices": [], "workloads": ["instant"]},
    )
    if status != 200 and status != 201:
        out.put(_result("service", ops, 0, [f"register {status} {info}"]))
        return
    wid = info["worker_id"]
    t_start, t_end = _sync(clock)
    rng = random.Random(idx)
    while time.monotonic() < t_end and len(errors) < MAX_ERRORS:
        t0 = time.monotonic()
        status, ans = http_.post(
            f"{api}/trials/lease", {"worker_id": wid, "studies": [study], "wait_s": 0}
        )
        t1 = time.monotonic()
        if t0 >= t_start:
            ops["lease"].append(t1 - t0)
        if status != 200 or not ans.get("trial"):
            errors.append(f"lease {status} {str(ans)[:200]}")
            time.sleep(min(0.2, (ans or {}).get("retry_after_s") or 0.05))
            continue
        lease_id = ans["trial"]["lease_id"]
        value = rng.random()  # the instant objective
        time.sleep(objective_s())
        ok = True
        for step in range(REPORTS):
            t0 = time.monotonic()
            status, ans = http_.post(
                f"{api}/leases/{lease_id}/report", {"step": step, "value": value}
            )
            t1 = time.monotonic()
            if t0 >= t_start:
                ops["report"].append(t1 - t0)
            if status != 200:
                errors.append(f"report {status} {str(ans)[:200]}")
                ok = False
                break
        if not ok:
            continue
        t0 = time.monotonic()
        status, ans = http_.post(f"{api}/leases/{lease_id}/complete", {"value": value})
        t1 = time.monotonic()
        if t0 >= t_start:
            ops["complete"].append(t1 - t0)
        if status != 200:
            errors.append(f"complete {status} {str(ans)[:200]}")
            continue
        if t_start <= t1 <= t_end:
            done += 1
    out.put(_result("service", ops, done, errors))


def _optuna_loop(kind: str, study: Any, clock: Any, out: Any, seed: int) -> None:
    import optuna

    study.get_trials(deepcopy=False)  # load the seeded trials before the clock starts
    t_start, t_end = _sync(clock)
    ops: dict[str, list[float]] = {"lease": [], "report": [], "complete": []}
    errors: list[str] = []
    done = 0
    rng = random.Random(seed)
    while time.monotonic() < t_end and len(errors) < MAX_ERRORS:
        try:
            t0 = time.monotonic()
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            t1 = time.monotonic()
            if t0 >= t_start:
                ops["lease"].append(t1 - t0)
            value = rng.random()
            time.sleep(objective_s())
            for step in range(REPORTS):
                t0 = time.monotonic()
                trial.report(value, step)
                t1 = time.monotonic()
                if t0 >= t_start:
                    ops["report"].append(t1 - t0)
            t0 = time.monotonic()
            study.tell(trial, value)
            t1 = time.monotonic()
            if t0 >= t_start:
                ops["complete"].append(t1 - t0)
            if t_start <= t1 <= t_end:
                done += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            time.sleep(0.05)
    del optuna
    out.put(_result(kind, ops, done, errors))


def _sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def direct_worker(idx: int, url: str, study: str, sampler: str, clock: Any, out: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(30):  # a shared PostgreSQL may be at max_connections for a moment
        try:
            storage = optuna.storages.RDBStorage(url)
            break
        except Exception:
            if attempt == 29:
                raise
            time.sleep(1.0 + random.random())
    s = optuna.load_study(study_name=study, storage=storage, sampler=_sampler(sampler, idx))
    _optuna_loop("direct", s, clock, out, idx)


def grpc_worker(idx: int, port: int, study: str, sampler: str, clock: Any, out: Any) -> None:
    import optuna
    from optuna.storages import GrpcStorageProxy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = GrpcStorageProxy(host="127.0.0.1", port=port)
    s = optuna.load_study(study_name=study, storage=storage, sampler=_sampler(sampler, idx))
    _optuna_loop("grpc", s, clock, out, idx)


def grpc_server(url: str, port: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.storages.run_grpc_proxy_server(
        optuna.storages.RDBStorage(url), host="127.0.0.1", port=port
    )
