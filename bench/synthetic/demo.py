"""Synthetic MNIST-like trials for dashboard tests and benchmarks.

:mod:`bench.synthetic.seeding` writes them into the database. The objective
is a made-up function of the settings: a per-optimizer optimum learning rate,
penalties for heavy regularization, divergence for learning rates far too
high and early pruning of poor trials, so that every chart has something to
show.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hpo.settings import BATCH_NORM, DEFAULT_OBJECTIVE, LR, OPTIMIZER, REFERENCE_WORKLOAD
from hpo.settings import OPTIMIZERS as TRAINER_OPTIMIZERS
from hpo.spec import (
    CategoricalParam,
    FloatParam,
    IntParam,
    StudySpec,
)

#: The trainer's optimizers except full-batch ``gd`` (too slow for a realistic demo).
OPTIMIZERS = [o for o in TRAINER_OPTIMIZERS if o != "gd"]
#: log10 of the best learning rate of each optimizer in the made-up objective.
_BEST_LOG_LR = {
    "gd": -0.5,
    "sgd": -1.0,
    "momentum": -1.8,
    "nesterov": -1.8,
    "adagrad": -1.5,
    "rmsprop": -3.2,
    "adam": -3.0,
    "adamw": -3.0,
}
EPOCHS = 10
#: The objective and the metric the curves carry.
METRIC = DEFAULT_OBJECTIVE
SAMPLES_PER_EPOCH = 50_000


def demo_spec(
    name: str, optimizers: list[str] | None = None, max_trials: int = 20_000
) -> StudySpec:
    """The MNIST MLP search space of the design, with ``setting:`` renames for lr.

    Optimizer names the built-in trainer does not know (hostile strings in the
    escaping tests) make it a study of another workload, as a user's own would be.
    """
    optimizers = optimizers or OPTIMIZERS
    known = all(o in TRAINER_OPTIMIZERS for o in optimizers)
    plain = [o for o in optimizers if o in ("gd", "sgd", "momentum", "nesterov")]
    adaptive = [o for o in optimizers if o not in plain]
    space: dict[str, Any] = {
        OPTIMIZER: {"type": "categorical", "choices": optimizers},
    }
    if plain:
        space["lr_sgd"] = {
            "type": "float",
            "low": 1e-3,
            "high": 1.0,
            "log": True,
            "setting": LR,
            "when": {OPTIMIZER: plain},
        }
    if adaptive:
        space["lr_adaptive"] = {
            "type": "float",
            "low": 1e-5,
            "high": 1e-1,
            "log": True,
            "setting": LR,
            "when": {OPTIMIZER: adaptive},
        }
    with_momentum = [o for o in optimizers if o in ("momentum", "nesterov")]
    if with_momentum:
        space["momentum"] = {
            "type": "float",
            "low": 0.5,
            "high": 0.99,
            "when": {OPTIMIZER: with_momentum},
        }
    space |= {
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
        "l1": {"type": "float", "low": 1e-7, "high": 1e-3, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.8},
        BATCH_NORM: {"type": "categorical", "choices": [True, False]},
    }
    return StudySpec.model_validate(
        {
            "name": name,
            "workload": REFERENCE_WORKLOAD if known else "synthetic",
            "direction": "maximize",
            "objective": METRIC,
            "sampler": {"name": "tpe"},
            "pruner": {"name": "median"},
            "budget": {"max_trials": max_trials},
            "fixed": {"epochs": EPOCHS, "batch_size": 64},
            "space": space,
        }
    )


@dataclass
class Outcome:
    """What a synthetic training run produced."""

    state: TrialState
    value: float | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    diagnosis: str | None = None
    fail_reason: str | None = None
    #: every objective value (multi-objective studies; ``value`` is the first)
    values: list[float] | None = None
    #: the Optuna user attribute ``final_metrics`` (the model as shipped, before/after)
    final_metrics: dict[str, Any] | None = None
    #: what the server stores with a finished trial: findings and telemetry
    findings: list[dict[str, Any]] = field(default_factory=list)
    telemetry: dict[str, float] | None = None


def simulate(settings: dict[str, Any], rng: random.Random) -> Outcome:
    """Train nothing; return a plausible learning curve and final state."""
    optimizer = str(settings.get(OPTIMIZER, "sgd"))
    lr = float(settings.get(LR, 0.01))
    distance = math.log10(lr) - _BEST_LOG_LR.get(optimizer, -2.0)
    if distance > 1.3:
        curve = learning_curve(0.1, 2, rng, lr, diverged=True)
        return Outcome(
            TrialState.FAIL,
            None,
            curve,
            "diverged at epoch 2",
            "loss became NaN at epoch 2 (diverged)",
            findings=[diverged_finding(2, lr)],
            telemetry=telemetry(curve),
        )
    final = 0.985 - 0.025 * distance**2
    final -= 0.5 * float(settings.get("weight_decay", 0.0)) + 40 * float(settings.get("l1", 0.0))
    final -= 0.03 * float(settings.get("dropout", 0.0)) ** 2
    final += 0.002 if settings.get(BATCH_NORM) else 0.0
    final = min(0.995, max(0.1, final + rng.gauss(0.0, 0.004)))
    if final < 0.93 and rng.random() < 0.6:
        stop = rng.randint(2, 5)
        curve = learning_curve(final, stop, rng, lr)
        return Outcome(
            TrialState.PRUNED,
            curve[-1][METRIC],
            curve,
            f"pruned at epoch {stop}",
            telemetry=telemetry(curve),
        )
    curve = learning_curve(final, EPOCHS, rng, lr)
    return Outcome(TrialState.COMPLETE, curve[-1][METRIC], curve, telemetry=telemetry(curve))


def diverged_finding(epoch: int, lr: float) -> dict[str, Any]:
    """The finding the server stores for a diverged run (``hpo.findings.Finding`` as JSON)."""
    return {
        "kind": "diverged",
        "epoch": epoch,
        "severity": "error",
        "message": f"the loss became NaN at epoch {epoch} (lr {lr:.3g})",
        "evidence": {"lr": lr, "train_loss": None},
    }


def telemetry(curve: list[dict[str, Any]]) -> dict[str, float]:
    """Device figures of a run, derived from its curve (no random draws: the outcomes
    of a seed stay what they were)."""
    speed = float(curve[0]["samples_per_s"]) if curve else 60_000.0
    memory = float(curve[0]["peak_memory_mb"]) if curve else 500.0
    util = 25.0 + 60.0 * (speed - 40_000) / 50_000
    return {
        "util_mean_pct": round(util, 1),
        "util_peak_pct": round(min(100.0, util + 12), 1),
        "device_memory_peak_mb": round(memory * 1.6, 1),
        "host_memory_peak_mb": round(memory, 1),
        "samples_per_s": speed,
        "data_wait_share": round(0.02 + (90_000 - speed) / 1e6, 4),
    }


def learning_curve(
    final: float, epochs: int, rng: random.Random, lr: float, diverged: bool = False
) -> list[dict[str, Any]]:
    """Per-epoch reports rising towards ``final`` (the last one NaN-like when diverged)."""
    rows = []
    speed = rng.uniform(40_000, 90_000)
    memory = rng.uniform(300, 900)
    for epoch in range(1, epochs + 1):
        acc = final - (final - 0.8) * math.exp(-epoch / 2.0) + rng.gauss(0.0, 0.002)
        loss = max(0.01, (1.0 - acc) * 2.5)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": round(loss * 0.9, 5),
                "val_loss": round(loss, 5),
                METRIC: round(min(acc, 0.999), 5),
                LR: lr,
                "grad_norm": round(rng.uniform(0.5, 3.0), 4),
                "epoch_time_s": round(SAMPLES_PER_EPOCH / speed, 3),
                "samples_per_s": round(speed, 1),
                "peak_memory_mb": round(memory, 1),
            }
        )
    if diverged:
        rows[-1] |= {METRIC: 0.098, "val_loss": None, "train_loss": None}
    return rows


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """Optuna distributions of the spec's parameters."""
    out: dict[str, BaseDistribution] = {}
    for name, p in spec.space.items():
        if isinstance(p, FloatParam):
            out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, CategoricalParam):
            out[name] = CategoricalDistribution(p.choices)
        else:
            out[name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def sample_params(spec: StudySpec, rng: random.Random) -> dict[str, Any]:
    """Uniform (log-uniform where the space says log) sampling, honouring ``when``."""
    values: dict[str, Any] = {}
    for name, p in spec.space.items():
        if any(values.get(ref, object()) not in ok for ref, ok in (p.when or {}).items()):
            continue
        if isinstance(p, CategoricalParam):
            values[name] = rng.choice(p.choices)
        elif p.log:
            values[name] = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
        else:
            values[name] = rng.uniform(p.low, p.high)
        if isinstance(p, IntParam):
            values[name] = int(round(values[name]))
    return values
