"""Micro-bench: TPE milliseconds per proposal, one fit per proposal against one per batch.

An in-memory Optuna study seeded with T finished trials and 32 running ones (the
pool's pending proposals, counted by the constant liar); each proposal is an
``ask()`` plus the space's suggests, drawn in batches of K under
:meth:`service.storage.batch_tpe.BatchTPESampler.batch` (K = 1: Optuna's TPE as is).

    .venv/bin/python -m bench.tpe_batch --trials 1000 10000 --batch 1 8 32
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import optuna

from service.storage.batch_tpe import BatchTPESampler

SPACES = {
    "x": {"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
    "mixed": {
        "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
        "layers": optuna.distributions.IntDistribution(1, 8),
        "opt": optuna.distributions.CategoricalDistribution(["sgd", "adam", "adamw"]),
    },
}


def seeded_study(space: dict, trials: int, running: int) -> optuna.Study:
    """A study with ``trials`` finished trials and ``running`` running ones."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(sampler=BatchTPESampler(constant_liar=True, seed=1))
    random = optuna.samplers.RandomSampler(seed=0)
    frozen = []
    for number in range(trials + running):
        params = {
            name: random.sample_independent(study, None, name, dist)  # type: ignore[arg-type]
            for name, dist in space.items()
        }
        done = number < trials
        frozen.append(
            optuna.trial.create_trial(
                params=params,
                distributions=space,
                value=float(rng.random()) if done else None,
                state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.RUNNING,
            )
        )
    study.add_trials(frozen)
    return study


def ms_per_proposal(study: optuna.Study, space: dict, k: int, proposals: int) -> float:
    """Draw ``proposals`` (rounded up to batches of ``k``); milliseconds each."""
    sampler = study.sampler
    assert isinstance(sampler, BatchTPESampler)
    batches = -(-proposals // k)
    started = time.perf_counter()
    for _ in range(batches):
        with sampler.batch(k):
            for _ in range(k):
                study.ask(space)
    return (time.perf_counter() - started) * 1000 / (batches * k)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--space", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--proposals", type=int, default=64)
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; optuna {optuna.__version__}")
    print("| space | T | K | ms / proposal |\n|---|---|---|---|")
    for name in a.space:
        for trials in a.trials:
            for k in a.batch:
                study = seeded_study(SPACES[name], trials, 32)
                ms = ms_per_proposal(study, SPACES[name], k, a.proposals)
                print(f"| {name} | {trials} | {k} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
