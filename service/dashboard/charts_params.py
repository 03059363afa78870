"""Charts of the objective against the reference trainer's settings (names from
``hpo.settings``): optimizer, learning rate, regularization, batch norm."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hpo.settings import BATCH_NORM, LR, OPTIMIZER, REGULARIZATION
from service.dashboard.boxstats import BoxStats, grouped_box, point_box, points_note
from service.dashboard.charts_base import (
    ChartResult,
    arr,
    color_for,
    empty,
    esc,
    fmt,
    group_by,
    ints,
    layout,
    needs,
    no_scores_message,
    optimizer_order,
    scored,
    settings_text,
    thin,
)
from service.dashboard.frame import StudyFrame, TrialRow

#: Box plots show every point up to this many trials, only outliers above.
BOX_POINTS_LIMIT = 2000
#: Points per regularization panel (three panels share them).
REGULARIZATION_POINTS = 2000
_HOVER = "%{text}<extra></extra>"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1")
    return bool(value)


def _best(rows: list[TrialRow], maximize: bool) -> TrialRow:
    pick = max if maximize else min
    return pick(rows, key=lambda r: (r.value, -r.number))


def _scored_varying(
    frame: StudyFrame, setting: str, what: str
) -> tuple[list[TrialRow], ChartResult | None]:
    """The scored trials, and the empty result saying why there is no chart when there
    is none yet (no scored trial) or the study does not vary ``setting`` (``what``)."""
    rows = scored(frame)
    if not rows:
        return rows, empty(no_scores_message(frame))
    return rows, needs(frame, setting, what)


def optimizers(frame: StudyFrame) -> ChartResult:
    """Distribution of the objective per optimizer, each optimizer's best trial starred."""
    rows, reason = _scored_varying(frame, OPTIMIZER, "The optimizer")
    if reason:
        return reason
    groups = group_by(rows, OPTIMIZER)
    if len(groups) < 2:
        only = fmt(next(iter(groups)))
        return empty(f"Only one optimizer ({only}) has completed trials: nothing to compare yet.")
    fig = go.Figure()
    all_points = len(rows) <= BOX_POINTS_LIMIT
    order = optimizer_order(frame, set(groups))
    stats = [_add_optimizer_box(fig, frame, opt, groups[opt], all_points, order) for opt in order]
    title = f"{frame.meta.objective_name} per optimizer (★ best trial)"
    layout(fig, title, showlegend=False, yaxis_title=esc(frame.meta.objective_name))
    return ChartResult(fig, note=points_note(len(rows), stats, all_points))


def _add_optimizer_box(
    fig: go.Figure,
    frame: StudyFrame,
    opt: Any,
    rows: list[TrialRow],
    all_points: bool,
    order: list[Any],
) -> BoxStats:
    """The optimizer's box (statistics from the server, see ``boxstats``) and best star."""
    color = color_for(opt, order)
    box, stats = point_box(
        [r.value for r in rows],
        [r.number for r in rows],
        lambda i: settings_text(rows[i], frame),
        all_points,
        x=[esc(opt)],
        name=esc(opt),
        jitter=0.5,
        pointpos=0,
        marker={"color": color, "size": 5, "opacity": 0.6},
        line={"color": color},
        hoveron="points+boxes",
    )
    fig.add_trace(box)
    best = _best(rows, frame.meta.maximize)
    fig.add_trace(
        go.Scatter(
            x=[esc(opt)],
            y=[best.value],
            mode="markers",
            name=f"best {esc(opt)}",
            marker={
                "symbol": "star",
                "size": 18,
                "color": color,
                "line": {"width": 1.5, "color": "#222"},
            },
            text=[settings_text(best, frame)],
            customdata=[best.number],
            hovertemplate="best " + esc(opt) + "<br>%{text}<extra></extra>",
            showlegend=False,
        )
    )
    return stats


