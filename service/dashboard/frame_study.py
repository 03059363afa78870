"""An ``optuna.Study`` over a cached :class:`StudyFrame`, for Optuna's importance evaluator.

``optuna.importance`` takes a ``Study`` and calls ``study.get_trials(...)``;
against the RDB storage that loads every trial (about 10 s for 10,000 trials
on SQLite). :func:`frame_study` returns a ``Study`` whose trials come from the
frame instead: ``FrozenTrial`` objects built once per trial (kept with the
frame, and by the next frame for unchanged trials), in *settings* space
(``lr_sgd`` and ``lr_adam`` both appear as ``lr``), with every user-supplied
name and categorical value HTML-escaped, because Plotly renders its text as
HTML-like markup.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from service.dashboard.charts_base import esc
from service.dashboard.frame import StudyFrame, TrialRow
from service.storage.optuna_rows import as_frozen_time


def _esc_value(value: Any) -> Any:
    return esc(value) if isinstance(value, str) else value


def display_distribution(dist: BaseDistribution) -> BaseDistribution:
    """A distribution whose categorical choices are escaped for display."""
    if isinstance(dist, CategoricalDistribution):
        return CategoricalDistribution([_esc_value(c) for c in dist.choices])
    return dist


class FrameStudy(optuna.Study):
    """A read-only ``optuna.Study`` backed by a frame's trials (never touches storage)."""

    def __init__(self, name: str, directions: list[str], trials: list[FrozenTrial]) -> None:
        # Deliberately no super().__init__: there is no storage behind this study.
        self.study_name = esc(name)
        self._frame_directions = [StudyDirection[d.upper()] for d in directions]
        self._frame_trials = trials

    @property
    def directions(self) -> list[StudyDirection]:
        return list(self._frame_directions)

    @property
    def metric_names(self) -> list[str] | None:
        return None

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {}

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states is None:
            return list(self._frame_trials)
        return [t for t in self._frame_trials if t.state in states]

    def _is_multi_objective(self) -> bool:
        return len(self._frame_directions) > 1


def frame_study(frame: StudyFrame, states: Sequence[str] | None = None) -> FrameStudy:
    """A FrameStudy over the frame's trials (all, or those whose state is in ``states``)."""
    axes = {esc(name): display_distribution(d) for name, d in frame.axes.items()}

    def build(row: TrialRow) -> FrozenTrial:
        return _frozen(row, frame, axes)

    trials = [
        frame.per_trial("frozen", row, build)
        for row in frame.rows
        if states is None or row.state in states
    ]
    return FrameStudy(frame.meta.name, frame.meta.directions, trials)


def _frozen(row: TrialRow, frame: StudyFrame, axes: dict[str, BaseDistribution]) -> FrozenTrial:
    params = {esc(frame.axis_of_param[p]): _esc_value(v) for p, v in row.params.items()}
    values = list(row.values) if row.values else None
    value = None if values else row.value
    if row.state != "COMPLETE":
        value, values = None, None
    return FrozenTrial(
        number=row.number,
        state=TrialState[row.state],
        value=value,
        values=values,
        datetime_start=as_frozen_time(row.start),
        datetime_complete=as_frozen_time(row.complete),
        params=params,
        distributions={name: axes[name] for name in params},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=row.trial_id,
    )
