"""Optuna's chart types drawn from the trial table, for studies too big for Optuna's plots.

Same chart, bounded cost: the history is a vectorised best-so-far line, the
contour bins trials on a fixed grid (mean objective per cell) instead of
interpolating over every unique value, slices show a bounded sample of
points, and parallel coordinates send one line per trial as typed arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution
from plotly.subplots import make_subplots

from service.dashboard.charts_base import arr, fmt, ints, layout, scored, thin
from service.dashboard.frame import StudyFrame
from service.dashboard.frame_study import esc

GRID = 24
SLICE_POINTS = 1500


def history(frame: StudyFrame) -> go.Figure:
    rows = scored(frame)
    numbers = np.array([r.number for r in rows])
    values = np.array([r.value for r in rows], dtype=float)
    best = np.maximum.accumulate(values) if frame.meta.maximize else np.minimum.accumulate(values)
    shown, _ = thin(rows, frame)
    fig = go.Figure([
        go.Scatter(x=ints(r.number for r in shown), y=arr(r.value for r in shown), mode="markers",
                   name=esc(frame.meta.objective_name), marker={"size": 4, "color": "#1f77b4"},
                   customdata=ints(r.number for r in shown),
                   hovertemplate="trial #%{x}<br>%{y}<extra></extra>"),
        go.Scatter(x=numbers, y=best, mode="lines", name="Best Value",
                   line={"color": "#d62728", "width": 2, "shape": "hv"}),
    ])  # fmt: skip
    layout(fig, "Optimization history", xaxis_title="trial",
           yaxis_title=esc(frame.meta.objective_name))  # fmt: skip
    return fig


def _numeric(values: list[Any], dist: BaseDistribution) -> tuple[np.ndarray, dict[str, Any]]:
    """Values on a numeric axis (log10 for log axes, index for categories) + axis ticks."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        index = {repr(c): i for i, c in enumerate(choices)}
        arr = np.array([index.get(repr(v), np.nan) for v in values], dtype=float)
        ticks = {"tickvals": list(range(len(choices))), "ticktext": [esc(fmt(c)) for c in choices]}
        return arr, ticks
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    if getattr(dist, "log", False):
        arr = np.log10(arr)
        lo, hi = math.floor(np.nanmin(arr)), math.ceil(np.nanmax(arr))
        exps = list(range(lo, hi + 1))
        return arr, {"tickvals": exps, "ticktext": [f"1e{e}" for e in exps]}
    return arr, {}


def parallel(frame: StudyFrame) -> go.Figure:
    rows = scored(frame)
    objective = np.array([r.value for r in rows], dtype=float)
    dims = [{"label": esc(frame.meta.objective_name), "values": objective}]
    for name, dist in frame.axes.items():
        arr, ticks = _numeric([r.settings.get(name) for r in rows], dist)
        if np.all(np.isnan(arr)):
            continue
        missing = np.isnan(arr)
        if missing.any():  # conditional parameters: a "missing" level below the range
            lo, hi = np.nanmin(arr), np.nanmax(arr)
            arr = np.where(missing, lo - 0.1 * max(hi - lo, 1e-9), arr)
        label = esc(name) + (" (log10)" if getattr(dist, "log", False) else "")
        dims.append({"label": label, "values": arr, **ticks})
    color = {"color": objective, "colorscale": "Blues", "showscale": True,
             "reversescale": not frame.meta.maximize}  # fmt: skip
    fig = go.Figure(go.Parcoords(dimensions=dims, line=color))
    return layout(fig, "Parallel coordinates", margin={"l": 70, "r": 70, "t": 90, "b": 40})


def _bins(values: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and centres (in data units) over ``values``."""
    data = np.log10(values) if log else values
    edges = np.linspace(np.nanmin(data), np.nanmax(data), GRID + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return edges, (10**centres if log else centres)


def contour(frame: StudyFrame, x_name: str, y_name: str) -> go.Figure:
    rows = [r for r in scored(frame) if x_name in r.settings and y_name in r.settings]
    xs = np.array([float(r.settings[x_name]) for r in rows])
    ys = np.array([float(r.settings[y_name]) for r in rows])
    zs = np.array([r.value for r in rows], dtype=float)
    x_log, y_log = frame.is_log(x_name), frame.is_log(y_name)
    x_edges, x_mid = _bins(xs, x_log)
    y_edges, y_mid = _bins(ys, y_log)
    xi = np.clip(np.digitize(np.log10(xs) if x_log else xs, x_edges) - 1, 0, GRID - 1)
    yi = np.clip(np.digitize(np.log10(ys) if y_log else ys, y_edges) - 1, 0, GRID - 1)
    total = np.zeros((GRID, GRID))
    count = np.zeros((GRID, GRID))
    np.add.at(total, (yi, xi), zs)
    np.add.at(count, (yi, xi), 1)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    z = [[None if math.isnan(v) else round(float(v), 6) for v in line] for line in mean]
    shown, _ = thin(rows, frame, 600)
    fig = go.Figure([
        go.Contour(x=x_mid, y=y_mid, z=z, colorscale="Blues", connectgaps=True,
                   reversescale=not frame.meta.maximize,
                   colorbar={"title": {"text": "mean " + esc(frame.meta.objective_name)}}),
        go.Scatter(x=arr(r.settings[x_name] for r in shown),
                   y=arr(r.settings[y_name] for r in shown),
                   mode="markers", marker={"size": 4, "color": "#222", "opacity": 0.5},
                   name="trials", customdata=ints(r.number for r in shown), showlegend=False,
                   hovertemplate="trial #%{customdata}<extra></extra>"),
    ])  # fmt: skip
    layout(fig, f"Contour of {x_name} x {y_name} (mean per cell)")
    fig.update_xaxes(title_text=esc(x_name), type="log" if x_log else "linear")
    fig.update_yaxes(title_text=esc(y_name), type="log" if y_log else "linear")
    return fig


def slices(frame: StudyFrame) -> go.Figure:
    rows, _ = thin(scored(frame), frame, SLICE_POINTS)
    names = list(frame.axes)
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True)
    for col, name in enumerate(names, start=1):
        part = [r for r in rows if name in r.settings]
        fig.add_trace(go.Scatter(
            x=arr(r.settings[name] for r in part), y=arr(r.value for r in part),
            mode="markers", showlegend=False,
            marker={"size": 4, "color": ints(r.number for r in part), "colorscale": "Blues",
                    "showscale": col == 1, "colorbar": {"title": {"text": "trial"}}},
            customdata=ints(r.number for r in part),
            hovertemplate="trial #%{customdata}<br>%{x}: %{y}<extra></extra>",
        ), row=1, col=col)  # fmt: skip
        log = getattr(frame.axes[name], "log", False)
        fig.update_xaxes(title_text=esc(name), type="log" if log else "-", row=1, col=col)
    layout(fig, "Slice plots", width=max(600, 300 * len(names)))
    fig.update_yaxes(title_text=esc(frame.meta.objective_name), row=1, col=1)
    return fig
