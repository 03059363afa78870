"""The one study spec builder of the tests.

:func:`study_spec` returns a plain dict (an API body or ``StudySpec`` input) for
the built-in trainer: ``MNIST_SPACE`` (optimizer, log-uniform lr, momentum only
for momentum), a seeded random sampler and a 50-trial budget. Keyword arguments
replace top-level keys. The default workload (``mnist-mlp``) checks ``fixed`` and
``space`` against the reference trainer's settings, so a synthetic space (``x``,
``k``...) needs another ``workload`` (``"toy"``, ``"fake"``); ``TOY_SPACE`` is one.
"""

from __future__ import annotations

import copy
from typing import Any

#: A small space the reference trainer accepts, with one conditional parameter.
MNIST_SPACE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}},
}

#: One float in [0, 1] (needs a workload other than the reference trainer).
TOY_SPACE: dict[str, Any] = {"x": {"type": "float", "low": 0, "high": 1}}

_BASE: dict[str, Any] = {
    "direction": "maximize",
    "objective": "val_accuracy",
    "sampler": {"name": "random", "seed": 7},
    "budget": {"max_trials": 50},
    "space": MNIST_SPACE,
}


def study_spec(name: str = "study", **overrides: Any) -> dict[str, Any]:
    """A study spec dict named ``name``; ``overrides`` replace top-level keys.

    ``directions``/``objectives`` (multi-objective) replace ``direction``/``objective``.
    A key overridden with ``None`` is left out. The result is a fresh deep copy.
    """
    body: dict[str, Any] = {"name": name, **_BASE}
    if "directions" in overrides:
        body.pop("direction")
    if "objectives" in overrides:
        body.pop("objective")
    body.update(overrides)
    return copy.deepcopy({key: value for key, value in body.items() if value is not None})
