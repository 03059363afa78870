"""Run one leased trial: settings, training under steering, and the one final call.

:func:`run_trial` is what the daemon calls for each lease. It validates the
settings, trains with hooks that report every epoch, keeps the lease alive from
a background thread and ends the attempt with exactly one of:

==========================  ===================================================
outcome                     call
==========================  ===================================================
completed                   ``complete(state=complete, value=objective)``
diverged                    ``complete(state=complete, value=accuracy at divergence,
                            diagnosis="diverged")``
pruned (server or trainer)  ``complete(state=pruned, value=last reported value)``
bad settings                ``fail(retry=False, reason=<names the field>)``
training error              ``fail(retry=False)``; a CUDA error ``fail(retry=True)``
worker shutting down        ``fail(retry=True, reason="worker shutting down")``
lease gone / study stopped  nothing: the trial is dropped
==========================  ===================================================

Report steps are the trainer's epoch numbers, which start at 1: step ``n``
means "after ``n`` epochs"; pruners see one report per epoch.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo.client import Client
from hpo.protocol import CompleteRequest, FailRequest, FinishState, TrialSpec
from hpo.settings import SettingsError
from hpo.transport import ApiError, ClientError, LeaseGone
from workers.steering import (
    Control,
    Heartbeat,
    NoProgress,
    Progress,
    TrialHooks,
    clean_metrics,
    trial_label,
)

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "worker shutting down"


@dataclass
class TrialEnd:
    """How an attempt ended: ``outcome`` is one word for logs and tests."""

    outcome: str  # completed | pruned | diverged | failed | abandoned | dropped | error
    value: float | None = None
    detail: str = ""
    device_error: bool = False  # the process should exit so its device is re-initialised


# --------------------------------------------------------------------------- finishing


def final_value(spec: TrialSpec, result: Any) -> float | None:
    """The trial's objective: ``result.objective`` for val_accuracy, else the named metric."""
    if spec.objective == "val_accuracy":
        value = result.objective
    else:
        value = result.final.get(spec.objective)
        if value is None and result.history:
            value = result.history[-1].get(spec.objective)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def final_metrics(result: Any) -> dict[str, float | int | str | None]:
    """``result.final`` plus status information, mapped onto the wire's metric types."""
    metrics: dict[str, Any] = {
        "status": result.status,
        "epochs_run": result.epochs_run,
        **result.final,
    }
    if result.diagnosis:
        metrics["diagnosis"] = result.diagnosis
    return clean_metrics(metrics)


def finish(
    client: Client, spec: TrialSpec, result: Any, control: Control, last_value: float | None
) -> TrialEnd:
    """Send the one final call this attempt needs, judged from the result and the flags."""
    label = trial_label(spec)
    if control.drop.is_set():
        log.warning("%s dropped: %s", label, control.drop_reason)
        return TrialEnd("dropped", detail=control.drop_reason)
    if result.status in ("completed", "diverged"):
        return _complete(client, spec, result)
    if control.prune.is_set() or result.status == "pruned":
        body = CompleteRequest(
            state=FinishState.PRUNED, value=last_value, metrics=final_metrics(result)
        )
        _send(client.complete, spec, body)
        log.info("%s pruned after %d epochs (value=%s)", label, result.epochs_run, last_value)
        return TrialEnd("pruned", value=last_value)
    if result.status == "stopped" and control.shutdown.is_set():
        return abandon(client, spec)
    reason = f"trainer ended with unexpected status {result.status!r}"
    fail(client, spec, reason)
    return TrialEnd("failed", detail=reason)


def _complete(client: Client, spec: TrialSpec, result: Any) -> TrialEnd:
    label = trial_label(spec)
    value = final_value(spec, result)
    diverged = result.status == "diverged"
    if value is None:
        reason = f"objective {spec.objective!r} has no finite value (status {result.status})"
        if diverged and result.diagnosis:
            reason = f"{reason}: {result.diagnosis}"
        fail(client, spec, reason, diagnosis="diverged" if diverged else None)
        return TrialEnd("failed", detail=reason)
    body = CompleteRequest(
        state=FinishState.COMPLETE,
        value=value,
        metrics=final_metrics(result),
        diagnosis="diverged" if diverged else None,
    )
    _send(client.complete, spec, body)
    if diverged:
        log.warning("%s diverged (value=%.4f): %s", label, value, result.diagnosis)
        return TrialEnd("diverged", value=value, detail=result.diagnosis or "")
    log.info(
        "%s completed: %s=%.4f test_acc=%s in %.1fs",
        label,
        spec.objective,
        value,
        _fmt(result.final.get("test_accuracy")),
        result.final.get("total_time_s", float("nan")),
    )
    return TrialEnd("completed", value=value)


