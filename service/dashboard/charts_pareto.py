"""Multi-objective and compression charts: the Pareto front, accuracy against size.

``pareto`` draws every complete trial of a multi-objective study in objective
space (two objectives: a scatter, three: a 3-D scatter), the front
(non-dominated trials, the same set as ``GET /api/v1/studies/{study}/pareto``)
in filled markers joined by its attainment line, the dominated trials faded;
``size`` draws the shipped model's validation accuracy against its bytes (the
trainer's ``final_metrics``), one trace per compression method with its own
front. Both colour by compression method (:mod:`service.dashboard.compression`)
and carry the trial number in ``customdata``, so a click opens the trial.

Both are drawn from the frame: the front is one sort and one pass (2-D), the
hover texts and methods are kept per trial, dominated points are sampled down
to ``MAX_POINTS`` (the front is always drawn whole).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from sqlalchemy.orm import Session

from hpo.settings import MODEL_METRICS
from service.dashboard.charts_base import (
    MAX_POINTS,
    ChartResult,
    arr,
    empty,
    esc,
    fmt,
    ints,
    layout,
    no_scores_message,
)
from service.dashboard.compression import SIZE, Shipped, method, method_color, method_order
from service.dashboard.compression import shipped as load_shipped
from service.dashboard.frame import StudyFrame, TrialRow

_HOVER = "%{text}<extra></extra>"
#: A model measurement spanning more than this factor gets a log axis.
LOG_SPAN = 20.0


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates (every column minimised; equal rows are
    all kept), as ``service.studies.records.pareto_front`` decides it.

    Sorted lexicographically, a row can only be dominated by a row before it, and if
    by any, then by one on the front: one pass against the front found so far."""
    n, k = losses.shape
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.lexsort(losses.T[::-1])
    if k == 2:
        best_y, best_x = math.inf, math.nan
        for i in order.tolist():
            x, y = losses[i]
            if y < best_y or (y == best_y and x == best_x):
                keep[i] = True
                best_y, best_x = (y, x) if y < best_y else (best_y, best_x)
        return keep
    front = np.empty_like(losses)
    size = 0
    for i in order.tolist():
        p, f = losses[i], front[:size]
        if not np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
            keep[i], front[size] = True, p
            size += 1
    return keep


def objective_names(frame: StudyFrame) -> list[str]:
    """The study's objective names (``objective N`` where the spec does not say)."""
    count = len(frame.meta.directions)
    names = frame.meta.spec.objective_names if frame.meta.spec else []
    return list(names) if len(names) == count else [f"objective {i}" for i in range(count)]


def _method_of(frame: StudyFrame, row: TrialRow) -> str:
    return frame.per_trial("method", row, lambda r: method(r.settings))


def _hover(frame: StudyFrame, row: TrialRow, lines: Callable[[TrialRow], list[str]]) -> str:
    """Hover text of a trial: number, the given lines, compression (escaped, kept)."""

    def build(r: TrialRow) -> str:
        parts = [f"trial #{r.number}", *lines(r), f"compression: {esc(_method_of(frame, r))}"]
        return "<br>".join(parts)

    return frame.per_trial(f"hover:{lines.__name__}", row, build)


def _sample(rows: list[TrialRow], limit: int, seed: int) -> list[TrialRow]:
    if len(rows) <= limit:
        return rows
    return sorted(random.Random(seed).sample(rows, limit), key=lambda r: r.number)


def _axis(name: str, values: np.ndarray, maximize: bool) -> dict[str, Any]:
    """Axis settings: title with the direction, log for a model measurement over a wide span."""
    axis: dict[str, Any] = {"title": {"text": f"{esc(name)} {'↑' if maximize else '↓'}"}}
    positive = values[values > 0]
    wide = (
        len(values) and len(positive) == len(values) and positive.max() > LOG_SPAN * positive.min()
    )
    if name in MODEL_METRICS and wide:
        axis["type"] = "log"
    return axis


# --------------------------------------------------------------------------- Pareto front


