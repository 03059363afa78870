"""Optuna's RDB storage on the service's database, and cached Study objects.

Studies are genuine Optuna studies: any Optuna client can
``optuna.load_study(study_name=..., storage=URL)`` them. The server keeps one
RDBStorage per app and one ``optuna.Study`` per study (sampler state, such as
a seeded RNG, lives there), each guarded by a lock for sampling.

Each cached study reads its trials through a
:class:`~service.storage.trial_view.TrialView`: Optuna's own cache with a
cheaper refresh (see that module).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from hpo.spec import Param, StudySpec, trial_seed
from service.core.db import engine_kwargs
from service.storage.batch_tpe import BatchTPESampler
from service.storage.samplers import (
    make_pruner,
    make_sampler,
    seed_sampler_for_trial,
    suggest_one,
)
from service.storage.trial_view import TrialView

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Samplers whose ``after_trial`` does nothing: ``tell`` needs no sampler lock.
_STATELESS_AFTER_TRIAL = (
    optuna.samplers.RandomSampler,
    optuna.samplers.TPESampler,
    BatchTPESampler,
)


SAMPLER_SALT = 0x5A3D
#: Define-by-run trials whose ``optuna.Trial`` a study keeps between suggests (the oldest
#: beyond this are rebuilt on their next suggest, drawing a new relative sample).
MAX_LIVE_TRIALS = 4096


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
    #: define-by-run: each trial's ``optuna.Trial`` from its first suggest to its tell, so
    #: the sampler draws one relative (joint) sample per trial, as ``study.ask()`` does
    live: OrderedDict[int, optuna.Trial] = field(default_factory=OrderedDict)
    _live_ids: dict[int, int] = field(default_factory=dict)  # trial number -> trial id

    def new_trial(self) -> int:
        """``Study.ask()``'s storage half for a new trial (an enqueued WAITING trial is
        taken before this by ``TrialView.pop_waiting``; re-runs re-use their RUNNING
        trial). Runs outside the sampler lock: it is one insert."""
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
                # Seeded before the trial is built: building it draws the relative sample.
                number = self.study._storage.get_trial(trial_id).number  # the view's cache
                seed_sampler_for_trial(self.study.sampler, self._seed(number) ^ salt)
                trial = optuna.Trial(self.study, trial_id)
                yield trial
        finally:
            if self.view is not None:
                self.view.sampled(self.study._study_id, trial_id)

    @contextlib.contextmanager
    def batch(self, size: int) -> Iterator[None]:
        """In this thread, the next ``size`` draws are one sampler batch: TPE fits its
        densities once for them and the trials are refreshed once (the pool refill).
        Other samplers, and a batch of one, draw each trial on its own, as before."""
        if size <= 1 or not isinstance(self.study.sampler, BatchTPESampler):
            yield
            return
        refresh = self.view.one_refresh() if self.view else contextlib.nullcontext()
        with self.study.sampler.batch(size), refresh:
            yield

    def suggest(self, trial_id: int, name: str, param: Param) -> Any:
        """Define-by-run: sample parameter ``name`` on trial ``trial_id`` with the study's
        sampler (a parameter the trial already has keeps its recorded value).

        The trial's ``optuna.Trial`` is built at its first suggest, where the sampler
        draws its relative sample (multivariate TPE, GP, CMA-ES: one joint draw for the
        whole trial), and kept for the next ones; each independent draw has its own
        seed stream (the name's salt)."""
        salt = zlib.crc32(name.encode())
        with self.lock:
            trial = self.live.get(trial_id)
            if trial is not None:
                self.live.move_to_end(trial_id)
                return self._suggest_again(trial, name, param, salt)
        with self.sampling(trial_id) as trial:  # the relative sample, from the trial's seed
            seed_sampler_for_trial(self.study.sampler, self._seed(trial.number) ^ salt)
            self.live[trial_id], self._live_ids[trial.number] = trial, trial_id
            while len(self.live) > MAX_LIVE_TRIALS:
                self._live_ids.pop(self.live.popitem(last=False)[1].number, None)
            return suggest_one(trial, name, param)

    def _suggest_again(self, trial: optuna.Trial, name: str, param: Param, salt: int) -> Any:
        """A later suggest on a kept trial (under the lock). The view may have dropped the
        trial since (samplers that never read the study's trials): the sampling window
        reads it back in."""
        window = (
            self.view.sampling(trial._trial_id, self.study._study_id)
            if self.view
            else contextlib.nullcontext()
        )
        try:
            with window:
                self.study._thread_local.cached_all_trials = None
                seed_sampler_for_trial(self.study.sampler, self._seed(trial.number) ^ salt)
                return suggest_one(trial, name, param)
        finally:
            if self.view is not None:
                self.view.sampled(self.study._study_id, trial._trial_id)

    def _seed(self, number: int) -> int:
        return trial_seed(self.seed, number) ^ SAMPLER_SALT

    def forget(self, number: int) -> None:
        """Trial ``number`` ended: drop its kept ``optuna.Trial``."""
        trial_id = self._live_ids.pop(number, None)
        if trial_id is not None:
            self.live.pop(trial_id, None)

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
        self.forget(number)  # single dict operations: no lock needed
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
