"""The trial view: Optuna's ``_CachedStorage`` with a cheaper refresh.

Finished trials are read once and kept, as in Optuna's cache. Optuna's refresh
re-reads every unfinished trial of the study with all its relations (params,
values, attributes, intermediate values) on every ``get_all_trials``; with W
workers that is W full trials per call, several calls per ask. The view instead
asks the database which trials are new or changed (one narrow query: id, state,
number of params) and loads only those, and it refreshes at most once per
sampled trial. What the sampler sees is the same as with Optuna's cache at the
moment of the refresh.

Samplers that never read the study's trials (random) never trigger the first
full load: their trials are dropped from the view once sampled, so the server's
memory does not grow with the number of trials.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Container, Iterator
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, or_, select


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
        self._local.synced = getattr(self._local, "batch_synced", False)
        try:
            yield
        finally:
            self._local.trial_id = None
            self._local.synced = False

    @contextlib.contextmanager
    def one_refresh(self) -> Iterator[None]:
        """While this thread draws one sampler batch (one fit for all its trials, see
        :mod:`service.storage.batch_tpe`): the study's trials are refreshed for the
        batch's first trial only; the next ones would re-read the batch's own new
        trials, which their draws, made by that one fit, do not look at."""
        self._local.batch_synced = False
        self._local.in_batch = True
        try:
            yield
        finally:
            self._local.in_batch = False
            self._local.batch_synced = False

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

    # ------------------------------------------------------------------ enqueued trials

    def pop_waiting(self, study_id: int) -> int | None:
        """The study's oldest WAITING trial (``study.enqueue_trial``), now RUNNING; None
        when none waits. What Optuna's ``ask()`` does first, with one narrow query
        instead of reading every trial; a trial another process took first is skipped
        (Optuna's storage moves WAITING to RUNNING only once)."""
        t = models.TrialModel
        query = (
            select(t.trial_id)
            .where(t.study_id == study_id, t.state == TrialState.WAITING)
            .order_by(t.number)
            .limit(8)
        )
        with self._backend.engine.connect() as conn:
            waiting = [int(trial_id) for trial_id in conn.scalars(query)]
        for trial_id in waiting:
            try:
                if not self._backend.set_trial_state_values(trial_id, TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            trial = self._backend.get_trial(trial_id)  # RUNNING, with its fixed_params
            with self._lock:
                study = self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, [trial])
                self._note_state(study, trial)
            return trial_id
        return None

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
            if getattr(self._local, "in_batch", False):
                self._local.batch_synced = True
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
