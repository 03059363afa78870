"""Service throughput benchmark: W worker processes run trial lifecycles over HTTP.

For each cell (database, sampler, trials-before T, workers W) a fresh database
(PostgreSQL: a new database on the local server; SQLite: a temporary file) gets
a server process (``python -m service.cli server``, one uvicorn process), a
study seeded with T finished trials (bulk SQL insert into Optuna's tables), and
W processes that each loop lease -> report x3 -> complete with an instant
objective. Two baselines run in the same database with the same sampler and
the same seeded T: Optuna directly on RDBStorage (ask, report x3, tell), and
Optuna through GrpcStorageProxy / run_grpc_proxy_server.

    .venv/bin/python -m bench.service                          # the whole grid
    .venv/bin/python -m bench.service --db postgresql --sampler tpe --workers 32 \
        --trials-before 10000 --duration 8 --profile            # one cell, with py-spy
    .venv/bin/python -m bench.service --memory 120              # RSS over a 2-minute run

Prints trials/s and p50/p95/p99 (ms) of lease (ask), report and complete (tell)
for the service and both baselines, and the ratio service/baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _service_load as load  # noqa: E402
from bench._common import free_port, wait_port  # noqa: E402

OPS = ("lease", "report", "complete")


# --------------------------------------------------------------------------- databases


def make_db(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'bench-{time.time_ns()}.db'}"
    from tests.conftest import create_pg_database

    return create_pg_database()


def drop_db(kind: str, url: str) -> None:
    if kind == "postgresql":
        from tests.conftest import drop_pg_database

        drop_pg_database(url)


def seed(url: str, study_name: str, n: int) -> float:
    """Insert ``n`` COMPLETE trials with param x ~ U(0, 1) into an existing Optuna study."""
    import random

    import optuna
    from optuna.distributions import FloatDistribution, distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, select

    from bench._common import insert_complete_trials, insert_in_chunks

    t0 = time.perf_counter()
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(study_name)
    storage.engine.dispose()
    if n == 0:
        return 0.0
    engine = create_engine(url)
    rng = random.Random(0)
    dist = distribution_to_json(FloatDistribution(0.0, 1.0))
    with engine.begin() as conn:
        start = conn.execute(
            select(models.TrialModel.number)
            .where(models.TrialModel.study_id == study_id)
            .order_by(models.TrialModel.number.desc())
            .limit(1)
        ).scalar()
        first = 0 if start is None else start + 1
        ids = insert_complete_trials(conn, study_id, first, n)
        params, values = [], []
        for tid in ids:
            x = rng.random()
            params.append(
                {"trial_id": tid, "param_name": "x", "param_value": x, "distribution_json": dist}
            )
            values.append({"trial_id": tid, "objective": 0, "value": x, "value_type": "FINITE"})
        insert_in_chunks(conn, models.TrialParamModel.__table__, params)
        insert_in_chunks(conn, models.TrialValueModel.__table__, values)
    engine.dispose()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- server


def join_or_kill(procs: list[mp.Process]) -> None:
    """Wait up to 10 s for each load process to end; kill the ones that do not."""
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()


class Server:
    def __init__(self, url: str, tmp: Path, processes: int = 1, pool: int = 0) -> None:
        self.processes = processes
        self.port = free_port()
        token_file = tmp / f"tokens-{self.port}.json"
        env = {
            **os.environ,
            "HPO_DATABASE_URL": url,
            "HPO_AUTH": "true",
            "HPO_TOKEN_FILE": str(token_file),
            "HPO_DB_POOL_SIZE": "40",
            "HPO_PROPOSAL_POOL": str(pool),  # proposals drawn ahead per study (0: off)
        }
        self.log = open(tmp / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--workers",
                str(processes),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, self.proc, "/readyz", 60)
        self.tokens = json.loads(token_file.read_text())

    def pids(self) -> list[int]:
        """The serving processes: the server itself, or uvicorn's worker children."""
        if self.processes == 1:
            return [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return [self.proc.pid]
        # uvicorn's supervisor spawns one child per worker (plus a resource tracker)
        pids = [int(p) for p in kids.split()]
        workers = [p for p in pids if "spawn_main" in _cmdline(p)]
        return workers or [self.proc.pid]

    def rss_mb(self) -> float:
        """Resident memory of the serving process(es), summed, in MB."""
        total = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                return float("nan")
        return total

    def create_study(self, name: str, sampler: str) -> None:
        import httpx

        spec = {
            "name": name,
            "workload": "instant",
            "direction": "maximize",
            "sampler": {"name": sampler, "seed": 1},
            "pruner": {"name": "none"},
            "budget": {"max_trials": 1_000_000, "max_concurrent": None},
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
        }
        r = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v1/studies",
            json=spec,
            headers={"Authorization": f"Bearer {self.tokens['admin']}"},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"create study: {r.status_code} {r.text}")

    def pool_metrics(self) -> dict[str, float]:
        """From /metrics: leases granted, leases that took a pooled proposal, and the
        sampler seconds per pooled proposal (sum and count), over the whole run."""
        import httpx

        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text
        except httpx.HTTPError:
            return {}
        wanted = {
            "hpo_leases_granted_total": "leases",
            "hpo_proposal_age_seconds_count": "pooled_leases",
            "hpo_proposal_sample_seconds_sum": "sample_s_sum",
            "hpo_proposal_sample_seconds_count": "proposals_drawn",
        }
        out: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                out[wanted[name]] = out.get(wanted[name], 0.0) + float(value)
        return out

    def set_state(self, name: str, action: str) -> None:
        """pause / resume a study (the pool must not draw while seed() bulk-inserts)."""
        import httpx

        r = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v1/studies/{name}/{action}",
            headers={"Authorization": f"Bearer {self.tokens['admin']}"},
            timeout=30,
        )
        if r.status_code != 200:
            raise RuntimeError(f"{action} study: {r.status_code} {r.text}")

    def warm_up(self, study: str) -> float:
        """Lifecycles before the clock starts: each server process loads the seeded trials
        into its Optuna cache on its first lease (TPE). With several processes, rounds of
        concurrent lifecycles on fresh connections run until no lease is slow any more.
        Returns the seconds the slowest first lease took."""
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        base = f"http://127.0.0.1:{self.port}/api/v1"
        h = {"Authorization": f"Bearer {self.tokens['worker']}"}

        def one(_: int) -> float:
            with httpx.Client(base_url=base, headers=h, timeout=600) as c:
                warm = {"hostname": "warm", "workloads": ["instant"]}
                wid = c.post("/workers/register", json=warm).json()["worker_id"]
                t0 = time.perf_counter()
                trial = c.post("/trials/lease", json={"worker_id": wid, "studies": [study]}).json()
                took = time.perf_counter() - t0
                lease_id = trial["trial"]["lease_id"]
                c.post(f"/leases/{lease_id}/complete", json={"value": 0.5})
            return took

        first = one(0)
        if self.processes == 1:
            return first
        deadline = time.monotonic() + 300
        width = 4 * self.processes
        with ThreadPoolExecutor(width) as pool:
            while time.monotonic() < deadline:
                took = list(pool.map(one, range(width)))
                first = max(first, *took)
                if max(took) < 1.0:
                    break
        return first

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- load


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def _await_setup(barrier: Any, procs: list, limit: float) -> None:
    """Wait at the barrier; if a process dies in set-up, break the barrier (the others
    then stop) instead of waiting out the limit."""
    import threading

    waiter = threading.Thread(target=_barrier_wait, args=(barrier, limit), daemon=True)
    waiter.start()
    while waiter.is_alive():
        waiter.join(timeout=1.0)
        if waiter.is_alive() and any(p.exitcode not in (None, 0) for p in procs):
            print("  .. a load process died in set-up; aborting the cell", flush=True)
            barrier.abort()
            waiter.join(timeout=5)
            return


