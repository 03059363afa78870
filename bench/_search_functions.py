"""Test functions for bench/search_quality.py: standard minimisation problems with a
known global minimum, each as a study space (the service's declared form) and one
objective that asks for the same parameters through ``trial.suggest_*``.

The objective takes any trial with Optuna's suggest API (``optuna.Trial`` or
``hpo.Trial``), so Optuna in-process, a declared-space study and a define-by-run
study all run exactly the same code.

* ``branin``: Branin-Hoo, 2-D, minimum 0.397887.
* ``hartmann6``: Hartmann, 6-D on the unit cube, minimum -3.32237.
* ``conditional``: a categorical ``kind`` picks one of three branches, each with its
  own parameters (8 in all, at most 3 active): a scaled Branin (minimum about -2.96),
  Hartmann-3 (minimum -3.86278, the global one) and a shifted 2-D sphere (-2.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H3_A = np.array([[3, 10, 30], [0.1, 10, 35], [3, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann(x: list[float], a: np.ndarray, p: np.ndarray) -> float:
    z = np.asarray(x)
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(a * (z - p) ** 2, axis=1))))


def _unit(names: list[str], when: dict[str, list[str]] | None = None) -> dict[str, Any]:
    extra = {"when": when} if when else {}
    return {n: {"type": "float", "low": 0.0, "high": 1.0, **extra} for n in names}


def _float(low: float, high: float, when: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high, **({"when": when} if when else {})}


BRANIN_SPACE = {"x1": _float(-5.0, 10.0), "x2": _float(0.0, 15.0)}
HARTMANN6_SPACE = _unit([f"x{i}" for i in range(6)])
KINDS = ["branin", "hartmann3", "sphere"]
CONDITIONAL_SPACE: dict[str, Any] = {
    "kind": {"type": "categorical", "choices": KINDS},
    "b1": _float(-5.0, 10.0, {"kind": ["branin"]}),
    "b2": _float(0.0, 15.0, {"kind": ["branin"]}),
    **_unit(["h1", "h2", "h3"], {"kind": ["hartmann3"]}),
    "s1": _float(-5.0, 5.0, {"kind": ["sphere"]}),
    "s2": _float(-5.0, 5.0, {"kind": ["sphere"]}),
}


def _branin_value(p: dict[str, Any]) -> float:
    return branin(p["x1"], p["x2"])


def _hartmann6_value(p: dict[str, Any]) -> float:
    return hartmann([p[f"x{i}"] for i in range(6)], _H6_A, _H6_P)


def _conditional_value(p: dict[str, Any]) -> float:
    if p["kind"] == "branin":
        return branin(p["b1"], p["b2"]) / 10 - 3.0
    if p["kind"] == "hartmann3":
        return hartmann([p["h1"], p["h2"], p["h3"]], _H3_A, _H3_P)
    return ((p["s1"] - 1.0) ** 2 + (p["s2"] + 2.0) ** 2) / 10 - 2.5


@dataclass(frozen=True)
class Function:
    """A minimisation problem: its space, known minimum and value of a full assignment."""

    name: str
    space: dict[str, Any]
    optimum: float
    value: Callable[[dict[str, Any]], float]

    @property
    def dimension(self) -> int:
        return len(self.space)

    def objective(self, trial: Any) -> float:
        """Ask ``trial`` for the parameters (define-by-run order, conditions applied)."""
        return self.value(suggest(trial, self.space))


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """``trial.suggest_*`` for each parameter of ``space`` whose ``when`` holds."""
    params: dict[str, Any] = {}
    for name, d in space.items():
        when = d.get("when") or {}
        if not all(params.get(ref) in allowed for ref, allowed in when.items()):
            continue
        if d["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, d["choices"])
        else:
            params[name] = trial.suggest_float(name, d["low"], d["high"])
    return params


FUNCTIONS: dict[str, Function] = {
    "branin": Function("branin", BRANIN_SPACE, 0.397887, _branin_value),
    "hartmann6": Function("hartmann6", HARTMANN6_SPACE, -3.32237, _hartmann6_value),
    "conditional": Function("conditional", CONDITIONAL_SPACE, -3.86278, _conditional_value),
}
