"""Run one leased trial in this process: the objective under steering, then one final call.

:func:`run_trial` is what the daemon calls for each lease of an objective
worker (the built-in trainer included). It builds the :class:`hpo.Trial`,
keeps the lease alive from a background thread, calls the objective and ends
the attempt with exactly one call (see :mod:`hpo.running` for the table). A
worker that is shutting down gives the trial back (``fail(retry=True)``) so it
runs again elsewhere at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.client import Client
from hpo.protocol import TrialOutcome, TrialSpec
from hpo.running import (
    Ending,
    Result,
    abandoned,
    call_objective,
    paused,
    preempted,
    send_result,
)
from hpo.trial import Control, Trial, new_trial, trial_label
from workers.steering import Heartbeat, NoProgress, Progress
from workers.telemetry import DeviceProbe, Telemetry

log = logging.getLogger(__name__)


@dataclass
class TrialEnd:
    """How an attempt ended: ``outcome`` is one word for logs and tests."""

    outcome: Ending
    value: float | None = None
    detail: str = ""

    @property
    def device_error(self) -> bool:
        """The process should exit so its device is re-initialised."""
        return self.outcome == Ending.ERROR


@dataclass
class TrialEnv:
    """What every attempt of one worker process shares."""

    client: Client
    make_client: Callable[[], Client]
    shutdown: threading.Event
    objective: Callable[[Trial], Any]
    view: Progress = field(default_factory=NoProgress)
    probe: DeviceProbe | None = None  # samples device utilisation while a trial runs
    checkpoint_root: str | None = None  # where attempts' checkpoint folders go (None: temp)


def run_trial(env: TrialEnv, spec: TrialSpec) -> TrialEnd:
    """Run one leased attempt end to end; never raises for a trial-level problem."""
    label = trial_label(spec)
    log.info(
        "leased %s attempt %d (lease %s) params=%s",
        label,
        spec.attempt,
        spec.lease_id,
        compact(spec.params),
    )
    control = Control(env.shutdown)
    trial = new_trial(env.client, spec, control, on_report=env.view.advance)
    if env.shutdown.is_set():
        return finish(env.client, trial, abandoned(preempted=True))
    with checkpoint_folder(env.checkpoint_root, spec) as folder:
        step = trial.attach_checkpoints(folder)
        if step is not None:
            log.info("%s resumes from its checkpoint of step %d", label, step)
        return run_attempt(env, trial, control)


def run_attempt(env: TrialEnv, trial: Trial, control: Control) -> TrialEnd:
    """The objective under heartbeat and telemetry, then the attempt's one final call."""
    spec = trial.spec
    env.view.start(trial.label, int(spec.settings.get("epochs") or 0))
    try:
        with Telemetry(env.probe or DeviceProbe("cpu")) as telemetry:
            beat = Heartbeat(
                env.make_client, spec, control, lambda: _progress(trial), telemetry.latest
            )
            with beat:
                result = call_objective(trial, env.objective)
        trial.telemetry = telemetry.summary()
    finally:
        env.view.stop()
    if env.shutdown.is_set() and result.ending in (Ending.DROPPED, Ending.PRUNED):
        result = preempted(trial)  # our own SIGTERM: checkpoint, give it back (not pruned)
    elif control.pause.is_set() and result.ending in (Ending.DROPPED, Ending.PRUNED):
        result = paused(trial)  # the schedule's pause: checkpoint, give it back
    elif control.drop.is_set():
        result = Result(Ending.DROPPED, reason=control.drop_reason)
    return finish(env.client, trial, result)


@contextlib.contextmanager
def checkpoint_folder(root: str | None, spec: TrialSpec) -> Iterator[Path]:
    """A fresh local folder for one attempt's checkpoints, removed afterwards (what matters
    was committed to the server)."""
    folder = new_checkpoint_folder(root, spec)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_checkpoint_folder(root: str | None, spec: TrialSpec) -> Path:
    """A fresh local folder for one attempt's checkpoints (the caller removes it)."""
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"hpo-trial-{spec.trial_id}-", dir=root or None))


def finish(client: Client, trial: Trial, result: Result) -> TrialEnd:
    """Send the result's one call and log one line for it."""
    label, value = trial.label, (result.values or [None])[0]
    if result.ending == Ending.DROPPED:
        log.warning("%s dropped: %s", label, result.reason)
        return TrialEnd(Ending.DROPPED, detail=result.reason)
    answer = send_result(client, trial, result)
    if answer is not None and _already_finished(result, answer.state):
        # A training process finished the trial itself (hpo.run): the server answered
        # the stored result instead of applying ours.
        log.info("%s finished by its process: %s value=%s", label, answer.state, _fmt(answer.value))
        return TrialEnd(_ENDING_OF[answer.state], value=answer.value)
    if result.ending in (Ending.FAILED, Ending.ERROR, Ending.ABANDONED):
        level = logging.INFO if result.ending == Ending.ABANDONED else logging.WARNING
        log.log(level, "%s %s: %s", label, result.ending, result.reason)
    else:
        shown = {
            k: trial.metrics[k] for k in ("test_accuracy", "total_time_s") if k in trial.metrics
        }
        log.info("%s %s: value=%s %s", label, result.ending, _fmt(value), compact(shown))
    return TrialEnd(result.ending, value=value, detail=result.reason)


_ENDING_OF = {
    TrialOutcome.COMPLETE: Ending.COMPLETED,
    TrialOutcome.PRUNED: Ending.PRUNED,
    TrialOutcome.FAIL: Ending.FAILED,
    TrialOutcome.QUEUED: Ending.ABANDONED,
    TrialOutcome.PAUSED: Ending.ABANDONED,
}


def _already_finished(result: Result, state: TrialOutcome) -> bool:
    """True when the server's answer is not what our call asked for (it kept a result)."""
    if result.retry or result.ending == Ending.ABANDONED:  # gave back: queued, or failed
        # queued, paused (a schedule), or failed when retries ran out; a segment's end
        # (PBT) is completed by the server
        return state not in (TrialOutcome.QUEUED, TrialOutcome.PAUSED, TrialOutcome.FAIL)
    asked = {
        Ending.COMPLETED: TrialOutcome.COMPLETE,
        Ending.DIVERGED: TrialOutcome.COMPLETE,
        Ending.PRUNED: TrialOutcome.PRUNED,
    }.get(result.ending, TrialOutcome.FAIL)
    return state != asked


def _progress(trial: Trial) -> float | None:
    epochs = trial.settings.get("epochs")
    if not isinstance(epochs, int) or epochs <= 0 or trial.last_step is None:
        return None
    return min(1.0, trial.last_step / epochs)


def compact(params: dict[str, Any]) -> str:
    """``{lr=0.01, optimizer='adam'}`` for log lines."""
    parts = [f"{k}={_fmt(v) if isinstance(v, float) else repr(v)}" for k, v in params.items()]
    return "{" + ", ".join(parts) + "}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
