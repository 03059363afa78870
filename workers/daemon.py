"""The worker daemon: register, then lease -> train -> complete/fail, until told to stop.

One process trains on one device. :func:`run_worker` is the entry point:

* device ``cpu``, ``cuda:N`` or a single GPU: this process runs :class:`Worker`;
* ``--gpus all`` or a list with a CUDA device: :mod:`workers.supervisor` starts
  one child process per GPU (``CUDA_VISIBLE_DEVICES`` pinned) and restarts
  children that crash.

Signals: the first SIGTERM/SIGINT stops taking work, abandons the running trial
(``fail(retry=True)``, so the server re-queues it at once) and exits 0; a second
signal exits at once. MNIST is loaded right after start, before any lease, so a
missing data folder stops the worker with a clear message and exit code 2.

Exit codes: 0 done (signal, ``--max-trials``), 1 unexpected error, 2 configuration
problem (data, device, token, server deadline), 3 device error (restart me).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any

from workers.client import (
    ApiError,
    AuthError,
    ClientAborted,
    RetryPolicy,
    ServerUnavailable,
    ServiceClient,
)
from workers.protocol import LeaseRequest, LeaseResponse, WorkerRegistration
from workers.runner import TrialEnv, run_trial
from workers.ui import make_progress, setup_logging

log = logging.getLogger("workers.daemon")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_DEVICE = 0, 1, 2, 3


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


@dataclass
class WorkerOptions:
    """Everything one worker daemon needs; built by ``hpo worker`` (workers.cli)."""

    server: str
    token: str | None = None
    device: str = "auto"  # cpu | cuda | cuda:N | auto (cuda if available, else cpu)
    gpus: str | None = None  # "all" or "0,1": one process per GPU (with a CUDA device)
    studies: list[str] | None = None  # take work only from these studies
    max_trials: int | None = None  # exit 0 after this many trials (per process)
    data_dir: str | None = None  # MNIST root (contains MNIST/raw); None: $HPO_DATA_DIR
    log_level: str = "INFO"
    idle_backoff_s: float = 10.0  # longest wait between lease attempts when idle
    wait_s: float = 5.0  # long-poll on the server per lease request
    server_wait_s: float | None = None  # give up waiting for the server at start after this
    timeout_s: float = 30.0  # HTTP timeout per request
    name: str | None = None  # worker name in the registry (default host:device:pid)


# --------------------------------------------------------------------------- devices


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda:0`` if CUDA is available else ``cpu``; validates ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda:0" if available else "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not available:
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here")
        index = 0 if spec == "cuda" else _index(spec)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {spec!r} does not exist: {count} CUDA device(s) visible")
        return f"cuda:{index}"
    raise DeviceError(f"unknown device {spec!r}: use cpu, cuda, cuda:N or auto")


def _index(spec: str) -> int:
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        raise DeviceError(f"bad device {spec!r}: expected cuda:N") from None
    if index < 0:
        raise DeviceError(f"bad device {spec!r}: N must be >= 0")
    return index


def describe_device(device: str) -> list[str]:
    """Human-readable device list for the registry, e.g. ``cuda:0 NVIDIA H100 (80 GiB)``."""
    if not device.startswith("cuda"):
        return [f"cpu ({os.cpu_count() or 1} cores)"]
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    physical = os.environ.get("CUDA_VISIBLE_DEVICES")
    pinned = f" [CUDA_VISIBLE_DEVICES={physical}]" if physical else ""
    return [f"{device} {props.name} ({props.total_memory / 2**30:.0f} GiB){pinned}"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpo-service")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- entry point


def run_worker(options: WorkerOptions) -> int:
    """Run the daemon (one process, or a supervisor of one process per GPU); exit code."""
    setup_logging(options.log_level)
    from workers.supervisor import Supervisor, plan_gpus

    try:
        plan = plan_gpus(options.gpus, options.device)
    except DeviceError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    try:
        if len(plan) > 1:
            return Supervisor(options, [gpu for _, gpu in plan]).run()
        if plan:  # one GPU chosen with --gpus: run here, on it
            options = replace(options, device=f"cuda:{plan[0][0]}", gpus=None)
        return Worker(options).run()
    except Exception:
        log.exception("worker crashed")
        return EXIT_ERROR


class Worker:
    """One worker process on one device.

    ``load_data``, ``configure`` and ``train`` default to the real trainer
    (imported lazily); tests inject stand-ins.
    """

    def __init__(
        self,
        options: WorkerOptions,
        *,
        load_data: Any = None,
        configure: Any = None,
        train: Any = None,
        install_signals: bool = True,
    ) -> None:
        self.options = options
        self.shutdown = threading.Event()
        self.trials_done = 0
        self.worker_id: str | None = None
        self._load_data = load_data
        self._configure = configure
        self._train = train
        self._install = install_signals
        self._signals = 0
        self._last_idle_reason: str | None = None
        self.device = "cpu"

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Load data, register, loop until a signal or ``max_trials``; the exit code."""
        if self._install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        try:
            device = self.device = resolve_device(self.options.device)
        except DeviceError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        data = self._data(device)
        if data is None:
            return EXIT_CONFIG
        if self.shutdown.is_set():
            return EXIT_OK
        with self._client() as client:
            code = self._register(client, device)
            if code is not None:
                return code
            env = self._env(client, device, data)
            return self._loop(env)

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """Stop taking work; the running trial is abandoned at its next batch."""
        if not self.shutdown.is_set():
            log.info("%s: abandoning the current trial and exiting", reason)
        self.shutdown.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            log.warning("second %s: exiting now", name)
            os._exit(128 + signum)
        self.request_shutdown(f"received {name}")

    def _client(self, timeout: float | None = None) -> ServiceClient:
        return ServiceClient(
            self.options.server,
            self.options.token,
            timeout or self.options.timeout_s,
            stop=self.shutdown,
            user_agent=f"hpo-worker/{_version()}",
        )

    def _data(self, device: str) -> Any:
        """MNIST on the device, loaded once; None (after a clear log line) when absent."""
        from workers.data import MnistNotFound, load_mnist

        load = self._load_data or load_mnist
        try:
            data = load(self.options.data_dir, device)
        except MnistNotFound as exc:
            log.error("%s", exc)
            return None
        log.info("MNIST loaded on %s", device)
        return data

    def _register(self, client: ServiceClient, device: str) -> int | None:
        """Register (waiting for the server); None on success, else the exit code."""
        host = socket.gethostname()
        label = device.replace("cuda:", "gpu") if device.startswith("cuda") else device
        body = WorkerRegistration(
            hostname=host[:255],
            devices=describe_device(device),
            version=_version(),
            name=(self.options.name or f"{host}:{label}:{os.getpid()}")[:255],
        )
        try:
            info = client.register(body, wait=True, deadline_s=self.options.server_wait_s)
        except ClientAborted:
            return EXIT_OK
        except ServerUnavailable as exc:
            log.error("server at %s not reachable: %s", self.options.server, exc)
            return EXIT_CONFIG
        except AuthError as exc:
            log.error("server refused the token (HTTP %d): %s", exc.status_code, exc.detail)
            return EXIT_CONFIG
        except ApiError as exc:
            log.error("registration refused: %s", exc)
            return EXIT_CONFIG
        self.worker_id = info.worker_id
        log.info("registered as worker %s (%s) on %s", info.worker_id, body.name, device)
        return None

    def _env(self, client: ServiceClient, device: str, data: Any) -> TrialEnv:
        configure, train = self._configure, self._train
        if configure is None:
            from workers.settings import TrainConfig

            configure = TrainConfig.from_settings
        if train is None:
            from workers.trainer import train
        return TrialEnv(
            client=client,
            make_client=lambda: self._heartbeat_client(),
            device=device,
            data=data,
            shutdown=self.shutdown,
            configure=configure,
            train=train,
            view=make_progress(),
        )

    def _heartbeat_client(self) -> ServiceClient:
        # A client of its own (httpx clients are not shared across threads here)
        # and a short timeout: a heartbeat that hangs is worth less than the next.
        return self._client(timeout=min(self.options.timeout_s, 10.0))

    # ------------------------------------------------------------------ work loop

    def _loop(self, env: TrialEnv) -> int:
        """Lease and run trials until shutdown or ``max_trials``."""
        idle = RetryPolicy(None, None, 0.5, max(0.5, self.options.idle_backoff_s))
        idle_round = 0
        while not self.shutdown.is_set():
            limit = self.options.max_trials
            if limit is not None and self.trials_done >= limit:
                log.info("ran %d trial(s) (--max-trials): exiting", self.trials_done)
                return EXIT_OK
            answer = self._lease(env.client)
            if isinstance(answer, int):
                return answer
            if answer is None or answer.trial is None:
                idle_round += 1
                delay = idle.delay(idle_round, 0.0, _RNG) or 0.0
                if answer is not None and answer.retry_after_s > 0:
                    delay = answer.retry_after_s
                self.shutdown.wait(delay)
                continue
            idle_round = 0
            self._last_idle_reason = None
            end = run_trial(env, answer.trial)
            self.trials_done += 1
            if end.device_error:
                log.error("exiting after a device error so the device is re-initialised")
                return EXIT_DEVICE
        log.info("worker stopped after %d trial(s)", self.trials_done)
        return EXIT_OK

    def _lease(self, client: ServiceClient) -> LeaseResponse | int | None:
        """One lease request: the answer, None (retry later) or an exit code."""
        body = LeaseRequest(
            worker_id=self.worker_id or "unregistered",
            studies=self.options.studies or None,
            wait_s=self.options.wait_s,
        )
        try:
            answer = client.lease(body)
        except ClientAborted:
            return None
        except ServerUnavailable as exc:
            log.warning("server unavailable, will retry: %s", exc)
            return None
        except AuthError as exc:
            log.error("server refused the token (HTTP %d): %s", exc.status_code, exc.detail)
            return EXIT_CONFIG
        except ApiError as exc:
            if exc.status_code == 404:  # the server forgot this worker (new database)
                log.warning("server does not know this worker: registering again")
                return self._register(client, self.device)
            log.error("lease refused: %s", exc)
            return None
        if answer.trial is None and answer.reason != self._last_idle_reason:
            log.info("no work (%s); asking again", answer.reason or "nothing to run")
            self._last_idle_reason = answer.reason
        return answer


_RNG = random.Random()


def main(argv: list[str] | None = None) -> None:
    """``python -m workers.daemon``: the same command as ``python -m workers``."""
    from workers.cli import app

    app(args=argv if argv is not None else sys.argv[1:], prog_name="hpo-worker")


if __name__ == "__main__":
    main()
