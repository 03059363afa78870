"""Steering a running trial from the worker: the heartbeat thread and the progress view.

The heartbeat thread keeps the lease alive and acts on the server's answers
through the trial's :class:`hpo.trial.Control` (``prune`` or ``stop``); the
trial's own methods (report, should_prune, suggest) and the worker's signal
handler use the same flags.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, Self

from hpo.client import Client
from hpo.keepalive import beat_once
from hpo.protocol import HeartbeatRequest, TrialSpec
from hpo.trial import Control

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Where per-epoch progress is shown (a rich bar on a TTY, else nothing)."""

    def start(self, label: str, total: int) -> None: ...
    def advance(self, epoch: int, metrics: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    """Progress that shows nothing (stderr is not a terminal)."""

    def start(self, label: str, total: int) -> None:
        return None

    def advance(self, epoch: int, metrics: dict[str, Any]) -> None:
        return None

    def stop(self) -> None:
        return None


class _BeatThread:
    """A daemon thread that runs ``_run`` from the ``with`` block's start; its end sets
    ``_done`` and joins the thread (for up to ``join_s`` seconds)."""

    def __init__(self, name: str, join_s: float) -> None:
        self._done = threading.Event()
        self._join_s = join_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=self._join_s)

    def _run(self) -> None:
        raise NotImplementedError


class Heartbeat(_BeatThread):
    """Background thread that sends a heartbeat every ``spec.heartbeat_interval_s``."""

    def __init__(
        self,
        make_client: Callable[[], Client],
        spec: TrialSpec,
        control: Control,
        progress: Callable[[], float | None],
        telemetry: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._make_client = make_client
        self._spec = spec
        self._control = control
        self._progress = progress
        self._telemetry = telemetry
        super().__init__(f"heartbeat-{spec.lease_id}", join_s=5.0)

    def _run(self) -> None:
        interval = max(0.05, self._spec.heartbeat_interval_s)
        with self._make_client() as client:
            while not self._done.wait(interval):
                if not self._beat(client):
                    return

    def _beat(self, client: Client) -> bool:
        """One heartbeat; False once the lease is gone (no point going on)."""
        sample = self._telemetry() if self._telemetry is not None else None
        body = HeartbeatRequest(progress=self._progress(), telemetry=sample or None)
        return beat_once(client, self._spec, self._control, body)


class HeartbeatGroup(_BeatThread):
    """One background thread keeping many leases alive (the members of a fused pack).

    Each lease is beaten every ``heartbeat_interval_s`` of its spec; a 409 drops
    that trial alone (its Control), a prune or stop answer sets its flags, exactly
    as :class:`Heartbeat` does for one trial.
    """

    def __init__(
        self,
        make_client: Callable[[], Client],
        telemetry: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._make_client = make_client
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[TrialSpec, Control, Callable[[], float | None]]] = {}
        super().__init__("heartbeats", join_s=10.0)

    def add(self, spec: TrialSpec, control: Control, progress: Callable[[], float | None]) -> None:
        """Start beating ``spec``'s lease."""
        with self._lock:
            self._leases[spec.lease_id] = (spec, control, progress)

    def remove(self, lease_id: str) -> None:
        """Stop beating a lease (its trial ended)."""
        with self._lock:
            self._leases.pop(lease_id, None)

    def _run(self) -> None:
        with self._make_client() as client:
            while not self._done.wait(self._interval()):
                with self._lock:
                    leases = list(self._leases.values())
                sample = self._telemetry() if self._telemetry is not None else None
                for spec, control, progress in leases:
                    if self._done.is_set():
                        return
                    body = HeartbeatRequest(progress=progress(), telemetry=sample or None)
                    if not beat_once(client, spec, control, body):
                        self.remove(spec.lease_id)

    def _interval(self) -> float:
        with self._lock:
            intervals = [spec.heartbeat_interval_s for spec, _, _ in self._leases.values()]
        return max(0.05, min(intervals, default=1.0))
