"""Run an objective on a leased trial and end the attempt with exactly one call.

Shared by the worker (``hpo worker --objective``, and the built-in trainer) and
by training processes started with ``hpo worker --command`` (``hpo.run``), so
an objective's result means the same wherever it runs:

====================================  =============================================
the objective                         the call
====================================  =============================================
returns a number                      ``complete(value)``
returns N numbers (N objectives)      ``complete(values)``
raises TrialPruned (hpo's, Optuna's)  ``complete(state=pruned, value=last report)``
returns anything else                 ``fail`` naming what it returned
raises a bad setting (SettingsError)  ``fail(diagnosis=bad_settings)`` naming the field
raises a CUDA / device error          ``fail(retry=True)``: run it again elsewhere
raises anything else                  ``fail`` with the exception and its message
stops (lease gone, study stopped)     nothing: the trial is dropped
stops (worker shutting down)          ``fail(retry=True)``: re-queued at once
====================================  =============================================
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hpo.protocol import CompleteRequest, FailRequest, FinishResponse, FinishState
from hpo.settings import SettingsError
from hpo.transport import ApiError, ClientError, LeaseGone
from hpo.trial import Trial, TrialPruned, TrialStopped, clean_metrics

log = logging.getLogger("hpo.running")

SHUTDOWN_REASON = "worker shutting down"
_DEVICE_MARKERS = ("CUDA error", "CUDNN_STATUS", "CUBLAS_STATUS", "device-side assert", "NCCL")


class Ending(StrEnum):
    """How an attempt ended (one word for logs and tests)."""

    COMPLETED = "completed"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    FAILED = "failed"
    ABANDONED = "abandoned"
    DROPPED = "dropped"
    ERROR = "error"  # a device error: the worker should restart its process


@dataclass
class Result:
    """What calling the objective gave, before anything was sent."""

    ending: Ending
    values: list[float] | None = None
    reason: str = ""
    diagnosis: str | None = None
    retry: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    preempted: bool = False  # given back at a SIGTERM: not counted as a retry


def call_objective(trial: Trial, objective: Callable[[Trial], Any]) -> Result:
    """Call ``objective(trial)`` and judge what it returned or raised (never raises)."""
    try:
        returned = objective(trial)
    except TrialStopped as exc:
        return Result(Ending.DROPPED, reason=str(exc))
    except BaseException as exc:  # every objective error ends the attempt
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return _raised(trial, exc)
    return _returned(trial, returned)


def _raised(trial: Trial, exc: BaseException) -> Result:
    if is_pruned(exc):
        values = None if trial.last_value is None else [trial.last_value]
        return Result(Ending.PRUNED, values=values)
    if isinstance(exc, SettingsError):
        reason = f"bad setting {exc.field!r}: {exc}"
        return Result(Ending.FAILED, reason=reason, diagnosis="bad_settings")
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return Result(Ending.FAILED, reason=f"out of memory: {text}", diagnosis="out_of_memory")
    if any(marker in text for marker in _DEVICE_MARKERS):  # the device may be unusable
        reason = f"device error: {text}"
        return Result(Ending.ERROR, reason=reason, diagnosis="device_error", retry=True)
    tail = "".join(traceback.format_exception(exc)[-6:])[-4000:]
    return Result(Ending.FAILED, reason=text, diagnosis="error", attrs={"traceback": tail})


def is_pruned(exc: BaseException) -> bool:
    """hpo's TrialPruned, or Optuna's (not imported: it may not be installed)."""
    if isinstance(exc, TrialPruned):
        return True
    return type(exc).__name__ == "TrialPruned" and type(exc).__module__.startswith("optuna")


def _returned(trial: Trial, returned: Any) -> Result:
    wanted = len(trial.spec.objectives) or 1
    values = _numbers(returned)
    if values is None or len(values) != wanted:
        kind = f"{type(returned).__name__} {returned!r}"[:200]
        what = (
            "a number" if wanted == 1 else f"{wanted} numbers ({', '.join(trial.spec.objectives)})"
        )
        return Result(Ending.FAILED, reason=f"the objective returned {kind}; expected {what}")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        reason = f"the objective returned a non-finite value {bad[0]}"
        return Result(Ending.FAILED, reason=reason, diagnosis=trial.diagnosis)
    ending = Ending.DIVERGED if trial.diagnosis == "diverged" else Ending.COMPLETED
    return Result(ending, values=values, diagnosis=trial.diagnosis)


def _numbers(value: Any) -> list[float] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy/torch scalar
        return _numbers(value.item())
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [_numbers(v) for v in value]
        if all(item is not None and len(item) == 1 for item in items):
            return [item[0] for item in items]  # type: ignore[index]
    return None


# --------------------------------------------------------------------------- the one call


def send_result(client: Any, trial: Trial, result: Result) -> FinishResponse | None:
    """The one final call for ``result`` (nothing for a dropped trial)."""
    if result.ending == Ending.DROPPED:
        return None
    trial.flush_checkpoints()  # the lease must outlive the last checkpoint's upload
    spec, attrs = trial.spec, {**trial.user_attrs, **result.attrs}
    metrics = clean_metrics(trial.metrics)
    if result.ending in (Ending.COMPLETED, Ending.DIVERGED):
        values = result.values or []
        body = CompleteRequest(
            value=values[0],
            values=values,
            metrics=metrics,
            diagnosis=result.diagnosis,
            user_attrs=attrs,
            telemetry=trial.telemetry,
        )
        return deliver(client.complete, spec.lease_id, body, trial.label)
    if result.ending == Ending.PRUNED:
        value = result.values[0] if result.values else None
        body = CompleteRequest(
            state=FinishState.PRUNED,
            value=value,
            metrics=metrics,
            user_attrs=attrs,
            telemetry=trial.telemetry,
        )
        return deliver(client.complete, spec.lease_id, body, trial.label)
    fail = FailRequest(
        reason=(result.reason or "failed")[:2000],
        retry=result.retry or result.ending == Ending.ABANDONED,
        preempted=result.preempted,
        diagnosis=result.diagnosis,
        user_attrs=attrs,
        telemetry=trial.telemetry,
    )
    return deliver(client.fail, spec.lease_id, fail, trial.label)


def deliver(
    call: Callable[[str, Any], FinishResponse], lease_id: str, body: Any, label: str
) -> FinishResponse | None:
    """complete/fail: the client retries until delivered; a 409 means the lease is gone."""
    try:
        return call(lease_id, body)
    except LeaseGone as exc:
        log.warning("%s: lease gone before the result was delivered: %s", label, exc.detail)
    except ApiError as exc:
        log.error("%s: server refused the result: %s", label, exc)
    except ClientError as exc:  # only after the finish policy's long deadline
        log.error("%s: result NOT delivered: %s", label, exc)
    return None


def abandoned(reason: str = SHUTDOWN_REASON, preempted: bool = False) -> Result:
    """Give the attempt back so the trial runs again at once (the worker is stopping;
    ``preempted``: by a SIGTERM, which is not counted against the trial's retries)."""
    return Result(Ending.ABANDONED, reason=reason, retry=True, preempted=preempted)


def paused(trial: Trial) -> Result:
    """A schedule paused the trial (PBT segment end, ASHA rung): commit its checkpoint
    folder, then hand the attempt back (not counted as a retry); the server keeps it
    paused or finishes the segment."""
    try:
        trial.commit_checkpoint()
    except Exception as exc:  # noqa: BLE001 - handing the lease back matters more
        log.warning("%s: checkpoint at the pause failed: %s", trial.label, exc)
    return abandoned("paused by the study's schedule", preempted=True)


def preempted(trial: Trial) -> Result:
    """The worker was told to stop (SIGTERM): commit the trial's checkpoint folder as it
    is now, then give the attempt back as preempted."""
    try:
        trial.commit_checkpoint()
    except Exception as exc:  # noqa: BLE001 - handing the lease back matters more
        log.warning("%s: checkpoint at preemption failed: %s", trial.label, exc)
    return abandoned("worker preempted (SIGTERM)", preempted=True)
