"""Per-trial findings, computed on the server when a trial finishes.

The metrics a worker reported every step (``hpo_trial_metrics``) are the
trial's history; :func:`hpo.findings.check_trial` reads it (with the trainer's
divergence message when there is one) and the findings are stored with the
trial row. Done on the server, every trial gets the same checks, whoever ran
it: the built-in trainer or an own objective that reports the same metrics.
A failure here is logged and never fails the finish itself.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from hpo.findings import check_trial
from service.core.context import AppContext
from service.storage.models import TrialMetric, TrialRecord

log = logging.getLogger("hpo.findings")


def throughput(history: list[dict[str, Any]]) -> dict[str, float]:
    """Mean samples/s and the share of time spent waiting on data, from the reports."""
    out: dict[str, float] = {}
    rates = [h["samples_per_s"] for h in history if _number(h.get("samples_per_s"))]
    if rates:
        out["samples_per_s"] = sum(rates) / len(rates)
    waits = [(h["data_time_s"], h["epoch_time_s"]) for h in history
             if _number(h.get("data_time_s")) and _number(h.get("epoch_time_s"))]  # fmt: skip
    total = sum(t for _, t in waits)
    if waits and total > 0:
        out["data_wait_share"] = sum(w for w, _ in waits) / total
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_findings(
    ctx: AppContext,
    row_id: int,
    optuna_trial_id: int,
    user_attrs: dict[str, Any],
    telemetry: dict[str, float] | None = None,
) -> None:
    """Check the trial's reported history and store what was found, with its telemetry
    (the worker's device figures plus samples/s and data-wait share from the history;
    never raises)."""
    try:
        with ctx.db.session() as session:
            rows = session.execute(
                select(TrialMetric.step, TrialMetric.metrics)
                .where(TrialMetric.optuna_trial_id == optuna_trial_id)
                .order_by(TrialMetric.step)
            ).all()
            history = [{"epoch": step, **(metrics or {})} for step, metrics in rows]
            message = (user_attrs.get("final_metrics") or {}).get("diagnosis")
            status = "diverged" if user_attrs.get("diagnosis") == "diverged" else None
            found = [f.model_dump(mode="json") for f in check_trial(history, status, message)]
            figures = {**(telemetry or {}), **throughput(history)} or None
            session.execute(
                update(TrialRecord)
                .where(TrialRecord.id == row_id)
                .values(findings=found, telemetry=figures)
            )
    except Exception:  # noqa: BLE001 - findings are advice; the trial is finished anyway
        log.warning("could not record the findings of trial %d", optuna_trial_id, exc_info=True)
