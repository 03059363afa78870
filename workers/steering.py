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
from typing import Any, Protocol

from hpo.client import Client
from hpo.protocol import HeartbeatRequest, TrialSpec
from hpo.transport import ClientError, LeaseGone
from hpo.trial import Control, trial_label

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


class Heartbeat:
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
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{spec.lease_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        interval = max(0.05, self._spec.heartbeat_interval_s)
        with self._make_client() as client:
            while not self._done.wait(interval):
                if not self._beat(client):
                    return

    def _beat(self, client: Client) -> bool:
        """One heartbeat; False once the lease is gone (no point going on)."""
        try:
            sample = self._telemetry() if self._telemetry is not None else None
            body = HeartbeatRequest(progress=self._progress(), telemetry=sample or None)
            answer = client.heartbeat(self._spec.lease_id, body)
        except LeaseGone as exc:
            self._control.drop_trial(f"lease gone: {exc.detail}")
            return False
        except ClientError as exc:  # next beat may get through before the lease expires
            log.warning("%s: heartbeat failed: %s", trial_label(self._spec), exc)
            return True
        except Exception:  # never let the thread die silently
            log.exception("%s: heartbeat error", trial_label(self._spec))
            return True
        self._control.apply(answer, "heartbeat")
        return True
