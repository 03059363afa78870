"""Box plots whose statistics the server computes: the browser gets each box's quartiles
and whiskers plus the few points it draws (every point of a small group, only the
outliers of a big one), never a big study's raw values.

Plotly's box trace takes precomputed ``q1``/``median``/``q3``/``lowerfence``/
``upperfence``; its ``y`` is then a 2-D array, one list of sample points per box, drawn
as points beside the box (``customdata`` and ``text`` nest the same way). The
statistics are Plotly's own defaults, so the boxes look as when Plotly computed them:
quartiles by its ``linear`` quartile method (numpy's ``hazen``: position ``p * n - 0.5``),
whiskers at the most extreme values within 1.5 IQR of the box, outliers beyond them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

#: Plotly's whisker reach, in interquartile ranges.
WHISKER_IQR = 1.5
#: At most this many outliers per box are drawn (evenly spread over their sorted values,
#: the extremes always kept); the note says so.
OUTLIER_LIMIT = 500


@dataclass(frozen=True)
class BoxStats:
    """One box: its statistics and the indices (into the values given) of its points."""

    q1: float
    median: float
    q3: float
    lowerfence: float
    upperfence: float
    outliers: int
    points: np.ndarray

    @property
    def sampled(self) -> bool:
        """Whether fewer outliers are drawn than there are."""
        return len(self.points) < self.outliers


def box_stats(values: Sequence[float | None] | np.ndarray, all_points: bool = False) -> BoxStats:
    """Statistics of one non-empty group of finite values; ``points`` are every value's
    index when ``all_points``, else the outliers' (at most :data:`OUTLIER_LIMIT`)."""
    data = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(data, [25, 50, 75], method="hazen")
    reach = WHISKER_IQR * (q3 - q1)
    inside = (data >= q1 - reach) & (data <= q3 + reach)
    out = np.flatnonzero(~inside)
    if all_points:
        points = np.arange(len(data))
    elif len(out) > OUTLIER_LIMIT:
        ranked = out[np.argsort(data[out], kind="stable")]
        points = ranked[np.linspace(0, len(ranked) - 1, OUTLIER_LIMIT).round().astype(int)]
    else:
        points = out
    within = data[inside]  # never empty: the median is within the box
    return BoxStats(
        q1=float(q1),
        median=float(median),
        q3=float(q3),
        lowerfence=float(within.min()),
        upperfence=float(within.max()),
        outliers=len(out),
        points=points,
    )


def box_fields(stats: Sequence[BoxStats]) -> dict[str, list[float]]:
    """The precomputed-statistics attributes of a box trace, one entry per box."""
    return {
        "q1": [s.q1 for s in stats],
        "median": [s.median for s in stats],
        "q3": [s.q3 for s in stats],
        "lowerfence": [s.lowerfence for s in stats],
        "upperfence": [s.upperfence for s in stats],
    }


def point_box(
    values: Sequence[float | None],
    numbers: Sequence[int],
    text: Callable[[int], str],
    all_points: bool,
    **trace: Any,
) -> tuple[go.Box, BoxStats]:
    """One box of ``values`` with its points (every one when ``all_points``, else the
    outliers): each point's trial number as ``customdata`` (click-through) and
    ``text(i)`` of its index as hover text; ``trace`` adds the position and style."""
    stats = box_stats(values, all_points)
    shown = [int(i) for i in stats.points]
    if not shown:  # Plotly draws no box for an empty list of points: give none
        return go.Box(**box_fields([stats]), boxpoints=False, **trace), stats
    box = go.Box(
        **box_fields([stats]),
        y=[[values[i] for i in shown]],
        customdata=[[int(numbers[i]) for i in shown]],
        text=_row([text(i) for i in shown]),
        boxpoints="all",
        **trace,
    )
    return box, stats


def _row(texts: list[str]) -> np.ndarray:
    """Texts as a one-row 2-D array: Plotly's validator keeps an array's shape, where it
    would turn a nested list's inner lists into strings."""
    out = np.empty((1, len(texts)), dtype=object)
    out[0, :] = texts
    return out


def grouped_box(groups: Mapping[str, Sequence[float | None]], **trace: Any) -> go.Box:
    """One trace of boxes without points, one box per group at the group's category."""
    stats = [box_stats(values) for values in groups.values()]
    return go.Box(x=list(groups), **box_fields(stats), boxpoints=False, **trace)


def points_note(total: int, stats: Sequence[BoxStats], all_points: bool) -> str | None:
    """What the chart says about its points: nothing when every point is drawn."""
    if all_points:
        return None
    drawn = sum(len(s.points) for s in stats)
    outliers = sum(s.outliers for s in stats)
    note = f"{total:,} trials: boxes computed on the server, points drawn for outliers only"
    if drawn < outliers:
        note += f" ({drawn:,} of {outliers:,} outliers, evenly spread)"
    return note
