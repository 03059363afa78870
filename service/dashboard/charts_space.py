"""The search-space charts Optuna's dashboard has: optimization history, parameter
importance, parallel coordinates, contour and slice.

Each is drawn once, from the study's frame, whatever the number of trials: the
history is a vectorised best-so-far line, the contour bins trials on a fixed
grid (mean objective per cell) instead of interpolating over every unique
value, slices show a bounded sample of points, and parallel coordinates send
one line per trial as typed arrays. ``optuna.visualization``'s own functions
were used below a trial count until measured slower at every size (200,
1,000 and 10,000 trials: ``bench/results/dashboard.md``; at 10,000 trials
``plot_contour`` takes seconds and writes a 660 MB figure).

Parameter importance is Optuna's PED-ANOVA evaluator over a
:func:`frame_study` (0.2 s at 10,000 trials; fANOVA takes minutes there).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial
from plotly.subplots import make_subplots

from hpo.settings import LR, REGULARIZATION
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
    scored,
    thin,
)
from service.dashboard.frame import StudyFrame
from service.dashboard.frame_study import frame_study

GRID = 24
#: The history draws at most this many trials as points; above it, a quantile band too.
HISTORY_POINTS = MAX_POINTS
#: Bins of trial numbers of the history's quantile band.
BAND_BINS = 100
SLICE_POINTS = 1500
#: lr x weight_decay (the first regularization setting) when a study varies both.
CONTOUR_PREFERRED = (LR, REGULARIZATION[0])


def history(frame: StudyFrame) -> ChartResult:
    """Objective per trial and the best value so far; a big study's points are sampled
    and a band shows the 10-90 % quantiles of every trial's objective per bin of trials."""
    rows = scored(frame)
    if not rows:
        return empty(no_scores_message(frame))
    values = np.array([r.value for r in rows], dtype=float)
    numbers = np.array([r.number for r in rows], dtype=np.int64)
    best = np.maximum.accumulate(values) if frame.meta.maximize else np.minimum.accumulate(values)
    steps = _steps(best)  # the "hv" line needs only the trials where the best moves
    shown, note = thin(rows, frame, HISTORY_POINTS)
    objective = esc(frame.meta.objective_name)
    band: list[go.Scatter] = []
    if note:
        band, width = _quantile_band(numbers, values)
        note += (
            f"; the band: 10-90 % of all trials' {objective} per {width:,} trials"
            " (its line: their median)"
        )
    fig = go.Figure(
        [
            *band,
            go.Scatter(
                x=ints(r.number for r in shown),
                y=arr(r.value for r in shown),
                mode="markers",
                name=objective,
                marker={"size": 4, "color": "#1f77b4"},
                customdata=ints(r.number for r in shown),
                hovertemplate="trial #%{x}<br>%{y}<extra></extra>",
            ),
            go.Scatter(
                x=numbers[steps],
                y=best[steps],
                mode="lines",
                name="Best Value",
                line={"color": "#d62728", "width": 2, "shape": "hv"},
            ),
        ]
    )
    layout(fig, "Optimization history", xaxis_title="trial", yaxis_title=objective)
    return ChartResult(fig, note=note)


def _steps(best: np.ndarray) -> np.ndarray:
    """Where a running best changes (and its first and last entries)."""
    keep = np.ones(len(best), dtype=bool)
    keep[1:-1] = best[1:-1] != best[:-2]
    return keep