def _scatter_by_optimizer(
    frame: StudyFrame, rows: list[TrialRow], setting: str, **trace: Any
) -> list[go.Scatter]:
    """One scatter trace per optimizer of the objective against ``setting``."""
    has = [r for r in rows if setting in r.settings]
    groups = group_by(has, OPTIMIZER)
    order = optimizer_order(frame, set(groups))
    return [
        go.Scatter(
            x=arr(r.settings[setting] for r in groups[opt]),
            y=arr(r.value for r in groups[opt]),
            mode="markers",
            name=esc(opt if opt is not None else "trials"),
            legendgroup=esc(opt),
            marker={"color": color_for(opt, order), "size": 6, "opacity": 0.7},
            text=[settings_text(r, frame) for r in groups[opt]],
            customdata=ints(r.number for r in groups[opt]),
            hovertemplate=_HOVER,
            **trace,
        )
        for opt in order
    ]


def learning_rate(frame: StudyFrame) -> ChartResult:
    """Objective against the learning rate (log x where the space is log), by optimizer."""
    rows, reason = _scored_varying(frame, LR, "The learning rate")
    if reason:
        return reason
    shown, note = thin(rows, frame)
    fig = go.Figure(_scatter_by_optimizer(frame, shown, LR))
    layout(
        fig,
        f"{frame.meta.objective_name} vs learning rate",
        legend_title_text=OPTIMIZER,
        yaxis_title=esc(frame.meta.objective_name),
    )
    fig.update_xaxes(title_text="learning rate", type="log" if frame.is_log(LR) else "linear")
    return ChartResult(fig, note=note)


def regularization(frame: StudyFrame) -> ChartResult:
    """Weight decay, L1 and dropout against the objective, one panel each."""
    rows = scored(frame)
    if not rows:
        return empty(no_scores_message(frame))
    present = [s for s in REGULARIZATION if s in frame.axes]
    fixed = {s: frame.meta.fixed[s] for s in REGULARIZATION if s in frame.meta.fixed}
    if not present:
        what = ", ".join(f"{k} = {fmt(v)}" for k, v in fixed.items()) or "none in the space"
        return empty(f"This study does not vary {', '.join(REGULARIZATION)} ({what}).")
    shown, note = thin(rows, frame, REGULARIZATION_POINTS)
    fig = make_subplots(
        rows=1, cols=len(present), shared_yaxes=True, subplot_titles=[esc(s) for s in present]
    )
    for col, setting in enumerate(present, start=1):
        for trace in _scatter_by_optimizer(frame, shown, setting, showlegend=col == 1):
            fig.add_trace(trace, row=1, col=col)
        log = frame.is_log(setting)
        fig.update_xaxes(type="log" if log else "linear", title_text=esc(setting), row=1, col=col)
    layout(fig, f"Regularization vs {frame.meta.objective_name}", legend_title_text=OPTIMIZER)
    fig.update_yaxes(title_text=esc(frame.meta.objective_name), row=1, col=1)
    if fixed:
        extra = "fixed: " + ", ".join(f"{k} = {fmt(v)}" for k, v in fixed.items())
        note = f"{note}; {extra}" if note else extra
    return ChartResult(fig, note=note)


def batch_norm(frame: StudyFrame) -> ChartResult:
    """Batch norm on vs off: objective distribution, grouped by optimizer."""
    rows, reason = _scored_varying(frame, BATCH_NORM, "Batch norm")
    if reason:
        return reason
    fig = go.Figure()
    optimizers_seen = optimizer_order(frame, {r.settings.get(OPTIMIZER) for r in rows})
    for flag, color in ((True, "#1f77b4"), (False, "#ff7f0e")):
        part = [r for r in rows if _truthy(r.settings.get(BATCH_NORM)) is flag]
        if not part:
            continue
        by_optimizer = group_by(part, OPTIMIZER)
        values = {
            esc(fmt("all trials" if o is None else o)): [r.value for r in g]
            for o, g in by_optimizer.items()
        }
        name = f"batch norm {'on' if flag else 'off'}"
        fig.add_trace(grouped_box(values, name=name, marker={"color": color}))
    if len(fig.data) < 2:
        return empty("Every completed trial used the same batch-norm setting: nothing to compare.")
    layout(fig, "Batch norm on vs off", boxmode="group", yaxis_title=esc(frame.meta.objective_name))
    order = [esc(fmt(o)) for o in optimizers_seen if o is not None]
    if order:
        fig.update_xaxes(categoryorder="array", categoryarray=order, title_text=OPTIMIZER)
    return ChartResult(fig)
