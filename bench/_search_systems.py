"""The systems bench/search_quality.py compares, each running one seeded study.

* Optuna in-process: ``optuna.create_study(sampler=...)`` and ``study.optimize``,
  sequentially or with ``n_jobs`` threads.
* The service: the real app (embedded SQLite, auth on) under uvicorn in a thread of
  this process, one study per run created through ``hpo.Client``; W worker threads,
  each with its own ``hpo.Client``, register, lease, run the objective on an
  ``hpo.Trial`` (declared space: the leased params; define-by-run: each
  ``suggest_*`` asks the server) and complete.

A run returns the values of its trials in order and their params.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from bench._common import service_settings
from bench._search_functions import Function

optuna.logging.set_verbosity(optuna.logging.ERROR)

#: sampler name -> (spec name, options), the same for Optuna and the service
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "tpe": ("tpe", {"multivariate": False}),
    "tpe-mv": ("tpe", {"multivariate": True}),
    "gp": ("gp", {}),
    "cmaes": ("cmaes", {}),
}
OPTUNA_CLASSES = {"tpe": "TPESampler", "gp": "GPSampler", "cmaes": "CmaEsSampler"}


@dataclass
class Run:
    values: list[float] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)

    def add(self, params: dict[str, Any], value: float) -> None:
        self.params.append(dict(params))
        self.values.append(value)


def optuna_sampler(sampler: str, seed: int) -> optuna.samplers.BaseSampler:
    name, options = SAMPLERS[sampler]
    return getattr(optuna.samplers, OPTUNA_CLASSES[name])(seed=seed, **options)


def run_optuna(
    fn: Function, sampler: str, seed: int, trials: int, jobs: int = 1, delay: float = 0.0
) -> Run:
    """Optuna in-process; ``delay`` seconds of "training" per trial (for ``jobs`` > 1)."""
    study = optuna.create_study(sampler=optuna_sampler(sampler, seed))
    run, lock = Run(), threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        value = fn.objective(trial)
        time.sleep(delay)
        with lock:
            run.add(trial.params, value)
        return value

    study.optimize(objective, n_trials=trials, n_jobs=jobs)
    return run


# --------------------------------------------------------------------------- the service


class Service:
    """The app under uvicorn in a daemon thread, with admin and worker tokens."""

    _names = itertools.count()

    def __init__(self, workdir: Path) -> None:
        from service.app import create_app

        self.app = create_app(service_settings(workdir))
        self.admin, self.worker = _mint(self.app.state.ctx)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Service:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="error", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=10)
        self._sock.close()
        self.app.state.ctx.close()

    def create_study(
        self, fn: Function, sampler: str, seed: int, trials: int, declared: bool
    ) -> str:
        import hpo

        name, options = SAMPLERS[sampler]
        study = f"sq-{next(self._names)}"
        spec = {
            "name": study,
            "workload": "bench",
            "direction": "minimize",
            "objective": "value",
            "sampler": {"name": name, "seed": seed, "options": options},
            "pruner": {"name": "none"},
            "budget": {"max_trials": trials, "max_retries": 0},
            "space": fn.space if declared else {},
        }
        with hpo.Client(self.url, self.admin) as admin:
            admin.create_study(spec)
        return study


def _mint(ctx: Any) -> tuple[str, str]:
    from service.core.auth import create_token_without_commit

    with ctx.db.session() as session:
        admin, _ = create_token_without_commit(session, "admin", "bench-admin")
        worker, _ = create_token_without_commit(session, "worker", "bench-worker")
    return admin, worker


@contextlib.contextmanager
def service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="hpo-search-") as tmp:
        server = Service(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


def run_service(
    server: Service,
    fn: Function,
    sampler: str,
    seed: int,
    trials: int,
    *,
    declared: bool,
    workers: int = 1,
    delay: float = 0.0,
) -> Run:
    """One study on the service, ``workers`` threads leasing until its budget is used."""
    study = server.create_study(fn, sampler, seed, trials, declared)
    run, lock, slots = Run(), threading.Lock(), iter(range(trials))
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            _work(server, study, fn, run, lock, slots, delay, index)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return run


def _work(
    server: Service,
    study: str,
    fn: Function,
    run: Run,
    lock: threading.Lock,
    slots: Iterator[int],
    delay: float,
    index: int,
) -> None:
    import hpo
    from hpo.protocol import CompleteRequest, LeaseRequest, WorkerRegistration

    with hpo.Client(server.url, server.worker) as client:
        me = WorkerRegistration(hostname="bench", name=f"bench:{index}", workloads=["bench"])
        worker_id = client.register(me).worker_id
        while True:
            with lock:
                if next(slots, None) is None:
                    return
            answer = client.lease(LeaseRequest(worker_id=worker_id, studies=[study], wait_s=5))
            if answer.trial is None:
                raise RuntimeError(f"no trial for {study}: {answer.reason}")
            trial = hpo.Trial(client, answer.trial)
            value = fn.objective(trial)
            time.sleep(delay)
            with lock:
                run.add(trial.params, value)
            client.complete(answer.trial.lease_id, CompleteRequest(value=value))
