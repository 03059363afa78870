"""Objectives the own-model end-to-end tests run with ``hpo worker --objective``.

Each is written as for Optuna's ``study.optimize`` (only the trial API); they
run in real worker processes against a real server.
"""

from __future__ import annotations

import math
import time

import optuna


def conditional(trial) -> float:
    """A conditional space with every distribution kind: log float, stepped int, stepped float."""
    kind = trial.suggest_categorical("kind", ["smooth", "grid"])
    if kind == "smooth":
        x = trial.suggest_float("x", 1e-3, 10.0, log=True)
        return -((math.log10(x) - 0.5) ** 2)
    n = trial.suggest_int("n", 2, 20, step=3)
    y = trial.suggest_float("y", 0.0, 1.0, step=0.25)
    return -abs(n - 11) / 10 - y


def pruning(trial) -> float:
    """Reports five steps; trials with a low ``quality`` fall behind and get pruned."""
    quality = trial.suggest_float("quality", 0.0, 1.0)
    for step in range(5):
        trial.report(quality * (step + 1), step)
        time.sleep(0.05)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return quality * 5


def two_objectives(trial) -> tuple[float, float]:
    """Accuracy up, size down: a multi-objective tuple."""
    width = trial.suggest_int("width", 1, 100)
    return 1 - 1 / width, float(width)


def raises(trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    raise ValueError("the objective broke on purpose (42)")


def disagrees(trial) -> float:
    """Asks for x in [0, 2] where the spec declares [0, 1]."""
    return trial.suggest_float("x", 0.0, 2.0)


def non_numeric(trial) -> str:
    trial.suggest_float("x", 0.0, 1.0)
    return "not a number"
