"""Keeping leases alive from a background thread, for trials run outside a worker.

:class:`LeaseKeeper` is what a worker's heartbeat thread does, for any number of
leases at once: every ``heartbeat_interval_s`` of the leases it keeps, one
heartbeat each, through its own :class:`hpo.Client` (a client serves one thread).
A prune or stop answer sets the trial's :class:`~hpo.trial.Control` flags, a lease
that is gone (409) drops its trial; a heartbeat that fails to get through is tried
again at the next beat. :mod:`hpo.optuna_study` keeps the trials a notebook asked
for alive with it while they are open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hpo.protocol import HeartbeatRequest, TrialSpec
from hpo.transport import ClientError, LeaseGone
from hpo.trial import Control, trial_label

log = logging.getLogger("hpo.keepalive")

#: How often the thread looks again while it keeps no lease.
IDLE_S = 1.0


class LeaseKeeper:
    """One daemon thread beating every lease it was given (see the module docstring)."""

    def __init__(self, make_client: Callable[[], Any]) -> None:
        self._make_client = make_client
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[TrialSpec, Control]] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, spec: TrialSpec, control: Control) -> None:
        """Keep ``spec``'s lease alive until :meth:`remove` (starts the thread)."""
        with self._lock:
            self._leases[spec.lease_id] = (spec, control)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hpo-leases", daemon=True)
                self._thread.start()

    def remove(self, lease_id: str) -> None:
        """Stop beating a lease (its trial was told)."""
        with self._lock:
            self._leases.pop(lease_id, None)

    def held(self) -> list[str]:
        """The leases kept now."""
        with self._lock:
            return list(self._leases)

    def close(self) -> None:
        """Stop the thread (the leases it kept expire unless told)."""
        self._done.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10.0)

    def _run(self) -> None:
        with self._make_client() as client:
            while not self._done.wait(self._interval()):
                with self._lock:
                    leases = list(self._leases.values())
                for spec, control in leases:
                    if self._done.is_set():
                        return
                    if not beat_once(client, spec, control):
                        self.remove(spec.lease_id)

    def _interval(self) -> float:
        with self._lock:
            intervals = [spec.heartbeat_interval_s for spec, _ in self._leases.values()]
        return max(0.05, min(intervals, default=IDLE_S))


def beat_once(
    client: Any, spec: TrialSpec, control: Control, body: HeartbeatRequest | None = None
) -> bool:
    """One heartbeat (``body``: with telemetry) whose answer ``control`` applies; False
    once the lease is gone (the trial is dropped). Workers and notebook studies use it."""
    try:
        answer = client.heartbeat(spec.lease_id, body or HeartbeatRequest())
    except LeaseGone as exc:
        control.drop_trial(f"lease gone: {exc.detail}")
        return False
    except ClientError as exc:  # the next beat may get through before the lease expires
        log.warning("%s: heartbeat failed: %s", trial_label(spec), exc)
        return True
    except Exception:  # never let the thread die silently
        log.exception("%s: heartbeat error", trial_label(spec))
        return True
    control.apply(answer, "heartbeat")
    return True
