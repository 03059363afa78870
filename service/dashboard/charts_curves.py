"""Learning curves: validation accuracy per epoch, from ``hpo_trial_metrics``.

The figure has one line trace per optimizer (trials separated by gaps, the
trial number in ``customdata`` of every point) plus marker traces for pruned
and failed trials. Live updates never resend it: :func:`delta` returns only
the metric rows after the client's cursor (the last metric id it has seen) and
the trials among those it watches that have ended; ``app.js`` splices them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from sqlalchemy.orm import Session

from hpo.settings import DEFAULT_OBJECTIVE, OPTIMIZER
from service.dashboard import queries
from service.dashboard.charts_base import (
    ChartResult,
    color_for,
    empty,
    esc,
    layout,
    optimizer_order,
    settings_text,
)
from service.dashboard.frame import StudyFrame, TrialRow

#: Trials drawn at most (best half + most recent half beyond it).
CURVE_LIMIT = 400
#: A delta with more rows than this tells the client to reload the chart instead.
DELTA_LIMIT = 5000
#: The per-epoch metric drawn (the reference trainer's default objective).
METRIC = DEFAULT_OBJECTIVE
MARKS = {
    "PRUNED": ("pruned", {"symbol": "x", "size": 9, "color": "#444"}),
    "FAIL": ("failed", {"symbol": "triangle-down", "size": 10, "color": "#d62728"}),
}


@dataclass
class Point:
    """One reported epoch of one trial."""

    number: int
    epoch: int
    y: float | None


def select_trials(frame: StudyFrame, limit: int = CURVE_LIMIT) -> tuple[list[TrialRow], str | None]:
    """Every trial, or (for big studies) the best half and the most recent half."""
    rows = [r for r in frame.rows if r.state != "WAITING"]
    if len(rows) <= limit:
        return rows, None
    valued = [r for r in rows if r.value is not None]
    valued.sort(key=lambda r: r.value or 0.0, reverse=frame.meta.maximize)
    chosen = {r.trial_id: r for r in valued[: limit // 2]}
    for r in reversed(rows):
        if len(chosen) >= limit:
            break
        chosen.setdefault(r.trial_id, r)
    picked = sorted(chosen.values(), key=lambda r: r.number)
    return picked, f"showing {len(picked)} of {len(rows):,} trials: the best and the most recent"


def metric_value(value: float | None, metrics: dict[str, Any]) -> float | None:
    """The curve's metric of an epoch (the reported value when absent)."""
    y = metrics.get(METRIC, value)
    return float(y) if isinstance(y, int | float) else None


def curves(session: Session, frame: StudyFrame) -> ChartResult:
    """The study's learning curves (selected trials, up to the metric cursor)."""
    cursor = queries.metrics_cursor(session, frame.meta.study_id)
    chosen, note = select_trials(frame)
    if not chosen or cursor == 0:
        return empty("No epoch has been reported yet: curves appear with the first report.")
    by_id = {r.trial_id: r for r in chosen}
    rows = queries.metric_rows(session, frame.meta.study_id, trial_ids=list(by_id))
    points: dict[int, list[Point]] = {}
    for mid, tid, step, value, metrics in rows:
        if mid <= cursor:
            points.setdefault(tid, []).append(
                Point(by_id[tid].number, step, metric_value(value, metrics))
            )
    fig = _figure(frame, [by_id[t] for t in points], points)
    running = [r.number for r in chosen if not r.finished]
    return ChartResult(fig, note=note, extra={"cursor": cursor, "running": running})


