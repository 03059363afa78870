"""Optuna's RDB storage on the service's database, and cached Study objects.

Studies are genuine Optuna studies: any Optuna client can
``optuna.load_study(study_name=..., storage=URL)`` them. The server keeps one
RDBStorage per app and one ``optuna.Study`` per study (sampler state, such as
a seeded RNG, lives there), each guarded by a lock for sampling.

Each cached study reads its trials through a :class:`TrialView`: Optuna's own
``_CachedStorage`` (finished trials are read once and kept) with a cheaper
refresh. Optuna's refresh re-reads every unfinished trial of the study with all
its relations (params, values, attributes, intermediate values) on every
``get_all_trials``; with W workers that is W full trials per call, several calls
per ask. The view instead asks the database which trials are new or changed
(one narrow query: id, state, number of params) and loads only those, and it
refreshes at most once per sampled trial. What the sampler sees is the same as
with Optuna's cache at the moment of the refresh.

Samplers that never read the study's trials (random) never trigger the first
full load: their trials are dropped from the view once sampled, so the server's
memory does not grow with the number of trials.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, or_, select

from hpo.spec import Param, StudySpec, trial_seed
from service.core.db import engine_kwargs
from service.storage.samplers import (
    make_pruner,
    make_sampler,
    seed_sampler_for_trial,
    suggest_one,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Samplers whose ``after_trial`` does nothing: ``tell`` needs no sampler lock.
_STATELESS_AFTER_TRIAL = (optuna.samplers.RandomSampler, optuna.samplers.TPESampler)


class TrialView(_CachedStorage):
    """``_CachedStorage`` with an incremental refresh (see the module docstring)."""

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        super().__init__(backend)
        self._local = threading.local()
        #: studies whose trials were read in full once (a sampler or pruner asked for them)
        self._loaded: set[int] = set()
        #: per study: a counter bumped whenever its cached trials change, and the sorted
        #: (optionally state-filtered) lists built for that counter value
        self._version: dict[int, int] = {}
        self._lists: dict[tuple[int, Any], tuple[int, list[FrozenTrial]]] = {}

    # ------------------------------------------------------------------ sampling window

    @contextlib.contextmanager
    def sampling(self, trial_id: int, study_id: int | None = None) -> Iterator[None]:
        """While a trial is sampled in this thread: its cached copy (fresh from
        ``create_new_trial``) is served by ``get_trial``, and the study's trials are
        refreshed at most once.

        A trial sampled again later (define-by-run asks one parameter at a time) may
        have been forgotten since: with ``study_id`` it is read back into the cache.
        """
        if study_id is not None:
            self._remember(study_id, trial_id)
        self._local.trial_id = trial_id
        self._local.synced = False
        try:
            yield
        finally:
            self._local.trial_id = None
            self._local.synced = False

    def _remember(self, study_id: int, trial_id: int) -> None:
        with self._lock:
            if trial_id in self._trial_id_to_study_id_and_number:
                return
        trial = self._backend.get_trial(trial_id)
        with self._lock:
            if trial_id not in self._trial_id_to_study_id_and_number:
                self._add_trials_to_cache(study_id, [trial])

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if getattr(self._local, "trial_id", None) == trial_id:
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                if where is not None:
                    trial = self._studies[where[0]].trials.get(where[1])
                    if trial is not None and trial._trial_id == trial_id:
                        return trial
        return super().get_trial(trial_id)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        # As Optuna's, but the database write runs outside the cache lock (Optuna holds
        # it, which would serialise every thread's reads behind each write).
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            cached_dist = self._studies[study_id].param_distribution.get(param_name)
        self._backend._set_trial_param(
            trial_id, param_name, param_value_internal, distribution, cached_dist
        )
        if cached_dist is None:
            with self._lock:
                self._studies[study_id].param_distribution.setdefault(param_name, distribution)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        with self._lock:  # keep the cached running copy in step (TPE's constant liar)
            trial = self._cached_any(trial_id)
            if trial is not None and not trial.state.is_finished():
                trial.system_attrs[key] = value

    def _cached_any(self, trial_id: int) -> FrozenTrial | None:
        where = self._trial_id_to_study_id_and_number.get(trial_id)
        if where is None:
            return None
        trial = self._studies[where[0]].trials.get(where[1])
        return trial if trial is not None and trial._trial_id == trial_id else None

    def sampled(self, study_id: int, trial_id: int) -> None:
        """Sampling of ``trial_id`` is over: forget it unless the study's trials are
        kept (only samplers and pruners that read trials make the view keep them)."""
        with self._lock:
            if study_id in self._loaded:
                return
            where = self._trial_id_to_study_id_and_number.pop(trial_id, None)
            if where is None:
                return
            self._study_id_and_number_to_trial_id.pop(where, None)
            study = self._studies.get(study_id)
            if study is not None:
                study.trials.pop(where[1], None)
                study.unfinished_trial_ids.discard(trial_id)
            self._version[study_id] = self._version.get(study_id, 0) + 1

    # ------------------------------------------------------------------ trial lists

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        super()._add_trials_to_cache(study_id, trials)
        if trials:
            self._version[study_id] = self._version.get(study_id, 0) + 1

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """As Optuna's, but the sorted (and state-filtered) list is rebuilt only when
        the cached trials changed, not on every call (TPE asks several times per
        trial; at 10 000 trials each sort + filter is milliseconds)."""
        self._read_trials_from_remote_storage(study_id)
        try:
            key: Any = (study_id, None if states is None else tuple(states))
            hash(key)
        except TypeError:
            key = None
        with self._lock:
            study = self._studies[study_id]
            version = self._version.get(study_id, 0)
            hit = self._lists.get(key) if key is not None else None
            if hit is not None and hit[0] == version:
                trials = list(hit[1])
            else:
                values: Any = study.trials.values()
                if states is not None:
                    values = [t for t in values if t.state in states]
                built = sorted(values, key=lambda t: t.number)
                if key is not None:
                    self._lists[key] = (version, built)
                trials = list(built)
        return copy.deepcopy(trials) if deepcopy else trials

    # ------------------------------------------------------------------ refresh

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        if getattr(self._local, "trial_id", None) is not None:
            if self._local.synced:
                return
            self._local.synced = True
        with self._lock:
            loaded = study_id in self._loaded
        if not loaded:
            # First read: Optuna's own, which reads everything the study has.
            super()._read_trials_from_remote_storage(study_id)
            with self._lock:
                self._loaded.add(study_id)
            return
        self._refresh(study_id)

    def _refresh(self, study_id: int) -> None:
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            unfinished = set(study.unfinished_trial_ids)
            last = study.last_finished_trial_id
        rows = self._probe(study_id, last, unfinished)
        need: set[int] = set()
        with self._lock:
            for trial_id, number, state, n_params in rows:
                cached = study.trials.get(number)
                if (
                    cached is None
                    or cached._trial_id != trial_id
                    or cached.state != state
                    or len(cached.params) != n_params
                ):
                    need.add(trial_id)
                else:
                    self._note_state(study, cached)
        if not need:
            return
        trials = self._backend._get_trials(
            study_id,
            states=None,
            included_trial_ids=need,
            trial_id_greater_than=max(need),
        )
        with self._lock:
            self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                self._note_state(study, trial)

    @staticmethod
    def _note_state(study: _StudyInfo, trial: FrozenTrial) -> None:
        if trial.state.is_finished():
            study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)
            study.unfinished_trial_ids.discard(trial._trial_id)
        else:
            study.unfinished_trial_ids.add(trial._trial_id)

    def _probe(
        self, study_id: int, last_finished: int, unfinished: set[int]
    ) -> list[tuple[int, int, TrialState, int]]:
        """(trial id, number, state, number of params) of the trials newer than the
        last finished one and of the unfinished ones: one narrow query."""
        t, p = models.TrialModel, models.TrialParamModel
        which = t.trial_id > last_finished
        if unfinished:
            which = or_(which, t.trial_id.in_(sorted(unfinished)))
        query = (
            select(t.trial_id, t.number, t.state, func.count(p.param_id))
            .outerjoin(p, p.trial_id == t.trial_id)
            .where(t.study_id == study_id, which)
            .group_by(t.trial_id, t.number, t.state)
        )
        with self._backend.engine.connect() as conn:
            return [(int(a), int(b), c, int(d)) for a, b, c, d in conn.execute(query).all()]


#: keeps the sampler's per-trial seed apart from the training seed of the same trial
SAMPLER_SALT = 0x5A3D


@dataclass
class CachedStudy:
    study: optuna.Study
    lock: threading.Lock
    spec: StudySpec
    view: TrialView | None = None
    #: False when the sampler's ``after_trial`` is a no-op (tell needs no lock)
    tell_under_lock: bool = field(default=True)
    #: the study seed: the sampler is re-seeded from it and the trial number per trial
    seed: int = 0

    def new_trial(self) -> int:
        """``Study.ask()``'s storage half, without its waiting-trial pop (the service
        never enqueues WAITING trials; re-runs re-use their RUNNING trial). Runs
        outside the sampler lock: it is one insert."""
        return self.study._storage.create_new_trial(self.study._study_id)

    @contextlib.contextmanager
    def sampling(self, trial_id: int, salt: int = 0) -> Iterator[optuna.Trial]:
        """The ``optuna.Trial`` of ``trial_id`` under the sampler lock, as ``ask()``
        builds it (the per-ask trial list is reset first).

        ``salt`` varies the sampler's seed: define-by-run asks for one parameter at a
        time, and each must draw from its own stream (the same seed for every
        parameter of a trial would make a random sampler's draws identical).
        """
        window = (
            self.view.sampling(trial_id, self.study._study_id)
            if self.view
            else contextlib.nullcontext()
        )
        try:
            with self.lock, window:
                self.study._thread_local.cached_all_trials = None
                trial = optuna.Trial(self.study, trial_id)
                seed = trial_seed(self.seed, trial.number) ^ SAMPLER_SALT ^ salt
                seed_sampler_for_trial(self.study.sampler, seed)
                yield trial
        finally:
            if self.view is not None:
                self.view.sampled(self.study._study_id, trial_id)

    def suggest(self, trial_id: int, name: str, param: Param) -> Any:
        """Define-by-run: sample parameter ``name`` on trial ``trial_id`` with the study's
        sampler (a parameter the trial already has keeps its recorded value)."""
        with self.sampling(trial_id, salt=zlib.crc32(name.encode())) as trial:
            return suggest_one(trial, name, param)

    def tell(
        self,
        number: int,
        state: TrialState,
        values: list[float] | None = None,
    ) -> tuple[TrialState, list[float] | None] | None:
        """``study.tell`` (skip if finished) without re-reading the trial afterwards.

        Returns the stored state and values, or None when Optuna refused (the trial
        was finished elsewhere; GridSampler's ``study.stop()`` also raises, after the
        state was stored): callers then re-read the trial.
        """
        guard = self.lock if self.tell_under_lock else contextlib.nullcontext()
        try:
            with guard:
                told_state, told_values, _ = _tell_with_warning(
                    self.study, number, values, state, skip_if_finished=True
                )
        except RuntimeError:
            return None
        return told_state, told_values


def finished_copy(
    frozen: FrozenTrial,
    state: TrialState,
    values: list[float] | None,
    user_attrs: dict[str, Any],
) -> FrozenTrial:
    """``frozen`` as it reads after a successful tell (no database round trip)."""
    out = copy.copy(frozen)
    out.state = state
    out.values = values
    out.user_attrs = {**frozen.user_attrs, **user_attrs}
    return out


class OptunaStore:
    """The app's Optuna storage plus a cache of loaded studies."""

    def __init__(self, url: str, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        # Optuna's own engine: the same pool limits as ours (HPO_DB_POOL_SIZE / _MAX_OVERFLOW)
        kwargs = engine_kwargs(url, pool_size, max_overflow)
        self.storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        self.view = TrialView(self.storage)
        self._studies: dict[int, CachedStudy] = {}
        self._lock = threading.Lock()

    def create(self, spec: StudySpec, seed: int) -> optuna.Study:
        """Create the Optuna study for ``spec`` (raises DuplicatedStudyError if taken)."""
        return optuna.create_study(
            storage=self.storage,
            study_name=spec.name,
            directions=spec.study_directions,
            sampler=make_sampler(spec, seed),
            pruner=make_pruner(spec),
        )

    def get(self, study_id: int, name: str, spec: StudySpec, seed: int) -> CachedStudy:
        """The cached Study for ``study_id``, loaded on first use."""
        with self._lock:
            cached = self._studies.get(study_id)
            if cached is None:
                sampler = make_sampler(spec, seed)
                study = optuna.load_study(
                    study_name=name,
                    storage=self.view,
                    sampler=sampler,
                    pruner=make_pruner(spec),
                )
                cached = CachedStudy(
                    study=study,
                    lock=threading.Lock(),
                    spec=spec,
                    view=self.view,
                    tell_under_lock=not _tell_is_stateless(sampler),
                    seed=seed,
                )
                self._studies[study_id] = cached
            return cached

    def forget(self, study_id: int) -> None:
        """Drop a cached study (after delete)."""
        with self._lock:
            self._studies.pop(study_id, None)
        with self.view._lock:
            info = self.view._studies.pop(study_id, None)
            self.view._loaded.discard(study_id)
            self.view._version[study_id] = self.view._version.get(study_id, 0) + 1
            for key in [k for k in self.view._lists if k[0] == study_id]:
                del self.view._lists[key]
            if info is not None:
                for number, trial in info.trials.items():
                    self.view._trial_id_to_study_id_and_number.pop(trial._trial_id, None)
                    self.view._study_id_and_number_to_trial_id.pop((study_id, number), None)

    def delete(self, name: str) -> None:
        optuna.delete_study(study_name=name, storage=self.storage)

    def dispose(self) -> None:
        self.storage.engine.dispose()


def _tell_is_stateless(sampler: optuna.samplers.BaseSampler) -> bool:
    if type(sampler) not in _STATELESS_AFTER_TRIAL:
        return False
    return getattr(sampler, "_constraints_func", None) is None
