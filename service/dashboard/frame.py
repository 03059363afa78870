"""An in-memory, incrementally refreshed table of a study's trials.

Every chart of a study is drawn from its :class:`StudyFrame`: one row per
trial with its state, objective value, raw parameters and *settings* (the
parameters renamed by the spec's ``setting:`` plus the fixed settings).

The frame is cached per study and keyed by a cheap SQL fingerprint
(:func:`queries.trials_version`). When the fingerprint changes only trials
that were unfinished or new are read again: a finished Optuna trial never
changes, so keeping a 10,000-trial study current costs one small query per
change instead of reloading every trial.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from sqlalchemy.orm import Session

from hpo.spec import StudySpec
from service.core.errors import StudyNotFound
from service.dashboard import queries
from service.studies.specs import stored_spec

UNFINISHED = ("RUNNING", "WAITING")


@lru_cache(maxsize=4096)
def distribution(distribution_json: str) -> BaseDistribution:
    return json_to_distribution(distribution_json)


def decode_value(value: float | None, kind: Any) -> float | None:
    name = getattr(kind, "name", "FINITE")
    if name == "INF_POS":
        return math.inf
    if name == "INF_NEG":
        return -math.inf
    return value


def as_utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC datetimes."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(slots=True)
class TrialRow:
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
    """What a study is, independent of its trials."""

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
        if self.spec and param in self.spec.space:
            return self.spec.space[param].setting or param
        return param


def load_meta(session: Session, study_id: int) -> StudyMeta:
    rows = queries.list_studies(session, study_id)
    if not rows:
        raise StudyNotFound(f"study {study_id} not found", "study_id")
    return meta_from_row(rows[0])


def meta_from_row(row: queries.StudyRow) -> StudyMeta:
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
        self.built_at = datetime.now(UTC)
        #: per-frame memo for derived data shared by charts (e.g. hover texts)
        self.memo: dict[str, Any] = {}

    @property
    def key(self) -> str:
        return "-".join(str(v) for v in self.version)

    def finished(self, *states: str) -> list[TrialRow]:
        wanted = states or ("COMPLETE",)
        return [r for r in self.rows if r.state in wanted]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"), 0)
        for r in self.rows:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def best(self) -> TrialRow | None:
        done = [r for r in self.rows if r.state == "COMPLETE" and r.value is not None]
        if not done:
            return None
        pick = max if self.meta.maximize else min
        return pick(done, key=lambda r: (r.value, -r.number))

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
        return {p: (s if s in self.axes else p) for p in self.param_dists
                for s in [self.meta.setting_of(p)]}  # fmt: skip

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
    """Rows of :func:`queries.trial_rows` and :func:`queries.param_rows` -> TrialRows."""
    fixed = meta.fixed
    out = [
        TrialRow(tid, number, getattr(state, "name", str(state)), decode_value(value, vtype),
                 as_utc(start), as_utc(complete), {}, dict(fixed))
        for tid, number, state, start, complete, value, vtype in trials
    ]  # fmt: skip
    by_id = {r.trial_id: r for r in out}
    setting = {}
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


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    frame: StudyFrame | None = None


class FrameCache:
    """Study frames by study id, refreshed incrementally when their version changes.

    At most ``max_studies`` frames are kept (least recently used go first): a
    10,000-trial frame is a few tens of MB.
    """

    def __init__(self, max_studies: int = 32) -> None:
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.max_studies = max_studies

    def _entry(self, study_id: int) -> _Entry:
        with self._lock:
            entry = self._entries.setdefault(study_id, _Entry())
            self._entries.move_to_end(study_id)
            while len(self._entries) > self.max_studies:
                self._entries.popitem(last=False)
            return entry

    def get(self, session: Session, study_id: int) -> StudyFrame:
        """The current frame of a study (raises StudyNotFound)."""
        version = queries.trials_version(session, study_id)
        entry = self._entry(study_id)
        with entry.lock:
            old = entry.frame
            if old is not None and old.version == version:
                return old
            entry.frame = self._refresh(session, study_id, old, version)
            return entry.frame

    def peek(self, study_id: int) -> StudyFrame | None:
        """The cached frame, whatever its version (None when never loaded)."""
        return self._entry(study_id).frame

    def _refresh(
        self, session: Session, study_id: int, old: StudyFrame | None, version: tuple[Any, ...]
    ) -> StudyFrame:
        meta = load_meta(session, study_id)
        if old is not None and (old.meta.name != meta.name or version[0] < len(old.rows)):
            old = None  # the study was deleted and its id reused: start again
        start = 0
        if old is not None:
            unfinished = [r.trial_id for r in old.rows if not r.finished]
            start = min(unfinished) if unfinished else int(old.version[1]) + 1
        dists = dict(old.param_dists) if old is not None else {}
        fresh = decode_rows(
            queries.trial_rows(session, study_id, start),
            queries.param_rows(session, study_id, start),
            meta,
            dists,
        )
        if len(meta.directions) > 1:
            _attach_objectives(session, study_id, start, fresh)
        kept = [r for r in old.rows if r.trial_id < start] if old is not None else []
        return StudyFrame(meta, kept + fresh, version, dists)

    def forget(self, study_id: int) -> None:
        with self._lock:
            self._entries.pop(study_id, None)


def _attach_objectives(session: Session, study_id: int, start: int, rows: list[TrialRow]) -> None:
    extra: dict[int, list[float | None]] = {}
    for tid, _objective, value, vtype in queries.other_objectives(session, study_id, start):
        extra.setdefault(tid, []).append(decode_value(value, vtype))
    for r in rows:
        if r.value is not None and r.trial_id in extra:
            r.values = (r.value, *extra[r.trial_id])