def _figure(frame: StudyFrame, trials: list[TrialRow], points: dict[int, list[Point]]) -> go.Figure:
    groups: dict[Any, list[TrialRow]] = {}
    for r in trials:
        groups.setdefault(r.settings.get(OPTIMIZER), []).append(r)
    order = optimizer_order(frame, set(groups))
    fig = go.Figure()
    for opt in order:
        x: list[Any] = []
        y: list[Any] = []
        numbers: list[Any] = []
        text: list[Any] = []
        for r in groups[opt]:
            label = settings_text(r, frame)
            if x:
                x.append(None), y.append(None), numbers.append(None), text.append(None)
            for p in sorted(points[r.trial_id], key=lambda p: p.epoch):
                x.append(p.epoch), y.append(p.y), numbers.append(r.number), text.append(label)
        fig.add_trace(curve_trace(opt, order, x, y, numbers, text))
    for state, (name, marker) in MARKS.items():
        ended = [r for r in trials if r.state == state and points.get(r.trial_id)]
        last = [max(points[r.trial_id], key=lambda p: p.epoch) for r in ended]
        fig.add_trace(
            go.Scatter(
                x=[p.epoch for p in last],
                y=[p.y for p in last],
                mode="markers",
                name=name,
                marker=marker,
                customdata=[r.number for r in ended],
                meta={"mark": state},
                hovertemplate=f"trial #%{{customdata}} {name}<extra></extra>",
                visible=True,
            )
        )
    layout(
        fig,
        f"Learning curves ({METRIC} per epoch)",
        xaxis_title="epoch",
        yaxis_title=METRIC,
        legend_title_text=OPTIMIZER,
    )
    ys = [p.y for pts in points.values() for p in pts if p.y is not None]
    fig.update_yaxes(range=y_range(ys))
    return fig


def y_range(ys: list[float]) -> list[float] | None:
    """Zoom on where most curves are (a few diverged runs would flatten the rest);
    double-click on the chart shows everything."""
    if len(ys) < 10:
        return None
    ordered = sorted(ys)
    low, high = ordered[len(ordered) // 10], ordered[-1]
    spread = max(high - low, 1e-6)
    bottom = max(ordered[0], low - spread)
    return [bottom - 0.02 * spread, high + 0.05 * spread]


def curve_trace(
    opt: Any, order: list[Any], x: list[Any], y: list[Any], numbers: list[Any], text: list[Any]
) -> go.Scatter:
    """One line trace for all trials of one optimizer (gaps between trials)."""
    color = color_for(opt, order)
    return go.Scatter(
        x=x,
        y=y,
        customdata=numbers,
        text=text,
        mode="lines",
        name=esc(_label(opt)),
        line={"color": color, "width": 1},
        opacity=0.75,
        connectgaps=False,
        meta={"key": _label(opt), "color": color},
        hovertemplate="epoch %{x}: %{y:.4f}<br>%{text}<extra></extra>",
    )


def _label(opt: Any) -> str:
    return "trials" if opt is None else str(opt)


def delta(session: Session, frame: StudyFrame, since: int, watch: list[int]) -> dict[str, Any]:
    """Metric rows after ``since`` and the watched trials that have ended since."""
    rows = queries.metric_rows(session, frame.meta.study_id, since=since, limit=DELTA_LIMIT + 1)
    if len(rows) > DELTA_LIMIT:
        return {"reset": True, "cursor": since}
    by_id = {r.trial_id: r for r in frame.rows}
    order = optimizer_order(frame, {r.settings.get(OPTIMIZER) for r in frame.rows})
    out_rows, touched, cursor = [], set(watch), since
    for mid, tid, step, value, metrics in rows:
        trial = by_id.get(tid)
        if trial is None:
            break  # a trial newer than the frame: its rows come with the next delta
        cursor = mid
        opt = trial.settings.get(OPTIMIZER)
        out_rows.append(
            {
                "id": mid,
                "number": trial.number,
                "epoch": step,
                "y": metric_value(value, metrics),
                "key": _label(opt),
                "name": esc(_label(opt)),
                "color": color_for(opt, order),
                "text": settings_text(trial, frame),
            }
        )
        touched.add(trial.number)
    ended = [
        {"number": n, "state": frame.by_number[n].state}
        for n in sorted(touched)
        if n in frame.by_number and frame.by_number[n].finished
    ]
    running = [
        n for n in sorted(touched) if n in frame.by_number and not frame.by_number[n].finished
    ]
    return {"cursor": cursor, "rows": out_rows, "ended": ended, "running": running}
