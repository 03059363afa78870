"""Optuna's plots: optimization history, parameter importance, parallel coordinates,
contour and slice.

Up to a per-chart number of trials these are Optuna's own functions
(``optuna.visualization``) called on a :class:`FrameStudy`, so they never reload
trials from the database. Beyond it Optuna's functions get slow and their
figures huge (``plot_contour`` of 10,000 trials takes about 20 s and writes a
gigabyte-sized figure; ``plot_parallel_coordinate`` about 14 s), so the same
charts are drawn from the frame by :mod:`charts_large`. Parameter importance
is always Optuna's default evaluator, PED-ANOVA (0.2 s at 10,000 trials; the
fANOVA evaluator takes minutes there and still seconds at 250 trials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import optuna.visualization as ov
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial

from service.dashboard import charts_large
from service.dashboard.charts_base import LR, ChartResult, empty, layout, no_scores_message, scored
from service.dashboard.frame import StudyFrame
from service.dashboard.frame_study import FrozenCache, esc

#: Completed trials up to which Optuna's own plot function draws the chart.
OPTUNA_LIMITS = {"history": 2000, "slice": 1000, "parallel": 500, "contour": 400}
CONTOUR_PREFERRED = (LR, "weight_decay")


def _target(frame: StudyFrame) -> dict[str, Any]:
    """Optuna's target arguments: the first objective of multi-objective studies."""
    name = esc(frame.meta.objective_name)
    if len(frame.meta.directions) > 1:
        first: Callable[[FrozenTrial], float] = lambda t: t.values[0]  # noqa: E731
        return {"target": first, "target_name": name}
    return {"target_name": name}


def _use_optuna(frame: StudyFrame, chart: str) -> bool:
    return len(scored(frame)) <= OPTUNA_LIMITS[chart]


def _note(frame: StudyFrame, chart: str, function: str) -> str:
    return (
        f"{len(scored(frame)):,} completed trials: drawn from the cached trial table "
        f"(Optuna's {function} is used up to {OPTUNA_LIMITS[chart]:,})"
    )


def history(frame: StudyFrame, frozen: FrozenCache) -> ChartResult:
    if not scored(frame):
        return empty(no_scores_message(frame))
    if len(frame.meta.directions) == 1 and not _use_optuna(frame, "history"):
        fig = charts_large.history(frame)
        return ChartResult(fig, note=_note(frame, "history", "plot_optimization_history"))
    fig = ov.plot_optimization_history(frozen.study(frame), **_target(frame))
    return ChartResult(layout(fig, "Optimization history"))


def importance(frame: StudyFrame, frozen: FrozenCache) -> ChartResult:
    rows = scored(frame)
    if len(rows) < 2:
        return empty(
            no_scores_message(frame) if not rows else "Importance needs 2+ completed trials."
        )
    study = frozen.study(frame, ("COMPLETE",))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        fig = ov.plot_param_importances(study, evaluator=evaluator, **_target(frame))
    except (ValueError, RuntimeError) as exc:
        return empty(f"Parameter importance is not available yet: {exc}")
    if not fig.data:
        return empty("No parameter varies across the completed trials yet.")
    return ChartResult(layout(fig, "Parameter importance (PED-ANOVA)"))


def parallel(frame: StudyFrame, frozen: FrozenCache) -> ChartResult:
    if not scored(frame):
        return empty(no_scores_message(frame))
    if not frame.axes:
        return empty("This study has no parameters to draw.")
    if not _use_optuna(frame, "parallel"):
        note = _note(frame, "parallel", "plot_parallel_coordinate")
        return ChartResult(charts_large.parallel(frame), note=note)
    fig = ov.plot_parallel_coordinate(frozen.study(frame, ("COMPLETE",)), **_target(frame))
    return ChartResult(layout(fig, "Parallel coordinates"))


def contour_axes(frame: StudyFrame) -> tuple[str, str] | None:
    """lr x weight_decay when the study varies both, else its first two numeric settings."""
    if all(a in frame.axes for a in CONTOUR_PREFERRED):
        return CONTOUR_PREFERRED
    numeric = [a for a, d in frame.axes.items() if not isinstance(d, CategoricalDistribution)]
    return (numeric[0], numeric[1]) if len(numeric) >= 2 else None


def contour(frame: StudyFrame, frozen: FrozenCache) -> ChartResult:
    if not scored(frame):
        return empty(no_scores_message(frame))
    axes = contour_axes(frame)
    if axes is None:
        return empty("A contour needs two numeric settings (e.g. lr and weight_decay).")
    note = None if axes == CONTOUR_PREFERRED else f"lr x weight_decay not both varied: {axes}"
    if not _use_optuna(frame, "contour"):
        fig = charts_large.contour(frame, *axes)
        return ChartResult(fig, note=_note(frame, "contour", "plot_contour"))
    study = frozen.study(frame, ("COMPLETE",))
    fig = ov.plot_contour(study, params=[esc(a) for a in axes], **_target(frame))
    return ChartResult(layout(fig, f"Contour of {axes[0]} x {axes[1]}"), note=note)


def slices(frame: StudyFrame, frozen: FrozenCache) -> ChartResult:
    if not scored(frame):
        return empty(no_scores_message(frame))
    if not frame.axes:
        return empty("This study has no parameters to draw.")
    if not _use_optuna(frame, "slice"):
        return ChartResult(charts_large.slices(frame), note=_note(frame, "slice", "plot_slice"))
    fig = ov.plot_slice(frozen.study(frame, ("COMPLETE",)), **_target(frame))
    return ChartResult(layout(fig, "Slice plots"))