def fail(
    client: Client,
    spec: TrialSpec,
    reason: str,
    *,
    retry: bool = False,
    diagnosis: str | None = None,
) -> None:
    """Fail (retry=False) or abandon (retry=True) the attempt; one log line."""
    body = FailRequest(reason=reason[:2000], retry=retry, diagnosis=diagnosis)
    _send(client.fail, spec, body)
    verb = "abandoned" if retry else "failed"
    log.log(
        logging.INFO if retry else logging.WARNING, "%s %s: %s", trial_label(spec), verb, reason
    )


def abandon(client: Client, spec: TrialSpec) -> TrialEnd:
    """Give the trial back so it is re-run at once (SIGTERM)."""
    fail(client, spec, SHUTDOWN_REASON, retry=True)
    return TrialEnd("abandoned", detail=SHUTDOWN_REASON)


def _send(call: Callable[[str, Any], Any], spec: TrialSpec, body: Any) -> None:
    """complete/fail: the client retries until delivered; a 409 means the lease is gone."""
    try:
        call(spec.lease_id, body)
    except LeaseGone as exc:
        log.warning(
            "%s: lease gone before the result was delivered: %s", trial_label(spec), exc.detail
        )
    except ApiError as exc:
        log.error("%s: server refused the result: %s", trial_label(spec), exc)
    except ClientError as exc:  # only after the finish policy's long deadline
        log.error("%s: result NOT delivered: %s", trial_label(spec), exc)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- one attempt


@dataclass
class TrialEnv:
    """What every attempt of one worker process shares.

    ``configure(settings, seed)`` builds the trainer config (raises SettingsError)
    and ``train(config, data, device, hooks)`` runs it; both are injectable so the
    daemon's logic can be tested without training.
    """

    client: Client
    make_client: Callable[[], Client]
    device: Any
    data: Any
    shutdown: threading.Event
    configure: Callable[[dict[str, Any], int], Any]
    train: Callable[..., Any]
    view: Progress = field(default_factory=NoProgress)


def run_trial(env: TrialEnv, spec: TrialSpec) -> TrialEnd:
    """Run one leased attempt end to end; never raises for a trial-level problem."""
    label = trial_label(spec)
    log.info(
        "leased %s attempt %d (lease %s) params=%s",
        label,
        spec.attempt,
        spec.lease_id,
        _compact(spec.params),
    )
    if env.shutdown.is_set():
        return abandon(env.client, spec)
    try:
        config = env.configure({**spec.fixed, **spec.params}, spec.seed)
    except SettingsError as exc:
        return _bad_settings(env.client, spec, exc)
    control = Control(env.shutdown)
    epochs = int(getattr(config, "epochs", 1))
    hooks = TrialHooks(env.client, spec, control, epochs, env.view)
    env.view.start(label, epochs)
    try:
        with Heartbeat(env.make_client, spec, control, hooks.progress):
            result = env.train(config, env.data, env.device, hooks)
    except Exception as exc:  # noqa: BLE001 - every training error ends the attempt
        return _training_error(env.client, spec, control, exc)
    finally:
        env.view.stop()
    return finish(env.client, spec, result, control, hooks.last_value)


def _bad_settings(client: Client, spec: TrialSpec, exc: SettingsError) -> TrialEnd:
    reason = f"bad setting {exc.field!r}: {exc}"
    fail(client, spec, reason, diagnosis="bad_settings")
    return TrialEnd("failed", detail=reason)


def _training_error(client: Client, spec: TrialSpec, control: Control, exc: Exception) -> TrialEnd:
    """Classify an exception from the trainer and send the matching fail."""
    if control.drop.is_set():
        log.warning("%s dropped: %s (then %s)", trial_label(spec), control.drop_reason, exc)
        return TrialEnd("dropped", detail=control.drop_reason)
    if isinstance(exc, SettingsError):
        return _bad_settings(client, spec, exc)
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        fail(client, spec, f"out of memory: {text}", diagnosis="out_of_memory")
        return TrialEnd("failed", detail=text)
    if _is_device_error(text):  # the CUDA context may be unusable: re-run elsewhere
        log.error("%s: device error: %s", trial_label(spec), text)
        fail(client, spec, f"device error: {text}", retry=True, diagnosis="device_error")
        return TrialEnd("error", detail=text, device_error=True)
    log.exception("%s: training raised", trial_label(spec))
    fail(client, spec, f"training error: {text}", diagnosis="error")
    return TrialEnd("failed", detail=text)


def _is_device_error(text: str) -> bool:
    markers = ("CUDA error", "CUDNN_STATUS", "CUBLAS_STATUS", "device-side assert", "NCCL")
    return any(marker in text for marker in markers)


def _compact(params: dict[str, Any]) -> str:
    parts = []
    for name, value in params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else repr(value)
        parts.append(f"{name}={shown}")
    return "{" + ", ".join(parts) + "}"