def _barrier_wait(barrier: Any, limit: float) -> None:
    # broken or timed out: the caller collects what there is
    with contextlib.suppress(Exception):
        barrier.wait(timeout=limit)


def run_load(target: Any, args_of: Any, n: int, warmup: float, duration: float) -> dict:
    """Start ``n`` processes of ``target``; collect and merge their results."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    barrier = ctx.Barrier(n + 1)
    t_start = ctx.Value("d", 0.0)
    clock = (barrier, t_start, duration)
    procs = [ctx.Process(target=target, args=(*args_of(i), clock, out)) for i in range(n)]
    began = time.monotonic()
    for p in procs:
        p.start()
    _await_setup(barrier, procs, 600)  # every process set up (seeded trials loaded, registered)
    setup_s = time.monotonic() - began
    t_start.value = time.monotonic() + warmup
    t_end = t_start.value + duration
    results = []
    limit = t_end + 120
    while len(results) < n and time.monotonic() < limit:
        try:
            results.append(out.get(timeout=max(0.5, min(10.0, limit - time.monotonic()))))
        except Exception:  # noqa: BLE001 - queue.Empty: check the deadline again
            if not any(p.is_alive() for p in procs):
                break
    join_or_kill(procs)
    ops: dict[str, list[float]] = {op: [] for op in OPS}
    done, n_errors, errors = 0, 0, []
    for r in results:
        done += r["done"]
        n_errors += r["n_errors"]
        errors += r["errors"]
        for op in OPS:
            ops[op] += r["ops"][op]
    row: dict[str, Any] = {
        "trials_s": done / duration,
        "done": done,
        "errors": n_errors,
        "error_samples": errors[:3],
        "missing": n - len(results),
        "setup_s": round(setup_s, 1),
    }
    for op in OPS:
        for q in (50, 95, 99):
            row[f"{op}_p{q}"] = pct(ops[op], q / 100)
    return row


def _partial(result: dict, system: str) -> None:
    r = result[system]
    print(
        f"  .. {result['db']} {result['sampler']} T={result['T']} W={result['W']} {system}: "
        f"{r['trials_s']:.1f} trials/s, lease p95 {r['lease_p95']:.0f} ms, "
        f"set-up {r['setup_s']} s, errors {r['errors']}",
        flush=True,
    )


def wait_drawn(url: str, timeout_s: float = 60.0) -> None:
    """Wait until no proposal is being drawn (the seeding's trial numbers must not race
    with the refill's new trials)."""
    from sqlalchemy import create_engine, func, select

    from service.storage.pool_models import ProposalRecord

    engine = create_engine(url)
    query = select(func.count()).where(ProposalRecord.state == "drawing")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with engine.connect() as conn:
                if not conn.scalar(query):
                    return
    finally:
        engine.dispose()
    raise RuntimeError(f"proposals still drawing after {timeout_s:g} s")


def cell(
    db: str, sampler: str, t_before: int, workers: int, a: argparse.Namespace, tmp: Path
) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = make_db(db, tmp)
    result: dict[str, Any] = {"db": db, "sampler": sampler, "T": t_before, "W": workers}
    result["pool"], result["studies"] = a.pool, a.studies
    result["objective_s"] = a.objective_s
    names = [f"s{k}" for k in range(a.studies)] if a.studies > 1 else [""]
    try:
        # ---------------------------------------------------------------- service
        if "service" in a.systems:
            procs = a.server_workers if db == "postgresql" else 1
            result["server_workers"] = procs
            server = Server(url, tmp, procs, a.pool)
            try:
                result["seed_s"] = 0.0
                for name in names:
                    server.create_study(f"svc{name}", sampler)
                    server.set_state(f"svc{name}", "pause")
                    if a.pool:  # proposals reserved before the pause are still drawn
                        wait_drawn(url)
                    result["seed_s"] += seed(url, f"svc{name}", t_before)
                    server.set_state(f"svc{name}", "resume")
                result["first_lease_s"] = max(server.warm_up(f"svc{n}") for n in names)
                if a.pool:
                    time.sleep(a.pool_fill_s)  # the refill draws the first proposals
                result["rss_start_mb"] = server.rss_mb()
                spy = None
                profiled = ("postgresql", "tpe", 32, 10000)
                if a.profile and (db, sampler, workers, t_before) == profiled:
                    spy = start_profile(server, a.warmup + 3.0, a.duration, tmp)
                token, port = server.tokens["worker"], server.port
                result["service"] = run_load(
                    load.service_worker,
                    lambda i: (i, port, token, f"svc{names[i % len(names)]}"),
                    workers,
                    a.warmup,
                    a.duration,
                )
                result["rss_end_mb"] = server.rss_mb()
                result["server_metrics"] = server.pool_metrics()
                _partial(result, "service")
                if spy is not None:
                    finish_profile(spy, result, a)
            finally:
                server.stop()
        # ---------------------------------------------------------------- direct RDB
        if "direct" in a.systems:
            for name in names:
                optuna.create_study(study_name=f"direct{name}", storage=url, direction="maximize")
                seed(url, f"direct{name}", t_before)
            result["direct"] = run_load(
                load.direct_worker,
                lambda i: (i, url, f"direct{names[i % len(names)]}", sampler),
                workers,
                a.warmup,
                a.duration,
            )
            _partial(result, "direct")
        # ---------------------------------------------------------------- gRPC proxy
        if "grpc" in a.systems:
            optuna.create_study(study_name="grpc", storage=url, direction="maximize")
            seed(url, "grpc", t_before)
            port = free_port()
            proxy = mp.get_context("fork").Process(target=load.grpc_server, args=(url, port))
            proxy.start()
            try:
                wait_port(port, proxy, None, 30)
                result["grpc"] = run_load(
                    load.grpc_worker,
                    lambda i: (i, port, "grpc", sampler),
                    workers,
                    a.warmup,
                    a.duration,
                )
                _partial(result, "grpc")
            finally:
                proxy.terminate()
                proxy.join(timeout=10)
                if proxy.is_alive():
                    proxy.kill()
                    proxy.join()
    finally:
        drop_db(db, url)
    flatten(result)
    return result


def flatten(result: dict) -> None:
    """The headline keys of issue 23, at the top of the row."""
    for system in ("service", "direct"):
        if system in result:
            result[f"{system}.trials_s"] = result[system]["trials_s"]
    if "service" in result:
        result["lease_p95_ms"] = result["service"]["lease_p95"]
        result["lease_p99_ms"] = result["service"]["lease_p99"]
    if "service" in result and result.get("direct", {}).get("trials_s"):
        result["ratio"] = result["service"]["trials_s"] / result["direct"]["trials_s"]


def headline(r: dict) -> str:
    """lifecycles/s both sides, the ratio and the lease p95/p99 of the service."""
    ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "n/a"
    m = r.get("server_metrics") or {}
    pooled = ""
    if m.get("proposals_drawn"):
        pooled = (
            f", {m.get('pooled_leases', 0):.0f} of {m.get('leases', 0):.0f} leases from the "
            f"pool, sampler {1000 * m['sample_s_sum'] / m['proposals_drawn']:.0f} ms/proposal"
        )
    return (
        f"{r['db']} {r['sampler']} W={r['W']} T={r['T']} pool={r.get('pool', 0)} "
        f"studies={r.get('studies', 1)} server_workers={r.get('server_workers', 1)}: "
        f"service {r.get('service.trials_s', float('nan')):.1f}/s, "
        f"direct {r.get('direct.trials_s', float('nan')):.1f}/s, ratio {ratio}, "
        f"lease p95 {r.get('lease_p95_ms', float('nan')):.1f} ms, "
        f"p99 {r.get('lease_p99_ms', float('nan')):.1f} ms{pooled}"
    )


# --------------------------------------------------------------------------- profile


def start_profile(server: Server, delay: float, duration: float, tmp: Path) -> dict:
    """py-spy on the server process (several uvicorn processes: the supervisor and its
    children, ``--subprocesses``)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = tmp / "profile.txt"
    target = f"-p {server.proc.pid}" + (" --subprocesses" if server.processes > 1 else "")
    cmd = (
        f"sleep {delay}; exec {exe} record --nonblocking --format raw -r 200 "
        f"-d {int(duration)} {target} -o {raw}"
    )
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return {"proc": proc, "raw": raw}


def finish_profile(spy: dict, result: dict, a: argparse.Namespace) -> None:
    try:
        _, err = spy["proc"].communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy["proc"].kill()
        _, err = spy["proc"].communicate()
    if not spy["raw"].exists():
        print(f"py-spy produced nothing: {err.decode()[-500:]}", file=sys.stderr)
        return
    lines = spy["raw"].read_text().splitlines()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service-profile.collapsed.txt").write_text(
        "\n".join(_strip_paths(line) for line in lines) + "\n"
    )
    result["profile_samples"] = summarize_profile(lines)


def _strip_paths(line: str) -> str:
    """py-spy frames are 'func (file:line)'; keep file paths relative to site-packages/repo."""
    for marker in ("site-packages/", str(REPO) + "/", "/lib/python3"):
        while marker in line:
            head, _, tail = line.partition(marker)
            start = max(head.rfind("("), 0)
            line = head[: start + 1] + tail if start else tail
    return line


def summarize_profile(lines: list[str]) -> dict:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_strip_paths(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if frames:
            self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return {
        "total": total,
        "self": self_c.most_common(30),
        "inclusive": incl.most_common(60),
    }


# --------------------------------------------------------------------------- memory


def memory_run(a: argparse.Namespace, tmp: Path) -> dict:
    """PG + random, W=8: RSS sampled every 10 s over ``a.memory`` seconds."""
    out: dict[str, Any] = {}
    for t_before in a.memory_trials:
        url = make_db("postgresql", tmp)
        try:
            server = Server(url, tmp)
            try:
                server.create_study("mem", "random")
                rss_boot = server.rss_mb()
                seed_s = seed(url, "mem", t_before)
                samples: list[tuple[float, float]] = []
                token, port = server.tokens["worker"], server.port
                ctx = mp.get_context("fork")
                q = ctx.Queue()
                barrier = ctx.Barrier(9)
                start_v = ctx.Value("d", 0.0)
                clock = (barrier, start_v, a.memory)
                procs = [
                    ctx.Process(target=load.service_worker, args=(i, port, token, "mem", clock, q))
                    for i in range(8)
                ]
                for p in procs:
                    p.start()
                barrier.wait(timeout=120)
                t_start = time.monotonic()
                start_v.value = t_start
                t_end = t_start + a.memory
                for _ in range(100_000):
                    if time.monotonic() >= t_end:
                        break
                    samples.append((round(time.monotonic() - t_start, 1), server.rss_mb()))
                    time.sleep(min(10.0, max(0.1, t_end - time.monotonic())))
                done = 0
                for _ in procs:
                    try:
                        done += q.get(timeout=60)["done"]
                    except Exception:  # noqa: BLE001
                        break
                join_or_kill(procs)
                samples.append((round(time.monotonic() - t_start, 1), server.rss_mb()))
                out[str(t_before)] = {
                    "rss_boot_mb": rss_boot,
                    "seed_s": seed_s,
                    "samples": samples,
                    "lifecycles": done,
                    "seconds": a.memory,
                }
                print(
                    f"memory T={t_before}: boot {rss_boot:.0f} MB, samples {samples}, "
                    f"{done} lifecycles",
                    flush=True,
                )
            finally:
                server.stop()
        finally:
            drop_db("postgresql", url)
    return out


# --------------------------------------------------------------------------- report


def fmt_row(r: dict) -> list[str]:
    lines = []
    for system in ("service", "direct", "grpc"):
        s = r.get(system)
        if not s:
            continue
        ratio = ""
        if system == "service":
            parts = []
            for base in ("direct", "grpc"):
                b = r.get(base)
                if b and b["trials_s"] > 0:
                    parts.append(f"{s['trials_s'] / b['trials_s']:.2f}x {base}")
            ratio = ", ".join(parts)
        lat = " | ".join(
            f"{s[f'{op}_p50']:.1f} / {s[f'{op}_p95']:.1f} / {s[f'{op}_p99']:.1f}" for op in OPS
        )
        label = system
        if system == "service" and r.get("pool"):
            label = f"service (pool {r['pool']})"
        if system == "service" and r.get("server_workers", 1) > 1:
            label += f" x{r['server_workers']} processes"
        if r.get("studies", 1) > 1:
            label += f", {r['studies']} studies"
        lines.append(
            f"| {r['db']} | {r['sampler']} | {r['T']} | {r['W']} | {label} | "
            f"{s['trials_s']:.1f} | {lat} | {s['errors']} | {ratio} |"
        )
    return lines


HEADER = (
    "| db | sampler | T | W | system | trials/s | lease (ask) p50/p95/p99 ms | "
    "report p50/p95/p99 ms | complete (tell) p50/p95/p99 ms | errors | service/baseline |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def machine() -> dict:
    import sqlite3

    import optuna
    import sqlalchemy

    pg = "n/a"
    try:
        from sqlalchemy import create_engine

        from tests.conftest import _pg_admin_url

        eng = create_engine(_pg_admin_url())
        with eng.connect() as conn:
            pg = conn.exec_driver_sql("show server_version").scalar()
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        pg = f"unreachable ({exc.__class__.__name__})"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import grpc

        grpc_v = grpc.__version__
    except ImportError:
        grpc_v = "not installed"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "grpcio": grpc_v,
    }


def render(path: Path) -> str:
    """Markdown of a JSON-lines file written by --out: the table, RSS, memory runs."""
    rows, mem, info = [], {}, {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        info = r.get("machine", info)
        if "memory" in r:
            mem.update(r["memory"])
        else:
            rows.append(r)
    out = [HEADER]
    for r in rows:
        out += fmt_row(r)
    out.append("")
    out.append("| db | sampler | T | W | server RSS before load MB | after MB |")
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        if "rss_start_mb" in r:
            out.append(
                f"| {r['db']} | {r['sampler']} | {r['T']} | {r['W']} | "
                f"{r['rss_start_mb']:.0f} | {r['rss_end_mb']:.0f} |"
            )
    for t, m in mem.items():
        out.append("")
        out.append(
            f"Memory run, PostgreSQL + random, W=8, T={t}, {m['seconds']:.0f} s, "
            f"{m['lifecycles']} lifecycles; RSS after boot {m['rss_boot_mb']:.0f} MB:"
        )
        out.append("")
        out.append("| t (s) | RSS MB |")
        out.append("|---|---|")
        out += [f"| {ts} | {mb:.0f} |" for ts, mb in m["samples"]]
    out.append("")
    out.append("Machine: " + json.dumps(info))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--db", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"]
    )
    p.add_argument("--sampler", nargs="+", default=["tpe", "random"], choices=["tpe", "random"])
    p.add_argument("--workers", nargs="+", type=int, default=[32, 8, 1])
    p.add_argument("--trials-before", nargs="+", type=int, default=[10000, 1000, 0])
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per cell")
    p.add_argument(
        "--systems",
        nargs="*",
        default=["service", "direct", "grpc"],
        choices=["service", "direct", "grpc"],
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server during the postgresql/tpe/W=32/T=10000 cell",
    )
    p.add_argument(
        "--memory",
        type=float,
        default=0.0,
        help="seconds of a W=8 PG random run sampling server RSS (0: skip)",
    )
    p.add_argument("--memory-trials", nargs="+", type=int, default=[10000])
    p.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="uvicorn processes of the server on PostgreSQL (SQLite: always 1)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop starting new cells after this many minutes (0: no limit)",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="the service's proposal pool depth per study (HPO_PROPOSAL_POOL; 0: off)",
    )
    p.add_argument(
        "--pool-fill-s", type=float, default=3.0, help="seconds the pool fills before the load"
    )
    p.add_argument(
        "--studies", type=int, default=1, help="studies at once (each seeded with T trials)"
    )
    p.add_argument(
        "--objective-s",
        type=float,
        default=0.0,
        help="seconds each trial trains between lease and reports, both sides (0: instant)",
    )
    p.add_argument("--out", default="", help="append rows as JSON lines to this file")
    p.add_argument(
        "--render",
        default="",
        help="only print the markdown table of the rows in this JSON-lines file",
    )
    a = p.parse_args()
    os.environ["HPO_BENCH_OBJECTIVE_S"] = str(a.objective_s)  # read by the load processes
    if a.render:
        print(render(Path(a.render)))
        return

    warnings.filterwarnings("ignore", message=".*experimental.*")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    info = machine()
    print(json.dumps(info), flush=True)
    began = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp_s:
        tmp = Path(tmp_s)
        if a.memory > 0:
            mem = memory_run(a, tmp)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps({"memory": mem, "machine": info}) + "\n")
        cells = (
            [
                (db, s, t, w)
                for db in a.db
                for s in a.sampler
                for t in a.trials_before
                for w in a.workers
            ]
            if a.systems
            else []
        )
        if cells and a.systems:
            print(HEADER, flush=True)
        for db, s, t, w in cells:
            if a.max_minutes and time.monotonic() - began > a.max_minutes * 60:
                print(f"time limit: skipped {db} {s} T={t} W={w}", flush=True)
                continue
            try:
                r = cell(db, s, t, w, a, tmp)
            except Exception as exc:  # noqa: BLE001 - one bad cell must not end the grid
                print(f"cell {db} {s} T={t} W={w} failed: {exc!r}", flush=True)
                continue
            rows.append(r)
            for line in fmt_row(r):
                print(line, flush=True)
            extra = {
                k: r[k] for k in ("rss_start_mb", "rss_end_mb", "seed_s", "first_lease_s") if k in r
            }
            errs = {
                k: r[k]["error_samples"]
                for k in ("service", "direct", "grpc")
                if k in r and r[k]["error_samples"]
            }
            print(f"  {extra} {errs if errs else ''}", flush=True)
            print(headline(r), flush=True)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps({**r, "machine": info}) + "\n")
            if "profile_samples" in r:
                prof = r["profile_samples"]
                print(f"profile: {prof['total']} samples; top self:", flush=True)
                for name, n in prof["self"][:15]:
                    print(f"  {n / max(prof['total'], 1):6.1%} {name}", flush=True)


if __name__ == "__main__":
    main()
