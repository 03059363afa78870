"""One trial in detail: the API's ``TrialDetail`` plus what the trial page adds to it
(settings by name, an epochs table, a short diagnosis, the per-epoch chart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sqlalchemy.orm import Session

from hpo.schemas import ShownState, TrialDetail
from hpo.settings import DEFAULT_OBJECTIVE, EPOCH_METRICS
from service.dashboard.charts_base import layout
from service.dashboard.frame import StudyMeta
from service.studies.trials import study_trial_detail

#: Columns of the epochs table, in the trainer's order (other metrics follow, sorted).
METRIC_COLUMNS = tuple(m for m in EPOCH_METRICS if m != "epoch")
LOSSES = tuple(m for m in EPOCH_METRICS if m.endswith("_loss"))


@dataclass
class TrialView:
    """What the trial page shows; ``detail`` is the API's answer for the trial."""

    detail: TrialDetail
    value: float | None
    settings: dict[str, Any]
    diagnosis: str | None
    epochs: list[dict[str, Any]]
    columns: list[str]


def describe(
    state: str, diagnosis: str | None, fail_reason: str | None, last_epoch: int | None
) -> str | None:
    """What happened to a trial, in a few words (diverged, pruned at epoch N, ...)."""
    if diagnosis:
        return diagnosis
    if state == ShownState.PRUNED:
        return f"pruned at epoch {last_epoch}" if last_epoch else "pruned"
    return fail_reason or None


def load(session: Session, meta: StudyMeta, number: int) -> TrialView:
    """The trial ``number`` of a study (raises TrialNotFound)."""
    detail = study_trial_detail(session, meta.study_id, number, meta.name)
    epochs = [{"epoch": m.step, "value": m.value, **m.metrics} for m in detail.metrics]
    epochs.sort(key=lambda e: e["epoch"])
    seen = {k for e in epochs for k in e}
    columns = [c for c in METRIC_COLUMNS if c in seen]
    columns += sorted(seen - set(columns) - {"epoch", "value"})
    last_epoch = epochs[-1]["epoch"] if epochs else None
    return TrialView(
        detail=detail,
        value=detail.value if detail.value is not None else (detail.values or [None])[0],
        settings=meta.settings(detail.params),
        diagnosis=describe(detail.state, detail.diagnosis, detail.fail_reason, last_epoch),
        epochs=epochs,
        columns=columns,
    )


def figure(view: TrialView) -> go.Figure | None:
    """Loss and the default objective per epoch of one trial (None before the first report)."""
    if not view.epochs:
        return None
    epochs = [e["epoch"] for e in view.epochs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "accuracy"])
    for key, col in [*((loss, 1) for loss in LOSSES), (DEFAULT_OBJECTIVE, 2)]:
        if any(e.get(key) is not None for e in view.epochs):
            ys = [e.get(key) for e in view.epochs]
            fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=key), 1, col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    return layout(fig, f"Trial {view.detail.number}: per-epoch metrics")