def _quantile_band(numbers: np.ndarray, values: np.ndarray) -> tuple[list[go.Scatter], int]:
    """Traces of the 10 %, 50 % and 90 % quantiles of ``values`` per bin of trial numbers
    (the 90 % one filled down to the 10 % one), and the bin width in trials."""
    width = max(1, int(np.ceil((int(numbers.max()) + 1) / BAND_BINS)))
    bins = numbers // width
    order = np.argsort(bins, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(bins[order]) != 0])
    groups = np.split(values[order], starts[1:])
    centres = bins[order][starts] * width + width / 2
    q = np.array([np.quantile(g, (0.1, 0.5, 0.9)) for g in groups])

    def quantile_line(column: int, **trace: Any) -> go.Scatter:
        """The line of one quantile column of ``q`` over the bins' centres."""
        return go.Scatter(x=centres, y=q[:, column], mode="lines", **trace)

    hidden = {"width": 0}
    traces = [
        quantile_line(0, line=hidden, hoverinfo="skip", showlegend=False, name="10 %"),
        quantile_line(
            2,
            line=hidden,
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.18)",
            name="10-90 % of trials",
            hovertemplate="trials %{x:.0f}: 90 % at %{y}<extra></extra>",
        ),
        quantile_line(
            1,
            name="median of trials",
            line={"color": "rgba(31,119,180,0.8)", "width": 1, "dash": "dot"},
            hovertemplate="trials %{x:.0f}: median %{y}<extra></extra>",
        ),
    ]
    return traces, width


def importance(frame: StudyFrame) -> ChartResult:
    """Optuna's parameter importance (PED-ANOVA) of the first objective."""
    rows = scored(frame)
    if len(rows) < 2:
        return empty(
            no_scores_message(frame) if not rows else "Importance needs 2+ completed trials."
        )
    target: dict[str, Any] = {"target_name": esc(frame.meta.objective_name)}
    if len(frame.meta.directions) > 1:
        target["target"] = _first_objective
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        fig = ov.plot_param_importances(
            frame_study(frame, ("COMPLETE",)), evaluator=evaluator, **target
        )
    except (ValueError, RuntimeError) as exc:
        return empty(f"Parameter importance is not available yet: {exc}")
    if not fig.data:
        return empty("No parameter varies across the completed trials yet.")
    return ChartResult(layout(fig, "Parameter importance (PED-ANOVA)"))


