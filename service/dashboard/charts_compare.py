"""Cross-study comparison: optimization histories overlaid, objective distributions side by side."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from service.dashboard.charts_base import (
    PALETTE,
    ChartResult,
    arr,
    empty,
    esc,
    ints,
    layout,
    scored,
)
from service.dashboard.frame import StudyFrame


def _label(frame: StudyFrame) -> str:
    return f"{esc(frame.meta.name)} (#{frame.meta.study_id})"


def histories(frames: list[StudyFrame]) -> ChartResult:
    """Best-so-far value against trial number, one line per study."""
    fig = go.Figure()
    skipped = []
    for i, frame in enumerate(frames):
        rows = scored(frame)
        if not rows:
            skipped.append(frame.meta.name)
            continue
        values = np.array([r.value for r in rows], dtype=float)
        acc = np.maximum.accumulate if frame.meta.maximize else np.minimum.accumulate
        fig.add_trace(
            go.Scatter(
                x=ints(r.number for r in rows),
                y=acc(values),
                mode="lines",
                name=_label(frame),
                line={"shape": "hv", "width": 2, "color": PALETTE[i % len(PALETTE)]},
                hovertemplate="trial %{x}: best %{y:.4f}<extra>" + _label(frame) + "</extra>",
            )
        )
    if not fig.data:
        return empty("None of the selected studies has a completed trial yet.")
    layout(fig, "Best value so far", xaxis_title="trial", yaxis_title="best objective")
    note = ("no completed trial yet: " + ", ".join(skipped)) if skipped else None
    return ChartResult(fig, note=note)


def distributions(frames: list[StudyFrame]) -> ChartResult:
    """Distribution of the objective per study (violin with box), best value marked."""
    fig = go.Figure()
    for i, frame in enumerate(frames):
        rows = scored(frame)
        if not rows:
            continue
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Violin(
                y=arr(r.value for r in rows),
                name=_label(frame),
                box_visible=True,
                meanline_visible=True,
                points=False,
                line_color=color,
                showlegend=False,
            )
        )
        best = max(r.value for r in rows) if frame.meta.maximize else min(r.value for r in rows)
        fig.add_trace(
            go.Scatter(
                x=[_label(frame)],
                y=[best],
                mode="markers",
                showlegend=False,
                marker={"symbol": "star", "size": 16, "color": color, "line": {"width": 1}},
                hovertemplate="best %{y}<extra></extra>",
            )
        )
    if not fig.data:
        return empty("None of the selected studies has a completed trial yet.")
    layout(fig, "Objective distribution per study (★ best)", yaxis_title="objective")
    return ChartResult(fig)