def pareto(frame: StudyFrame) -> ChartResult:
    """Every complete trial in objective space, the front distinct from dominated trials."""
    count = len(frame.meta.directions)
    if count < 2:
        return empty("A Pareto front needs two or more objectives; this study has one.")
    if count > 3:
        return empty(f"The Pareto chart draws 2 or 3 objectives; this study has {count}.")
    rows = [
        r
        for r in frame.rows
        if r.state == "COMPLETE"
        and r.values is not None
        and len(r.values) == count
        and all(_finite(v) for v in r.values)
    ]
    if not rows:
        return empty(no_scores_message(frame))
    values = np.array([r.values for r in rows], dtype=float)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in frame.meta.directions])
    mask = non_dominated(values * signs)
    front = [r for r, keep in zip(rows, mask, strict=True) if keep]
    dominated = [r for r, keep in zip(rows, mask, strict=True) if not keep]
    shown = _sample(dominated, MAX_POINTS, frame.meta.study_id)
    draw = _pareto_2d if count == 2 else _pareto_3d
    fig = draw(frame, front, shown, _objective_axes(frame, values))
    note = f"{len(front):,} of {len(rows):,} complete trials on the front"
    if len(shown) < len(dominated):
        note += f"; showing {len(shown):,} of {len(dominated):,} dominated trials"
    return ChartResult(fig, note=note, extra={"front": sorted(r.number for r in front)})


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _objective_lines(frame: StudyFrame) -> Callable[[TrialRow], list[str]]:
    names = [esc(n) for n in objective_names(frame)]

    def objectives(r: TrialRow) -> list[str]:
        return [f"{n} = {fmt(v)}" for n, v in zip(names, r.values or (), strict=False)]

    return objectives


def _groups(frame: StudyFrame, rows: Sequence[TrialRow]) -> dict[str, list[TrialRow]]:
    out: dict[str, list[TrialRow]] = {}
    for r in rows:
        out.setdefault(_method_of(frame, r), []).append(r)
    return out


def _pareto_traces(
    frame: StudyFrame, front: list[TrialRow], dominated: list[TrialRow], trace: Callable[..., Any]
) -> list[Any]:
    """Per method: dominated trials faded (legend entry), front trials filled, outlined."""
    lines = _objective_lines(frame)
    faded, filled = _groups(frame, dominated), _groups(frame, front)
    order = method_order(set(faded) | set(filled))
    out = []
    for name in order:
        color = method_color(name, order)
        for part, on_front in ((faded.get(name), False), (filled.get(name), True)):
            if not part:
                continue
            marker = (
                {
                    "size": 10 if trace is go.Scatter else 6,
                    "color": color,
                    "opacity": 1.0,
                    "line": {"width": 1.5, "color": "#222"},
                }
                if on_front
                else {"size": 6 if trace is go.Scatter else 3, "color": color, "opacity": 0.3}
            )
            out.append(
                trace(
                    **_coords(part, trace),
                    mode="markers",
                    name=esc(name),
                    legendgroup=esc(name),
                    showlegend=not on_front or name not in faded,
                    marker=marker,
                    text=[_hover(frame, r, lines) for r in part],
                    hovertemplate=_HOVER,
                    customdata=ints(r.number for r in part),
                    meta={"front": on_front, "method": esc(name)},
                )
            )
    return out


def _coords(rows: list[TrialRow], trace: Callable[..., Any]) -> dict[str, Any]:
    axes = ("x", "y") if trace is go.Scatter else ("x", "y", "z")
    return {axis: arr(r.values[i] for r in rows) for i, axis in enumerate(axes)}  # type: ignore[index]


def _objective_axes(frame: StudyFrame, values: np.ndarray) -> list[dict[str, Any]]:
    """Axis settings of each objective (title with its direction, log over a wide span),
    from the plotted trials' ``values`` (one column per objective)."""
    return [
        _axis(name, values[:, i], direction == "maximize")
        for i, (name, direction) in enumerate(
            zip(objective_names(frame), frame.meta.directions, strict=True)
        )
    ]


def _pareto_2d(
    frame: StudyFrame, front: list[TrialRow], shown: list[TrialRow], axes: list[dict[str, Any]]
) -> go.Figure:
    """Two objectives: the scatter plus the front's attainment line (a staircase)."""
    maximize_x = frame.meta.directions[0] == "maximize"
    line = sorted(front, key=lambda r: (r.values[0], r.values[1]))  # type: ignore[index]
    fig = go.Figure(
        [
            go.Scatter(
                x=arr(r.values[0] for r in line),
                y=arr(r.values[1] for r in line),  # type: ignore[index]
                mode="lines",
                name="Pareto front",
                hoverinfo="skip",
                line={"color": "#222", "width": 1.5, "shape": "vh" if maximize_x else "hv"},
            ),
            *_pareto_traces(frame, front, shown, go.Scatter),
        ]
    )
    layout(
        fig,
        "Pareto front (filled: non-dominated; faded: dominated)",
        legend_title_text="compression",
        xaxis=axes[0],
        yaxis=axes[1],
    )
    return fig