def _first_objective(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def _numeric(values: list[Any], dist: BaseDistribution) -> tuple[np.ndarray, dict[str, Any]]:
    """Values on a numeric axis (log10 for log axes, index for categories) + axis ticks."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        index = {repr(c): i for i, c in enumerate(choices)}
        out = np.array([index.get(repr(v), np.nan) for v in values], dtype=float)
        ticks = {"tickvals": list(range(len(choices))), "ticktext": [esc(fmt(c)) for c in choices]}
        return out, ticks
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    if getattr(dist, "log", False):
        out = np.log10(out)
        lo, hi = math.floor(np.nanmin(out)), math.ceil(np.nanmax(out))
        exps = list(range(lo, hi + 1))
        return out, {"tickvals": exps, "ticktext": [f"1e{e}" for e in exps]}
    return out, {}


def parallel(frame: StudyFrame) -> ChartResult:
    """One line per completed trial across the objective and every varying setting."""
    rows = scored(frame)
    if not rows:
        return empty(no_scores_message(frame))
    if not frame.axes:
        return empty("This study has no parameters to draw.")
    objective = np.array([r.value for r in rows], dtype=float)
    dims = [{"label": esc(frame.meta.objective_name), "values": objective}]
    for name, dist in frame.axes.items():
        values, ticks = _numeric([r.settings.get(name) for r in rows], dist)
        if np.all(np.isnan(values)):
            continue
        missing = np.isnan(values)
        if missing.any():  # conditional parameters: a "missing" level below the range
            lo, hi = np.nanmin(values), np.nanmax(values)
            values = np.where(missing, lo - 0.1 * max(hi - lo, 1e-9), values)
        label = esc(name) + (" (log10)" if getattr(dist, "log", False) else "")
        dims.append({"label": label, "values": values, **ticks})
    color = {
        "color": objective,
        "colorscale": "Blues",
        "showscale": True,
        "reversescale": not frame.meta.maximize,
    }
    fig = go.Figure(go.Parcoords(dimensions=dims, line=color))
    layout(fig, "Parallel coordinates", margin={"l": 70, "r": 70, "t": 90, "b": 40})
    return ChartResult(fig)


def contour_axes(frame: StudyFrame) -> tuple[str, str] | None:
    """lr x weight_decay when the study varies both, else its first two numeric settings."""
    if all(a in frame.axes for a in CONTOUR_PREFERRED):
        return CONTOUR_PREFERRED
    numeric = [a for a, d in frame.axes.items() if not isinstance(d, CategoricalDistribution)]
    return (numeric[0], numeric[1]) if len(numeric) >= 2 else None


def _bins(values: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and centres (in data units) over ``values``."""
    data = np.log10(values) if log else values
    edges = np.linspace(np.nanmin(data), np.nanmax(data), GRID + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return edges, (10**centres if log else centres)


def _cell_means(
    xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, x_log: bool, y_log: bool
) -> tuple[np.ndarray, np.ndarray, list[list[float | None]]]:
    """Bin centres on both axes and the mean objective per cell (None where empty)."""
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
    return x_mid, y_mid, z


def contour(frame: StudyFrame) -> ChartResult:
    """Mean objective over two numeric settings (binned), trials as points on top."""
    if not scored(frame):
        return empty(no_scores_message(frame))
    axes = contour_axes(frame)
    if axes is None:
        return empty("A contour needs two numeric settings (e.g. lr and weight_decay).")
    x_name, y_name = axes
    rows = [r for r in scored(frame) if x_name in r.settings and y_name in r.settings]
    x_log, y_log = frame.is_log(x_name), frame.is_log(y_name)
    x_mid, y_mid, z = _cell_means(
        np.array([float(r.settings[x_name]) for r in rows]),
        np.array([float(r.settings[y_name]) for r in rows]),
        np.array([r.value for r in rows], dtype=float),
        x_log,
        y_log,
    )
    shown, _ = thin(rows, frame, 600)
    fig = go.Figure(
        [
            go.Contour(
                x=x_mid,
                y=y_mid,
                z=z,
                colorscale="Blues",
                connectgaps=True,
                reversescale=not frame.meta.maximize,
                colorbar={"title": {"text": "mean " + esc(frame.meta.objective_name)}},
            ),
            go.Scatter(
                x=arr(r.settings[x_name] for r in shown),
                y=arr(r.settings[y_name] for r in shown),
                mode="markers",
                marker={"size": 4, "color": "#222", "opacity": 0.5},
                name="trials",
                customdata=ints(r.number for r in shown),
                showlegend=False,
                hovertemplate="trial #%{customdata}<extra></extra>",
            ),
        ]
    )
    layout(fig, f"Contour of {x_name} x {y_name} (mean per cell)")
    fig.update_xaxes(title_text=esc(x_name), type="log" if x_log else "linear")
    fig.update_yaxes(title_text=esc(y_name), type="log" if y_log else "linear")
    note = None if axes == CONTOUR_PREFERRED else f"{' x '.join(CONTOUR_PREFERRED)} not both varied"
    return ChartResult(fig, note=note)


def slices(frame: StudyFrame) -> ChartResult:
    """The objective against each varying setting, one panel per setting."""
    if not scored(frame):
        return empty(no_scores_message(frame))
    if not frame.axes:
        return empty("This study has no parameters to draw.")
    rows, note = thin(scored(frame), frame, SLICE_POINTS)
    names = list(frame.axes)
    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True)
    for col, name in enumerate(names, start=1):
        part = [r for r in rows if name in r.settings]
        fig.add_trace(
            go.Scatter(
                x=arr(r.settings[name] for r in part),
                y=arr(r.value for r in part),
                mode="markers",
                showlegend=False,
                marker={
                    "size": 4,
                    "color": ints(r.number for r in part),
                    "colorscale": "Blues",
                    "showscale": col == 1,
                    "colorbar": {"title": {"text": "trial"}},
                },
                customdata=ints(r.number for r in part),
                hovertemplate="trial #%{customdata}<br>%{x}: %{y}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        log = frame.is_log(name)
        fig.update_xaxes(title_text=esc(name), type="log" if log else "-", row=1, col=col)
    layout(fig, "Slice plots", width=max(600, 300 * len(names)))
    fig.update_yaxes(title_text=esc(frame.meta.objective_name), row=1, col=1)
    return ChartResult(fig, note=note)
