"""TPE that draws a batch of proposals from one density fit.

At 10,000 trials most of an Optuna TPE ask is reading and splitting the history
and building the two Parzen estimators (``below``, ``above``) of each parameter
group; drawing the ``n_ei_candidates`` and scoring them is cheap. The proposal
pool's refill draws several proposals at once, so :class:`BatchTPESampler` fits
once per batch: inside :meth:`BatchTPESampler.batch`, the first trial that needs
a parameter group runs Optuna's own ``_sample`` with ``K x n_ei_candidates``
candidates from ``below``, every chunk of ``n_ei_candidates`` gives the best of
its chunk by ``log l(x) - log g(x)`` (as one ask picks its best), and the next
trials of the batch take those K draws in turn without fitting again.

The fit is Optuna's: the same trials (running ones, the pool's pending proposals
among them, count as bad guesses with ``constant_liar``), the same split, gamma,
weights and estimators. What differs from K separate asks: the K draws of one
batch do not see each other as running (they are spread by their separate
candidate sets instead), and they share one history. Outside a batch, and for
what does not reach ``_sample`` (startup trials, which are random), the sampler is
Optuna's ``TPESampler`` unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.study import Study
from optuna.trial import FrozenTrial


@dataclass
class _Batch:
    """One thread's batch: its size and the draws left per parameter group."""

    size: int
    draws: dict[tuple[str, ...], deque[dict[str, Any]]] = field(default_factory=dict)
    #: set while a fit scores its candidates: (samples, acquisition values)
    scored: tuple[dict[str, np.ndarray], np.ndarray] | None = None


class BatchTPESampler(optuna.samplers.TPESampler):
    """Optuna's ``TPESampler`` plus :meth:`batch` (one fit for K trials)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_local = threading.local()  # after Optuna's attributes: seeding order

    @contextlib.contextmanager
    def batch(self, size: int) -> Iterator[None]:
        """In this thread, the next ``size`` trials share one fit per parameter group
        (``size`` <= 1: each trial fits alone, as Optuna's TPE)."""
        if size <= 1:
            yield
            return
        self._batch_local.batch = _Batch(size)
        try:
            yield
        finally:
            self._batch_local.batch = None

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        batch: _Batch | None = getattr(self._batch_local, "batch", None)
        if batch is None or not search_space:
            return super()._sample(study, trial, search_space)
        key = tuple(sorted(search_space))
        draws = batch.draws.get(key)
        if not draws:
            draws = batch.draws[key] = self._fit_once(study, trial, search_space, batch)
        return draws.popleft()

    def _fit_once(
        self,
        study: Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        batch: _Batch,
    ) -> deque[dict[str, Any]]:
        """Optuna's ``_sample`` once with ``size`` chunks of candidates; the best of
        each chunk, in external representation."""
        per_ask = self._n_ei_candidates
        self._n_ei_candidates = per_ask * batch.size
        try:
            super()._sample(study, trial, search_space)
            assert batch.scored is not None
            samples, scores = batch.scored
        finally:
            self._n_ei_candidates = per_ask
            batch.scored = None
        best = np.argmax(scores.reshape(batch.size, per_ask), axis=1)
        best += np.arange(batch.size) * per_ask
        space = search_space.items()
        return deque(
            {name: dist.to_external_repr(samples[name][i].item()) for name, dist in space}
            for i in best
        )

    def _compute_acquisition_func(
        self,
        samples: dict[str, np.ndarray],
        mpe_below: _ParzenEstimator,
        mpe_above: _ParzenEstimator,
    ) -> np.ndarray:
        scores = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        batch: _Batch | None = getattr(self._batch_local, "batch", None)
        if batch is not None:
            batch.scored = (samples, scores)
        return scores


def sampler_batch(
    sampler: optuna.samplers.BaseSampler, size: int
) -> contextlib.AbstractContextManager[None]:
    """``sampler.batch(size)`` for a :class:`BatchTPESampler`; a no-op for any other
    sampler (each proposal is then drawn on its own, exactly as before)."""
    if isinstance(sampler, BatchTPESampler):
        return sampler.batch(size)
    return contextlib.nullcontext()
