"""Shared pieces of the chart builders: results, colours, hover text, thinning."""

from __future__ import annotations

import html
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go

from hpo.settings import OPTIMIZER, OPTIMIZERS
from service.dashboard.frame import StudyFrame, TrialRow

#: Scatter charts draw at most this many points (best trials always kept).
MAX_POINTS = 4000

#: One fixed colour per optimizer of the reference trainer, in ``hpo.settings`` order.
_OPTIMIZER_COLORS = (
    "#7f7f7f",
    "#1f77b4",
    "#17becf",
    "#9467bd",
    "#bcbd22",
    "#ff7f0e",
    "#d62728",
    "#2ca02c",
)
#: (optimizers added to the trainer later get palette colours until given one here)
_KNOWN_COLORS = dict(zip(OPTIMIZERS, _OPTIMIZER_COLORS, strict=False))
PALETTE = ["#8c564b", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def esc(text: Any) -> str:
    """Escape text for Plotly (which decodes ``&lt;`` ``&gt;`` ``&amp;`` back for display)."""
    return html.escape(str(text), quote=False)


@dataclass
class ChartResult:
    """A figure, or a message saying why there is none; ``note`` qualifies the figure."""

    figure: go.Figure | None = None
    message: str | None = None
    note: str | None = None
    extra: dict[str, Any] | None = None


def arr(values: Iterable[Any]) -> Any:
    """Numbers as a numpy array (Plotly validates and encodes it at C speed, as a typed
    array); anything else as a list, strings escaped."""
    items = list(values)
    try:
        return np.asarray([math.nan if v is None else v for v in items], dtype=float)
    except (TypeError, ValueError):
        return [esc(v) if isinstance(v, str) else v for v in items]


def ints(values: Iterable[int]) -> np.ndarray:
    """Integers as an int64 array (sent as a typed array)."""
    return np.asarray(list(values), dtype=np.int64)


def empty(message: str) -> ChartResult:
    """No figure, with the message saying why."""
    return ChartResult(message=message)


def color_for(value: Any, known: Sequence[Any] = ()) -> str:
    """A stable colour for a group: the trainer's optimizers have fixed ones."""
    key = str(value)
    if key in _KNOWN_COLORS:
        return _KNOWN_COLORS[key]
    others = [str(k) for k in known if str(k) not in _KNOWN_COLORS]
    index = others.index(key) if key in others else sum(map(ord, key))
    return PALETTE[index % len(PALETTE)]


def layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    """The dashboard's common layout; ``kwargs`` override the defaults."""
    settings: dict[str, Any] = {
        "title": {"text": esc(title), "x": 0.01, "xanchor": "left"},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "template": "plotly_white",
        "legend": {"itemsizing": "constant"},
    }
    fig.update_layout(**(settings | kwargs))
    return fig


def fmt(value: Any) -> str:
    """Short display of a value: 4 significant digits, thousands separated."""
    if isinstance(value, float):
        if math.isfinite(value) and 1e4 <= abs(value) < 1e12:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, datetime):  # aware (the read side's), naive means UTC
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def settings_text(row: TrialRow, frame: StudyFrame) -> str:
    """Hover text: trial number, value and the settings that vary, escaped (kept per trial)."""

    def build(r: TrialRow) -> str:
        parts = [f"trial #{r.number}", f"{esc(frame.meta.objective_name)} = {fmt(r.value)}"]
        parts += [f"{esc(k)} = {esc(fmt(v))}" for k, v in r.settings.items() if k in frame.axes]
        return "<br>".join(parts)

    return frame.per_trial("hover", row, build)


def group_by(rows: Sequence[TrialRow], key: str) -> dict[Any, list[TrialRow]]:
    """Rows grouped by one of their settings (None when unset)."""
    out: dict[Any, list[TrialRow]] = {}
    for r in rows:
        out.setdefault(r.settings.get(key), []).append(r)
    return out


def optimizer_order(frame: StudyFrame, values: set[Any]) -> list[Any]:
    """Optimizers in the spec's order (then the rest sorted), so colours stay put."""
    dist = frame.axes.get(OPTIMIZER)
    ordered = list(getattr(dist, "choices", ()))
    return [v for v in ordered if v in values] + sorted(
        (v for v in values if v not in ordered), key=str
    )


def scored(frame: StudyFrame) -> list[TrialRow]:
    """COMPLETE trials with a finite objective value."""
    return [
        r
        for r in frame.rows
        if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value)
    ]


def thin(
    rows: list[TrialRow], frame: StudyFrame, limit: int = MAX_POINTS
) -> tuple[list[TrialRow], str | None]:
    """At most ``limit`` rows: the best 10 % always, a seeded sample of the rest."""
    if len(rows) <= limit:
        return rows, None
    ranked = sorted(rows, key=lambda r: r.value or 0.0, reverse=frame.meta.maximize)
    keep = ranked[: limit // 10]
    rest = ranked[limit // 10 :]
    keep += random.Random(frame.meta.study_id).sample(rest, limit - len(keep))
    keep.sort(key=lambda r: r.number)
    return keep, f"showing {len(keep):,} of {len(rows):,} trials (the best 10 % always shown)"


def no_scores_message(frame: StudyFrame) -> str:
    """Why there is nothing to plot yet."""
    if not frame.rows:
        return "No trials yet: charts appear when the first trial finishes."
    failed = sum(r.state == "FAIL" for r in frame.rows)
    if failed == len(frame.rows):
        return f"All {failed} trials failed: see the trials table for their reasons."
    if not any(r.state == "COMPLETE" for r in frame.rows):
        return "No completed trial yet: charts appear when the first trial completes."
    return "No completed trial with a finite objective value yet."


def needs(frame: StudyFrame, setting: str, what: str) -> ChartResult | None:
    """An empty result when the study does not vary ``setting``."""
    if setting in frame.axes:
        return None
    fixed = frame.meta.fixed
    if setting in fixed:
        return empty(f"{what} is fixed at {fmt(fixed[setting])} in this study: nothing to compare.")
    return empty(f"This study's search space has no '{setting}' setting.")
