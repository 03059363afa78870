"""Privacy, fairness and robustness on the dashboard (issue 25), drawn on the server.

* The study page's front in words: for a two-objective study, each step along its Pareto
  front says what one objective gains and what the other costs ("+1.2 points of
  val_accuracy cost epsilon 3.1 → 6.0"), accuracies in points, other metrics as values.
* The trial page's panel: per-group bars of every group family in the trial's final
  metrics (hpo.responsible's shape: the trainer's ``test_accuracy[c]``, an own
  objective's ``metric[group]``), the epsilon curve of a DP-SGD run, and a note that
  private trials train solo, never in packs.

Both are plain HTML and SVG (no script, no plotly.js bundle): the numbers are known
when the page is rendered. Every label is escaped by the templates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hpo.responsible import EPSILON, solo_reason, split_groups
from hpo.schemas import BestTrial
from hpo.settings import SettingsError, TrainConfig
from service.dashboard.frame import StudyMeta
from service.studies.records import pareto_front

#: How many steps of a front the study page puts in words.
MAX_STEPS = 8
PLOT_W, PLOT_H, PAD = 320.0, 140.0, 24.0
BAR_H = 14.0


def _is_share(name: str) -> bool:
    """Accuracies (and other 0-1 shares): spoken of in points."""
    return "accuracy" in name


def _amount(name: str, delta: float) -> str:
    if _is_share(name):
        return f"{100 * abs(delta):.1f} points of {name}"
    return f"{abs(delta):.3g} of {name}"


def tradeoff_words(names: list[str], directions: list[str], front: list[list[float]]) -> list[str]:
    """One sentence per step along a two-objective front, sorted by the first objective
    from its worst to its best value: what the step gains and what it costs."""
    if len(names) != 2 or len(directions) != 2:
        return []
    points = [p for p in front if len(p) == 2 and all(math.isfinite(v) for v in p)]
    better_first = directions[0] == "maximize"
    points.sort(key=lambda p: p[0], reverse=not better_first)
    out = []
    for (a0, b0), (a1, b1) in zip(points, points[1:], strict=False):
        gain = a1 - a0
        if gain == 0:
            continue
        second = f"{b0:.3g} → {b1:.3g}"
        if _is_share(names[1]):
            second = f"{100 * abs(b1 - b0):.1f} points of {names[1]} ({b0:.3f} → {b1:.3f})"
            out.append(f"+{_amount(names[0], gain)} cost {second}")
        else:
            out.append(f"+{_amount(names[0], gain)} cost {names[1]} {second}")
    return out[-MAX_STEPS:]


def study_tradeoffs(session: Session, meta: StudyMeta) -> list[str]:
    """The study page's front in words (empty unless the study has two objectives)."""
    if meta.spec is None or len(meta.directions) != 2:
        return []
    front: list[BestTrial] = pareto_front(session, meta.study_id, meta.directions)
    values = [[float(v) for v in t.values if v is not None] for t in front]
    return tradeoff_words(meta.spec.objective_names, meta.directions, values)


@dataclass
class Bars:
    """One group family as horizontal bars (SVG coordinates precomputed)."""

    family: str
    rows: list[dict[str, Any]]
    height: float
    worst: str


@dataclass
class Panel:
    """What the trial page's responsible panel shows (``shown``: anything at all)."""

    bars: list[Bars] = field(default_factory=list)
    epsilon_points: str = ""  # SVG polyline points
    epsilon_labels: list[dict[str, Any]] = field(default_factory=list)
    epsilon_final: float | None = None
    solo: str | None = None

    @property
    def shown(self) -> bool:
        return bool(self.bars or self.epsilon_points or self.solo)


def _bars(family: str, groups: dict[str, float]) -> Bars:
    top = max(max(groups.values()), 1e-12)
    scale = 1.0 if top <= 1.0 else top
    rows = []
    ordered = sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0]))
    worst = min(groups, key=lambda g: groups[g])
    for i, (group, value) in enumerate(ordered):
        rows.append(
            {
                "group": group,
                "value": value,
                "y": i * (BAR_H + 4),
                "width": max(0.0, value / scale) * (PLOT_W - 90),
                "worst": group == worst,
            }
        )
    return Bars(family, rows, len(rows) * (BAR_H + 4), worst)


def _epsilon_curve(epochs: list[dict[str, Any]], panel: Panel) -> None:
    points = [
        (float(e["epoch"]), float(e[EPSILON]))
        for e in epochs
        if isinstance(e.get(EPSILON), int | float) and math.isfinite(e[EPSILON])
    ]
    if not points:
        return
    x_max = max(max(x for x, _ in points), 1.0)
    y_max = max(max(y for _, y in points), 1e-9)

    def xy(x: float, y: float) -> tuple[float, float]:
        return (
            PAD + (x / x_max) * (PLOT_W - 2 * PAD),
            PLOT_H - PAD - (y / y_max) * (PLOT_H - 2 * PAD),
        )

    panel.epsilon_points = " ".join(f"{px:.1f},{py:.1f}" for px, py in (xy(*p) for p in points))
    panel.epsilon_labels = [
        {"x": xy(x, y)[0], "y": xy(x, y)[1], "epoch": int(x), "epsilon": y} for x, y in points
    ]
    panel.epsilon_final = points[-1][1]


def trial_panel(settings: dict[str, Any], final: Any, epochs: list[dict[str, Any]]) -> Panel:
    """The trial page's panel from the trial's settings, final metrics and epochs."""
    panel = Panel()
    if isinstance(final, dict):
        panel.bars = [_bars(f, g) for f, g in sorted(split_groups(final).items()) if g]
    _epsilon_curve(epochs, panel)
    try:
        config = TrainConfig.from_settings(settings)
    except SettingsError:
        config = None  # not the built-in trainer's settings (an own objective)
    if config is not None and config.privacy is not None:
        panel.solo = solo_reason(config)
    return panel