def _pareto_3d(
    frame: StudyFrame, front: list[TrialRow], shown: list[TrialRow], axes: list[dict[str, Any]]
) -> go.Figure:
    """Three objectives: a 3-D scatter (drag to turn it)."""
    fig = go.Figure(_pareto_traces(frame, front, shown, go.Scatter3d))
    scene = dict(zip(("xaxis", "yaxis", "zaxis"), axes, strict=True))
    layout(
        fig,
        "Pareto front in 3-D (filled: non-dominated; faded: dominated)",
        legend_title_text="compression",
        scene=scene,
        height=560,
        margin={"l": 0, "r": 0, "t": 50, "b": 0},
    )
    return fig


# --------------------------------------------------------------------------- accuracy vs size


def size(session: Session, frame: StudyFrame) -> ChartResult:
    """Validation accuracy against model bytes as shipped, one trace per compression method."""
    shipped = load_shipped(session, frame)
    rows = [r for r in frame.rows if r.state == "COMPLETE" and shipped[r.trial_id].usable]
    if not rows:
        if not any(r.state == "COMPLETE" for r in frame.rows):
            return empty(no_scores_message(frame))
        return empty(
            "No completed trial reported its model as shipped yet "
            "(val_accuracy and model_bytes in its final metrics)."
        )
    groups = _groups(frame, rows)
    order = method_order(set(groups))
    limit = max(50, MAX_POINTS // max(1, len(groups)))
    fig = go.Figure()
    for name in order:
        _add_method(fig, frame, name, groups[name], shipped, method_color(name, order), limit)
    x_axis = _axis(SIZE, np.array([shipped[r.trial_id].size for r in rows]), False)
    layout(
        fig,
        "Validation accuracy against model size, per compression method",
        legend_title_text="compression",
        yaxis_title="validation accuracy (as shipped)",
        xaxis=x_axis | {"title": {"text": "model bytes (as shipped)"}},
    )
    shown = sum(len(t.x) for t in fig.data if t.mode == "markers")
    note = "lines: each method's best accuracy at each size"
    if shown < len(rows):
        note += f"; showing {shown:,} of {len(rows):,} trials (each method's front always)"
    return ChartResult(fig, note=note)


def _add_method(
    fig: go.Figure,
    frame: StudyFrame,
    name: str,
    rows: list[TrialRow],
    shipped: dict[int, Shipped],
    color: str,
    limit: int,
) -> None:
    """One method: its trials as points and its own front (most accurate per size) as a line."""
    points = np.array([(-shipped[r.trial_id].accuracy, shipped[r.trial_id].size) for r in rows])
    mask = non_dominated(points)
    best = sorted(
        (r for r, keep in zip(rows, mask, strict=True) if keep),
        key=lambda r: shipped[r.trial_id].size,
    )
    rest = _sample(
        [r for r, keep in zip(rows, mask, strict=True) if not keep],
        max(0, limit - len(best)),
        frame.meta.study_id,
    )
    part = sorted(best + rest, key=lambda r: r.number)

    def shipped_lines(r: TrialRow) -> list[str]:
        s = shipped[r.trial_id]
        return [f"val_accuracy = {fmt(s.accuracy)}", f"model_bytes = {s.size:,.0f}"]

    fig.add_trace(
        go.Scatter(
            x=arr(shipped[r.trial_id].size for r in best),
            y=arr(shipped[r.trial_id].accuracy for r in best),
            mode="lines",
            line={"color": color, "width": 1.5, "shape": "hv"},
            legendgroup=esc(name),
            showlegend=False,
            hoverinfo="skip",
            name=esc(name),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=arr(shipped[r.trial_id].size for r in part),
            y=arr(shipped[r.trial_id].accuracy for r in part),
            mode="markers",
            name=esc(name),
            legendgroup=esc(name),
            marker={"color": color, "size": 7, "opacity": 0.7},
            text=[_hover(frame, r, shipped_lines) for r in part],
            hovertemplate=_HOVER,
            customdata=ints(r.number for r in part),
        )
    )
