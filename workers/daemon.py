"""The worker daemon: register, then lease -> train -> complete/fail, until told to stop.

One process trains on one device (:class:`Worker`); with several GPUs the
command line (:mod:`workers.cli`) runs a :mod:`workers.supervisor` instead,
which starts one such process per GPU.

Signals: the first SIGTERM/SIGINT is a preemption: the worker stops taking work,
checkpoints the running trial(s) and hands them back as preempted
(``fail(retry=True, preempted=True)``: re-queued at once, not counted as a retry),
then exits 0; past ``--grace`` seconds it exits regardless; a second signal exits
at once. MNIST is loaded right after start, before any lease, so a
missing data folder stops the worker with a clear message and exit code 2.

Exit codes: :class:`workers.options.ExitCode`. ``--idle-exit S`` ends the
process (code 0) after S seconds without work, or as soon as every study named
by ``--studies`` is finished (so SLURM jobs give their GPUs back).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import hpo
from hpo.client import Client
from hpo.protocol import LeaseRequest, LeaseResponse, TrialSpec, WorkerRegistration
from hpo.schemas import StudyState
from hpo.transport import (
    ApiError,
    AuthError,
    ClientAborted,
    ClientError,
    RetryPolicy,
    ServerUnavailable,
)
from hpo.trial import Trial
from workers.commands import CommandEnv, check_executable, parse_command, run_command_trial
from workers.devices import (
    DeviceError,
    describe_device,
    resolve_device,
    resources_for,
    trial_gpus,
)
from workers.objectives import ObjectiveError, load_objective
from workers.options import ExitCode, WorkerOptions
from workers.reference import ReferenceObjective
from workers.runner import TrialEnd, TrialEnv, run_trial
from workers.telemetry import DeviceProbe
from workers.ui import make_progress

log = logging.getLogger("workers.daemon")

#: How a batch of leased trials runs here (one at a time, or fused): their ends.
Runs = Callable[[Client, list[TrialSpec]], list[TrialEnd]]


class Worker:
    """One worker process on one device.

    What it runs per trial: the built-in trainer (default), ``--objective`` (a
    function called in this process) or ``--command`` (a child process per
    trial). ``load_data`` and ``train`` default to the real trainer's (imported
    lazily); tests inject stand-ins.
    """

    def __init__(
        self,
        options: WorkerOptions,
        *,
        load_data: Any = None,
        train: Any = None,
        install_signals: bool = True,
    ) -> None:
        self.options = options
        self.shutdown = threading.Event()
        self.trials_done = 0
        self.worker_id: str | None = None
        self._load_data = load_data
        self._train = train
        self._install = install_signals
        self._signals = 0
        self._last_idle_reason: str | None = None
        self._request_id: str | None = None  # the lease request not answered yet
        self.device = "cpu"
        self._device_probe: DeviceProbe | None = None
        #: trials leased at once: 1, or K with --pack K (--pack auto: K after the first lease)
        self._batch = options.pack if isinstance(options.pack, int) else 1

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Prepare what trials run, register, loop until a signal or a limit; the exit code."""
        if self._install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        try:
            self.device = resolve_device(self.options.device)
            runs = self._prepare()
        except (DeviceError, ObjectiveError, ValueError) as exc:
            log.error("%s", exc)
            return ExitCode.CONFIG
        if runs is None:
            return ExitCode.CONFIG
        if self.shutdown.is_set():
            return ExitCode.OK
        with self._client() as client:
            code = self._register(client, self.device)
            if code is not None:
                return code
            return self._loop(client, runs)

    def _prepare(self) -> Runs | None:
        """How leased trials run here; None (after a clear log line) when they cannot."""
        opts = self.options
        if opts.command:
            argv = parse_command(opts.command)
            check_executable(argv[0])
            return lambda client, specs: [
                run_command_trial(self._command_env(client, argv), spec) for spec in specs
            ]
        if opts.objective:
            objective = load_objective(opts.objective)
            log.info("objective %s loaded", opts.objective)
            return lambda client, specs: [run_trial(self._env(client, objective), s) for s in specs]
        data = self._data(self.device)
        if data is None:
            return None
        objective = ReferenceObjective(data, self.device, self._train)
        if opts.pack is not None:
            return lambda client, specs: self._packs(client, data, objective, specs)
        return lambda client, specs: [run_trial(self._env(client, objective), s) for s in specs]

    def _packs(
        self, client: Client, data: Any, objective: Any, specs: list[TrialSpec]
    ) -> list[TrialEnd]:
        """``--pack``: the leased trials (and refills) trained fused, K per pack."""
        from workers.packing import PackRun, lease_more, pack_size

        refill = lease_more(client, self.worker_id or "", self.options.studies)
        if self._batch == 1:  # --pack auto: K from the first trial's settings, then fill it
            self._batch = pack_size(self.options.pack, specs[0], data, self.device)
            specs = specs + refill(self._batch - len(specs))
        env = self._env(client, objective)
        return PackRun(env, data, self.device, self._batch, refill).run(specs)

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
        self._exit_after_grace(signum)

    def _exit_after_grace(self, signum: int) -> None:
        """Preemption: the running trials checkpoint and are handed back; past ``--grace``
        seconds the process exits regardless (the platform would kill it soon after)."""
        grace = self.options.grace_s

        def expire() -> None:
            log.error("still running %.0fs after the signal (--grace): exiting now", grace)
            os._exit(128 + signum)

        timer = threading.Timer(grace, expire)
        timer.daemon = True
        timer.start()

    def _client(self, timeout: float | None = None) -> Client:
        return Client(
            self.options.server,
            self.options.token,
            timeout or self.options.http_timeout_s,
            stop=self.shutdown,
            user_agent=f"hpo-worker/{hpo.__version__}",
        )

    def _data(self, device: str) -> Any:
        """MNIST on the device, loaded once; None (after a clear log line) when absent."""
        from workers.data import MnistNotFound, load_mnist

        load = self._load_data or functools.partial(load_mnist, download=self.options.download)
        try:
            data = load(self.options.data_dir, device)
        except MnistNotFound as exc:
            log.error("%s", exc)
            return None
        log.info("MNIST loaded on %s", device)
        return data

    def _register(self, client: Client, device: str) -> int | None:
        """Register (waiting for the server); None on success, else the exit code."""
        host = socket.gethostname()
        label = device.replace("cuda:", "gpu") if device.startswith("cuda") else device
        body = WorkerRegistration(
            hostname=host[:255],
            devices=describe_device(device),
            version=hpo.__version__,
            name=(self.options.name or f"{host}:{label}")[:255],
            workloads=self.options.workloads,
            resources=resources_for(device, self.options.gpus_per_trial),
        )
        try:
            info = client.register(body, wait=True, deadline_s=self.options.server_wait_s)
        except ClientAborted:
            return ExitCode.OK
        except ServerUnavailable as exc:
            log.error("server at %s not reachable: %s", self.options.server, exc)
            return ExitCode.CONFIG
        except AuthError as exc:
            log.error("server refused the token (HTTP %d): %s", exc.status_code, exc.detail)
            return ExitCode.CONFIG
        except ApiError as exc:
            log.error("registration refused: %s", exc)
            return ExitCode.CONFIG
        self.worker_id = info.worker_id
        log.info("registered as worker %s (%s) on %s", info.worker_id, body.name, device)
        return None

    def _env(self, client: Client, objective: Callable[[Trial], Any]) -> TrialEnv:
        return TrialEnv(
            client=client,
            make_client=self._heartbeat_client,
            shutdown=self.shutdown,
            objective=objective,
            view=make_progress(),
            probe=self._probe(),
            checkpoint_root=self.options.checkpoint_root,
        )

    def _command_env(self, client: Client, argv: list[str]) -> CommandEnv:
        opts = self.options
        return CommandEnv(
            client=client,
            make_client=self._heartbeat_client,
            shutdown=self.shutdown,
            argv=argv,
            server=opts.server,
            token=opts.token,
            timeout_s=opts.trial_timeout_s,
            grace_s=opts.prune_grace_s,
            param_args=opts.param_args,
            gpus=trial_gpus(self.device, opts.gpus_per_trial),
            data_dir=opts.data_dir,
            probe=self._probe(),
            checkpoint_root=opts.checkpoint_root,
        )

    def _probe(self) -> DeviceProbe:
        """One device probe per process (NVML opened once)."""
        if self._device_probe is None:
            self._device_probe = DeviceProbe(self.device)
        return self._device_probe

    def _heartbeat_client(self) -> Client:
        # A client of its own (httpx clients are not shared across threads here)
        # and a short timeout: a heartbeat that hangs is worth less than the next.
        return self._client(timeout=min(self.options.http_timeout_s, 10.0))

    # ------------------------------------------------------------------ work loop

    def _loop(self, client: Client, runs: Runs) -> int:
        """Lease and run trials until shutdown, ``max_trials`` or ``idle_exit_s``."""
        idle = RetryPolicy(None, None, 0.5, max(0.5, self.options.idle_backoff_s))
        idle_round, idle_since = 0, time.monotonic()
        while not self.shutdown.is_set():
            limit = self.options.max_trials
            if limit is not None and self.trials_done >= limit:
                log.info("ran %d trial(s) (--max-trials): exiting", self.trials_done)
                return ExitCode.OK
            answer = self._lease(client)
            if isinstance(answer, int):
                return answer
            if answer is None or answer.trial is None:
                if self._idle_exit(client, answer, idle_since):
                    return ExitCode.OK
                idle_round += 1
                delay = idle.delay(idle_round, 0.0, _RNG) or 0.0
                if answer is not None and answer.retry_after_s > 0:
                    delay = answer.retry_after_s
                self.shutdown.wait(delay)
                continue
            idle_round = 0
            self._last_idle_reason = None
            ends = runs(client, answer.trials or [answer.trial])
            self.trials_done += len(ends)
            idle_since = time.monotonic()
            if any(end.device_error for end in ends):
                log.error("exiting after a device error so the device is re-initialised")
                return ExitCode.DEVICE
        log.info("worker stopped after %d trial(s)", self.trials_done)
        return ExitCode.OK

    def _idle_exit(self, client: Client, answer: LeaseResponse | None, since: float) -> bool:
        """``--idle-exit``: True after that long without work, or when the studies are done."""
        limit = self.options.idle_exit_s
        if limit is None:
            return False
        idle_for = time.monotonic() - since
        if idle_for >= limit:
            log.info("no work for %.0fs (--idle-exit %g): exiting", idle_for, limit)
            return True
        if answer is not None and self.options.studies and self._studies_done(client):
            log.info("studies %s are finished (--idle-exit): exiting", self.options.studies)
            return True
        return False

    def _studies_done(self, client: Client) -> bool:
        """Every study of ``--studies`` is stopped or out of budget, with nothing running."""
        for name in self.options.studies or []:
            try:
                summary = client.get_study(name)
            except ApiError as exc:
                if exc.status_code == 404:
                    continue  # deleted: nothing left to do for it
                return False
            except ClientError:
                return False
            c = summary.counts
            out_of_budget = summary.state == StudyState.STOPPED or c.total >= summary.max_trials
            if c.running + c.queued + c.waiting + c.paused or not out_of_budget:
                return False
        return True

    def _lease(self, client: Client) -> LeaseResponse | int | None:
        """One lease request: the answer, None (retry later) or an exit code.

        The request id stays the same until an answer arrives: a request the server
        answered while the connection dropped, asked again after the outage, gets the
        trials it already leased (never a second set)."""
        self._request_id = self._request_id or uuid.uuid4().hex
        body = LeaseRequest(
            worker_id=self.worker_id or "unregistered",
            studies=self.options.studies or None,
            wait_s=self.options.wait_s,
            max_trials=self._batch,
            request_id=self._request_id,
        )
        try:
            answer = client.lease(body)
        except (ClientAborted, ServerUnavailable) as exc:  # not answered: same id next time
            if isinstance(exc, ServerUnavailable):
                log.warning("server unavailable, will retry: %s", exc)
            return None
        except AuthError as exc:
            self._request_id = None
            log.error("server refused the token (HTTP %d): %s", exc.status_code, exc.detail)
            return ExitCode.CONFIG
        except ApiError as exc:
            self._request_id = None
            if exc.status_code == 404:  # the server forgot this worker (new database)
                log.warning("server does not know this worker: registering again")
                return self._register(client, self.device)
            log.error("lease refused: %s", exc)
            return None
        self._request_id = None  # answered: the next lease is a new request
        if answer.trial is None and answer.reason != self._last_idle_reason:
            log.info("no work (%s); asking again", answer.reason or "nothing to run")
            self._last_idle_reason = answer.reason
        return answer


_RNG = random.Random()
