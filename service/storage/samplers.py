"""Optuna samplers and pruners built from a spec, and define-by-run sampling of its space.

Samplers, pruners and sampling are Optuna's: this module only builds them from
a validated :class:`hpo.spec.StudySpec` and walks the search space
define-by-run, so that conditional parameters (``when:``) work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from hpo.spec import (
    PRUNERS,
    SAMPLERS,
    FloatParam,
    IntParam,
    StudySpec,
    grid_search_space,
)
from service.storage.batch_tpe import BatchTPESampler


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    """Build the spec's Optuna sampler, seeded with the study seed.

    TPE uses Optuna's constant liar unless the spec says otherwise: trials that are
    still running count as bad guesses, so trials leased at the same time (a batch
    for a fused pack, or many workers) are spread out instead of clustered. TPE is
    :class:`~service.storage.batch_tpe.BatchTPESampler`: Optuna's, plus one fit per
    batch of pool proposals.
    """
    cls = getattr(optuna.samplers, SAMPLERS[spec.sampler.name])
    options = dict(spec.sampler.options)
    if spec.sampler.name == "tpe":
        options.setdefault("constant_liar", True)
        cls = BatchTPESampler  # Optuna's TPE; the pool refill draws a batch per fit
    if spec.sampler.name == "grid":
        return cls(grid_search_space(spec.space), seed=seed, **options)
    return cls(seed=seed, **options)


def seed_sampler_for_trial(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Seed every random state of ``sampler`` (and of the samplers it wraps) from ``seed``.

    Called before each trial is sampled, with a seed derived from the study seed and
    the trial number. A sampler's randomness then depends on which trial it samples,
    not on how many it sampled before in this process: a restarted server goes on
    with the same proposals, and several server processes (each with its own copy of
    the sampler, seeded alike) never hand out the same random draws twice.
    Optuna's own ``reseed_rng()`` draws OS entropy, so the states are set here.
    """
    _seed_states(sampler, seed, depth=0)


def _seed_states(obj: object, seed: int, depth: int) -> None:
    for i, value in enumerate(vars(obj).values()):
        state = getattr(value, "rng", value)  # optuna's LazyRandomState wraps a RandomState
        if isinstance(state, np.random.RandomState):
            state.seed((seed + 7_919 * i) % 2**32)
        elif isinstance(value, optuna.samplers.BaseSampler) and depth < 3:
            _seed_states(value, (seed * 31 + i + 1) % 2**32, depth + 1)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Build the spec's Optuna pruner."""
    return getattr(optuna.pruners, PRUNERS[spec.pruner.name])(**spec.pruner.options)


def _condition_holds(param: Any, values: dict[str, Any]) -> bool:
    return all(
        ref in values and values[ref] in allowed for ref, allowed in (param.when or {}).items()
    )


def suggest_params(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample the space define-by-run; returns Optuna's parameter values by name.

    A parameter whose ``when`` condition does not hold (or refers to a parameter
    that was itself skipped) is not sampled at all, so the sampler never sees it.
    """
    values: dict[str, Any] = {}
    for name, p in spec.space.items():
        if _condition_holds(p, values):
            values[name] = suggest_one(trial, name, p)
    return values


def suggest_one(trial: optuna.Trial, name: str, p: Any) -> Any:
    """``trial.suggest_*`` for one spec parameter (float, int or categorical)."""
    if isinstance(p, FloatParam):
        return trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, IntParam):
        return trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
    return trial.suggest_categorical(name, p.choices)
