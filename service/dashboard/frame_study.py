"""Optuna's own plots over a cached :class:`StudyFrame`, without reloading trials.

``optuna.visualization`` and ``optuna.importance`` take a ``Study`` and call
``study.get_trials(...)``; against the RDB storage that loads every trial
(about 10 s for 10,000 trials on SQLite). :class:`FrameStudy` is a ``Study``
whose trials come from the frame instead: ``FrozenTrial`` objects built once
per trial and reused across versions, in *settings* space (``lr_sgd`` and
``lr_adam`` both appear as ``lr``), with every user-supplied name and
categorical value HTML-escaped, because Plotly renders its text as HTML-like
markup.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from service.dashboard.frame import StudyFrame, TrialRow

#: Studies whose FrozenTrials are kept (least recently used go first).
MAX_STUDIES = 16


def esc(text: Any) -> str:
    """Escape text for Plotly (which decodes ``&lt;`` ``&gt;`` ``&amp;`` back for display)."""
    return html.escape(str(text), quote=False)


def _esc_value(value: Any) -> Any:
    return esc(value) if isinstance(value, str) else value


def display_distribution(dist: BaseDistribution) -> BaseDistribution:
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


class FrozenCache:
    """FrozenTrials per (study, trial id), reused while the trial stays finished."""

    def __init__(self) -> None:
        self._by_study: OrderedDict[int, tuple[str, dict[int, tuple[str, FrozenTrial]]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def study(self, frame: StudyFrame, states: Sequence[str] | None = None) -> FrameStudy:
        """A FrameStudy over the frame's trials (all, or those in ``states``)."""
        with self._lock:
            axes = {esc(name): display_distribution(d) for name, d in frame.axes.items()}
            signature = repr(sorted(axes.items()))
            cached_axes, known = self._by_study.get(frame.meta.study_id, ("", {}))
            if cached_axes != signature:  # a new parameter changed the axes: rebuild all
                known = {}
                self._by_study[frame.meta.study_id] = (signature, known)
            self._by_study.move_to_end(frame.meta.study_id)
            while len(self._by_study) > MAX_STUDIES:
                self._by_study.popitem(last=False)
            trials = []
            for row in frame.rows:
                if states is not None and row.state not in states:
                    continue
                cached = known.get(row.trial_id)
                if cached is None or cached[0] != row.state:
                    cached = (row.state, _frozen(row, frame, axes))
                    known[row.trial_id] = cached
                trials.append(cached[1])
        return FrameStudy(frame.meta.name, frame.meta.directions, trials)

    def forget(self, study_id: int) -> None:
        with self._lock:
            self._by_study.pop(study_id, None)


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
        datetime_start=row.start,
        datetime_complete=row.complete,
        params=params,
        distributions={name: axes[name] for name in params},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=row.trial_id,
    )
