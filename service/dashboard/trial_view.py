"""One trial in detail: settings, per-epoch metrics, diagnosis, attempts and workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sqlalchemy.orm import Session

from service.core.errors import TrialNotFound
from service.dashboard import queries
from service.dashboard.charts_base import layout
from service.dashboard.frame import StudyMeta, as_utc, decode_value, distribution
from service.dashboard.overview import diagnosis
from service.storage.models import LeaseRecord

METRIC_COLUMNS = (
    "train_loss", "val_loss", "val_accuracy", "lr", "grad_norm", "epoch_time_s",
    "samples_per_s", "peak_memory_mb",
)  # fmt: skip


@dataclass
class TrialDetail:
    number: int
    trial_id: int
    state: str
    value: float | None
    start: Any
    complete: Any
    params: dict[str, Any]
    settings: dict[str, Any]
    worker: str | None = None
    attempts: int | None = None
    diagnosis: str | None = None
    fail_reason: str | None = None
    leases: list[LeaseRecord] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


def load(session: Session, meta: StudyMeta, number: int) -> TrialDetail:
    row = queries.trial_by_number(session, meta.study_id, number)
    if row is None:
        raise TrialNotFound(f"study {meta.study_id} has no trial {number}", "number")
    tid, _, state, start, complete = row
    params = {
        name: distribution(djson).to_external_repr(internal)
        for _, name, internal, djson in queries.params_of(session, [tid])
    }
    value = queries.values_of(session, [tid]).get(tid)
    detail = TrialDetail(
        number, tid, getattr(state, "name", str(state)), decode_value(value, None),
        as_utc(start), as_utc(complete), params,
        meta.fixed | {meta.setting_of(k): v for k, v in params.items()},
    )  # fmt: skip
    detail.epochs = [
        {"epoch": step, "value": v, **m}
        for _, _, step, v, m in queries.metric_rows(session, meta.study_id, trial_ids=[tid])
    ]
    detail.epochs.sort(key=lambda e: e["epoch"])
    seen = {k for e in detail.epochs for k in e}
    detail.columns = [c for c in METRIC_COLUMNS if c in seen]
    detail.columns += sorted(seen - set(detail.columns) - {"epoch", "value"})
    _attach_service(session, detail)
    return detail


def _attach_service(session: Session, detail: TrialDetail) -> None:
    record = queries.service_trials(session, [detail.trial_id]).get(detail.trial_id)
    last_epoch = detail.epochs[-1]["epoch"] if detail.epochs else None
    detail.diagnosis = diagnosis(detail.state, record, last_epoch)
    if record is None:
        return
    detail.worker, detail.attempts = record.worker_id, record.attempts
    detail.fail_reason = record.fail_reason
    detail.leases = queries.trial_leases(session, record.id)


def figure(detail: TrialDetail) -> go.Figure | None:
    """Loss and accuracy per epoch of one trial (None before the first report)."""
    if not detail.epochs:
        return None
    epochs = [e["epoch"] for e in detail.epochs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "accuracy"])
    for key, col in (("train_loss", 1), ("val_loss", 1), ("val_accuracy", 2)):
        if any(e.get(key) is not None for e in detail.epochs):
            ys = [e.get(key) for e in detail.epochs]
            fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=key), 1, col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    return layout(fig, f"Trial {detail.number}: per-epoch metrics")
