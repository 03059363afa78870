"""An in-memory, incrementally refreshed table of a study's trials.

Every chart of a study is drawn from its :class:`StudyFrame`: one row per
trial with its state, objective value, raw parameters and *settings* (the
parameters renamed by the spec's ``setting:`` plus the fixed settings). Rows
are decoded by :mod:`service.storage.optuna_rows`, as the API's are.

The frame is cached per study (``DashboardState.frame``) under a cheap SQL
fingerprint (:func:`queries.trials_version`). When the fingerprint changes,
:func:`load_frame` reads again only the trials that were unfinished or are
new: a finished Optuna trial never changes, so keeping a 10,000-trial study
current costs one small query per change instead of reloading every trial.
What charts derive per trial (hover texts, Optuna ``FrozenTrial`` objects) is
kept with the frame and carried over to the next one for the unchanged rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from sqlalchemy.orm import Session

from hpo.spec import StudySpec
from service.core.errors import StudyNotFound
from service.dashboard import queries
from service.storage.optuna_rows import (
    as_utc,
    decode_value,
    distribution,
    study_other_values,
    study_param_rows,
    study_trial_rows,
)
from service.studies.specs import stored_spec

UNFINISHED = ("RUNNING", "WAITING")
T = TypeVar("T")


@dataclass(slots=True)
class TrialRow:
    """One trial as the charts see it (``state`` is Optuna's state name)."""

    trial_id: int
    number: int
    state: str
    value: float | None
    start: datetime | None
    complete: datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    values: tuple[float | None, ...] | None = None

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.complete is None:
            return None
        return (self.complete - self.start).total_seconds()


@dataclass(frozen=True)
class StudyMeta:
    """What a study is, independent of its trials (``spec`` is None for studies
    created outside the service)."""

    study_id: int
    name: str
    directions: list[str]
    spec: StudySpec | None
    run_state: str | None

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def objective_name(self) -> str:
        return self.spec.objective_names[0] if self.spec else "objective"

    @property
    def sampler(self) -> str:
        return self.spec.sampler.name if self.spec else "unknown"

    @property
    def pruner(self) -> str:
        return self.spec.pruner.name if self.spec else "unknown"

    @property
    def fixed(self) -> dict[str, Any]:
        return dict(self.spec.fixed) if self.spec else {}

    def setting_of(self, param: str) -> str:
        """The training setting a parameter sets (its ``setting:``, else its name)."""
        if self.spec and param in self.spec.space:
            return self.spec.space[param].setting or param
        return param

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's settings: the fixed ones plus its parameters by setting name."""
        return self.fixed | {self.setting_of(k): v for k, v in params.items()}


def load_meta(session: Session, study_id: int) -> StudyMeta:
    """The study's meta data (raises StudyNotFound)."""
    rows = queries.optuna_studies(session, study_id)
    if not rows:
        raise StudyNotFound(f"study {study_id} not found", "study_id")
    return meta_from_row(rows[0])


def meta_from_row(row: queries.StudyRow) -> StudyMeta:
    """A study row as meta data (a spec that no longer validates is dropped)."""
    spec = None
    if row.spec:
        try:
            spec = stored_spec(row.spec)
        except ValueError:  # a spec written by an older version: show the study without it
            spec = None
    return StudyMeta(row.study_id, row.name, row.directions, spec, row.run_state)


def merge_distributions(dists: list[BaseDistribution]) -> BaseDistribution | None:
    """One distribution covering several parameters that set the same setting."""
    if all(isinstance(d, FloatDistribution) for d in dists):
        fd = [d for d in dists if isinstance(d, FloatDistribution)]
        log = all(d.log for d in fd)
        return FloatDistribution(min(d.low for d in fd), max(d.high for d in fd), log=log)
    if all(isinstance(d, IntDistribution) for d in dists):
        idd = [d for d in dists if isinstance(d, IntDistribution)]
        return IntDistribution(
            min(d.low for d in idd), max(d.high for d in idd), log=all(d.log for d in idd)
        )
    if all(isinstance(d, CategoricalDistribution) for d in dists):
        choices: list[Any] = []
        for d in dists:
            choices += [c for c in d.choices if c not in choices]  # type: ignore[attr-defined]
        return CategoricalDistribution(choices)
    return None


class StudyFrame:
    """The trials of one study at one version (immutable once built)."""

    def __init__(
        self,
        meta: StudyMeta,
        rows: list[TrialRow],
        version: tuple[Any, ...],
        param_dists: dict[str, BaseDistribution],
    ) -> None:
        self.meta = meta
        self.rows = rows
        self.version = version
        self.param_dists = param_dists
        self.by_number = {r.number: r for r in rows}
        #: kind -> trial id -> what a chart derived from that trial's row
        self._per_trial: dict[str, dict[int, Any]] = {}

    @property
    def key(self) -> str:
        return "-".join(str(v) for v in self.version)

    def per_trial(self, kind: str, row: TrialRow, build: Callable[[TrialRow], T]) -> T:
        """``build(row)``, computed once per trial and frame (and kept by the next frame
        for the rows that did not change, see :meth:`inherit`)."""
        memo = self._per_trial.setdefault(kind, {})
        value = memo.get(row.trial_id)
        if value is None:
            value = memo[row.trial_id] = build(row)
        return value  # type: ignore[no-any-return]

    def memo(self, kind: str) -> dict[int, Any]:
        """trial id -> what a chart derived for that trial, filled by the chart itself
        (for values loaded in one query per frame, where :meth:`per_trial` would do
        one per trial); kept by the next frame like :meth:`per_trial`'s."""
        return self._per_trial.setdefault(kind, {})

    def inherit(self, old: StudyFrame, below_trial_id: int) -> None:
        """Keep ``old``'s derived values of the rows both frames share (trial ids below
        ``below_trial_id``), unless what they depend on (axes, meta) changed."""
        if old.meta != self.meta or old.axes != self.axes:
            return
        for kind, memo in old._per_trial.items():
            self._per_trial[kind] = {t: v for t, v in memo.items() if t < below_trial_id}

    @cached_property
    def axes(self) -> dict[str, BaseDistribution]:
        """Chart axes: one per varying setting (merged distributions), else per parameter."""
        groups: dict[str, list[str]] = {}
        for param in self.param_dists:
            groups.setdefault(self.meta.setting_of(param), []).append(param)
        axes: dict[str, BaseDistribution] = {}
        for setting, params in groups.items():
            merged = merge_distributions([self.param_dists[p] for p in params])
            if merged is not None and setting not in axes:
                axes[setting] = merged
            else:
                axes.update({p: self.param_dists[p] for p in params})
        return axes

    @cached_property
    def axis_of_param(self) -> dict[str, str]:
        return {
            p: (s if s in self.axes else p)
            for p in self.param_dists
            for s in [self.meta.setting_of(p)]
        }

    def is_log(self, setting: str) -> bool:
        dist = self.axes.get(setting)
        return bool(getattr(dist, "log", False))

    def values_of(self, setting: str) -> set[Any]:
        """Distinct values a setting takes (varying or fixed)."""
        if setting in self.axes:
            return {r.settings[setting] for r in self.rows if setting in r.settings}
        fixed = self.meta.fixed
        return {fixed[setting]} if setting in fixed else set()


def decode_rows(
    trials: Iterable[Any],
    params: Iterable[tuple[int, str, float, str]],
    meta: StudyMeta,
    param_dists: dict[str, BaseDistribution],
) -> list[TrialRow]:
    """Rows of :func:`optuna_rows.study_trial_rows` and ``study_param_rows`` -> TrialRows
    (``param_dists`` collects the distribution of every parameter seen)."""
    fixed = meta.fixed
    out = [
        TrialRow(
            tid,
            number,
            getattr(state, "name", str(state)),
            decode_value(value, vtype),
            as_utc(start),
            as_utc(complete),
            {},
            dict(fixed),
        )
        for tid, number, state, start, complete, value, vtype in trials
    ]
    by_id = {r.trial_id: r for r in out}
    setting: dict[str, str] = {}
    row: TrialRow | None = None
    for tid, pname, pvalue, djson in params:
        if row is None or row.trial_id != tid:
            row = by_id.get(tid)
            if row is None:
                continue
        dist = distribution(djson)
        if pname not in param_dists:
            param_dists[pname] = dist
            setting[pname] = meta.setting_of(pname)
        external = dist.to_external_repr(pvalue)
        row.params[pname] = external
        row.settings[setting.get(pname) or meta.setting_of(pname)] = external
    return out


def load_frame(
    session: Session, study_id: int, old: StudyFrame | None, version: tuple[Any, ...]
) -> StudyFrame:
    """The study's frame at ``version``: ``old``'s finished rows plus the trials read
    again (unfinished in ``old``, or new). Raises StudyNotFound."""
    meta = load_meta(session, study_id)
    if old is not None and (old.meta.name != meta.name or version[0] < len(old.rows)):
        old = None  # the study was deleted and its id reused: start again
    start = 0
    if old is not None:
        unfinished = [r.trial_id for r in old.rows if not r.finished]
        start = min(unfinished) if unfinished else int(old.version[1]) + 1
    dists = dict(old.param_dists) if old is not None else {}
    fresh = decode_rows(
        study_trial_rows(session, study_id, start),
        study_param_rows(session, study_id, start),
        meta,
        dists,
    )
    if len(meta.directions) > 1:
        extra = study_other_values(session, study_id, start)
        for r in fresh:
            if r.value is not None and r.trial_id in extra:
                r.values = (r.value, *extra[r.trial_id])
    kept = [r for r in old.rows if r.trial_id < start] if old is not None else []
    frame = StudyFrame(meta, kept + fresh, version, dists)
    if old is not None:
        frame.inherit(old, start)
    return frame
