"""Per-trial findings, computed on the server when a trial finishes.

The metrics a worker reported every step (``hpo_trial_metrics``) are the
trial's history; :func:`hpo.findings.check_trial` reads it (with the trainer's
divergence message when there is one) and the findings are stored with the
trial row. Done on the server, every trial gets the same checks, whoever ran
it: the built-in trainer or an own objective that reports the same metrics.
They are written in the same transaction that records the trial as finished.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.findings import check_trial
from service.storage.models import TrialMetric

log = logging.getLogger("hpo.findings")


def throughput(history: list[dict[str, Any]]) -> dict[str, float]:
    """Mean samples/s and the share of time spent waiting on data, from the reports."""
    out: dict[str, float] = {}
    rates = [h["samples_per_s"] for h in history if _number(h.get("samples_per_s"))]
    if rates:
        out["samples_per_s"] = sum(rates) / len(rates)
    waits = [
        (h["data_time_s"], h["epoch_time_s"])
        for h in history
        if _number(h.get("data_time_s")) and _number(h.get("epoch_time_s"))
    ]
    total = sum(t for _, t in waits)
    if waits and total > 0:
        out["data_wait_share"] = sum(w for w, _ in waits) / total
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def diagnostics_without_commit(
    session: Session,
    optuna_trial_id: int,
    user_attrs: dict[str, Any],
    telemetry: dict[str, float] | None = None,
) -> dict[str, Any]:
    """``findings`` and ``telemetry`` for the finished trial's row: the checks over its
    reported history (with the trainer's divergence message), the worker's device
    figures plus samples/s and the data-wait share. Advice only: an error in the
    checks is logged and leaves them out."""
    rows = session.execute(
        select(TrialMetric.step, TrialMetric.metrics)
        .where(TrialMetric.optuna_trial_id == optuna_trial_id)
        .order_by(TrialMetric.step)
    ).all()
    history = [{"epoch": step, **(metrics or {})} for step, metrics in rows]
    figures = {**(telemetry or {}), **throughput(history)} or None
    try:
        final = user_attrs.get("final_metrics") or {}
        message = final.get("diagnosis")
        status = "diverged" if user_attrs.get("diagnosis") == "diverged" else None
        checked = check_trial(history, status, message, final=final)
        found = [f.model_dump(mode="json") for f in checked]
    except Exception:  # findings are advice; the trial finishes anyway
        log.warning("could not check trial %d", optuna_trial_id, exc_info=True)
        found = []
    return {"findings": found, "telemetry": figures}
