"""Steering a running trial: trainer hooks, the heartbeat thread, shared stop flags.

The trainer polls :meth:`TrialHooks.should_stop` at every batch boundary and
calls :meth:`TrialHooks.on_epoch` after each epoch. Three things can ask it to
stop, all through one :class:`Control`: the server (a report or heartbeat answer
``prune`` or ``stop``, or a 409 "lease gone"), and the daemon's signal handler
(SIGTERM/SIGINT). Report steps are the trainer's epoch numbers, starting at 1.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpo.client import Client
from hpo.protocol import (
    MAX_METRIC_NAME,
    MAX_METRICS,
    Action,
    ActionResponse,
    HeartbeatRequest,
    ReportRequest,
    TrialSpec,
)
from hpo.transport import ClientError, LeaseGone

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


@dataclass
class Control:
    """Flags shared by the hooks, the heartbeat thread and the signal handler."""

    shutdown: threading.Event
    prune: threading.Event = field(default_factory=threading.Event)
    drop: threading.Event = field(default_factory=threading.Event)
    drop_reason: str = ""

    def should_stop(self) -> bool:
        """True once the trainer must stop at the next batch boundary."""
        return self.shutdown.is_set() or self.prune.is_set() or self.drop.is_set()

    def apply(self, answer: ActionResponse, source: str) -> None:
        """Act on a heartbeat/report answer: prune or stop set a flag."""
        if answer.action == Action.PRUNE and not self.prune.is_set():
            log.info("server asks to prune (%s)", source)
            self.prune.set()
        elif answer.action == Action.STOP:
            self.drop_trial(f"server says stop ({source}): {answer.message or 'no reason'}")

    def drop_trial(self, reason: str) -> None:
        """Stop training and end the attempt without complete/fail."""
        if not self.drop.is_set():
            self.drop_reason = reason
            self.drop.set()


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float | int | str | None]:
    """Map metrics onto what the wire accepts: NaN/Inf -> None, bool -> int, else str."""
    out: dict[str, float | int | str | None] = {}
    for name, value in metrics.items():
        if len(out) >= MAX_METRICS:
            break
        key = str(name)[:MAX_METRIC_NAME]
        if not key:
            continue
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int) or value is None:
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else None
        else:
            out[key] = str(value)[:1000]
    return out


def trial_label(spec: TrialSpec) -> str:
    """``study#number`` for log lines."""
    return f"{spec.study_name}#{spec.trial_number}"


class TrialHooks:
    """Trainer hooks: report each epoch, and stop when the server or a signal says so."""

    def __init__(
        self, client: Client, spec: TrialSpec, control: Control, epochs: int, view: Progress
    ) -> None:
        self.client = client
        self.spec = spec
        self.control = control
        self.epochs = epochs
        self.view = view
        self.epochs_done = 0
        self.last_value: float | None = None

    def progress(self) -> float:
        """Fraction of the epochs done (sent with heartbeats)."""
        return min(1.0, self.epochs_done / max(self.epochs, 1))

    def should_stop(self) -> bool:
        """Polled by the trainer at every batch boundary."""
        return self.control.should_stop()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report the epoch; False (prune now) when the server prunes or drops the trial."""
        self.epochs_done = epoch
        self.view.advance(epoch, metrics)
        log.info(
            "%s epoch %d/%d val_acc=%.4f loss=%.4f %.1fs/epoch",
            trial_label(self.spec),
            epoch,
            self.epochs,
            metrics.get("val_accuracy", float("nan")),
            metrics.get("train_loss", float("nan")),
            metrics.get("epoch_time_s", float("nan")),
        )
        value = metrics.get(self.spec.objective)
        if not isinstance(value, int | float) or not math.isfinite(value):
            log.warning(
                "%s: objective %r is not a finite metric; epoch not reported",
                trial_label(self.spec),
                self.spec.objective,
            )
            return not (self.control.prune.is_set() or self.control.drop.is_set())
        self._report(epoch, float(value), metrics)
        return not (self.control.prune.is_set() or self.control.drop.is_set())

    def _report(self, epoch: int, value: float, metrics: dict[str, float]) -> None:
        body = ReportRequest(step=epoch, value=value, metrics=clean_metrics(metrics))
        try:
            answer = self.client.report(self.spec.lease_id, body)
        except LeaseGone as exc:
            self.control.drop_trial(f"lease gone: {exc.detail}")
            return
        except ClientError as exc:  # server away or report refused: training goes on
            log.warning("%s: report of epoch %d lost: %s", trial_label(self.spec), epoch, exc)
            return
        self.last_value = value
        self.control.apply(answer, "report")


class Heartbeat:
    """Background thread that sends a heartbeat every ``spec.heartbeat_interval_s``."""

    def __init__(
        self,
        make_client: Callable[[], Client],
        spec: TrialSpec,
        control: Control,
        progress: Callable[[], float | None],
    ) -> None:
        self._make_client = make_client
        self._spec = spec
        self._control = control
        self._progress = progress
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
            body = HeartbeatRequest(progress=self._progress())
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
