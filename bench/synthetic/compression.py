"""Synthetic multi-objective compression trials: accuracy against model bytes.

The search space of ``studies/mnist-compression-cpu.yaml`` (hidden width,
pruning, low rank, quantization, fine-tuning) under NSGA-II, two objectives
(``val_accuracy`` up, ``model_bytes`` down). :func:`simulate` trains nothing: it
makes up the model as shipped from the settings, in the shape the reference
trainer reports it (the Optuna user attribute ``final_metrics``: the shipped
model's figures and the ``dense_*`` ones before compression), so that the
dashboard's Pareto and accuracy-against-size charts, and the trial page's
before/after, have realistic data at any scale.
"""

from __future__ import annotations

import math
import random
from typing import Any

from optuna.trial import TrialState

from bench.synthetic.demo import METRIC, Outcome, learning_curve, telemetry
from hpo.settings import REFERENCE_WORKLOAD
from hpo.spec import StudySpec

EPOCHS = 2
IN, OUT = 28 * 28, 10
#: bytes per stored weight by quantize mode
BYTES_PER = {"none": 4, "int8": 1, "fp16": 2, "bf16": 2}
#: accuracy lost to each quantize mode
QUANT_LOSS = {"none": 0.0, "int8": 0.003, "fp16": 0.0005, "bf16": 0.002}


def compression_spec(name: str, max_trials: int = 20_000) -> StudySpec:
    """Accuracy against bytes across pruning, low rank, quantization and width."""
    return StudySpec.model_validate(
        {
            "name": name,
            "workload": REFERENCE_WORKLOAD,
            "description": (
                "Synthetic accuracy-against-bytes study (pruning, low rank, quantization)."
            ),
            "directions": ["maximize", "minimize"],
            "objectives": [METRIC, "model_bytes"],
            "sampler": {"name": "nsga2", "options": {"population_size": 24}},
            "budget": {"max_trials": max_trials},
            "fixed": {"optimizer": "adam", "lr": 0.001, "epochs": EPOCHS, "batch_size": 128},
            "space": {
                "hidden": {"type": "categorical", "choices": [64, 128, 256]},
                "prune_amount": {"type": "categorical", "choices": [0.0, 0.25, 0.5, 0.75, 0.9]},
                "prune_schedule": {"type": "categorical", "choices": ["once", "gradual"]},
                "low_rank": {"type": "categorical", "choices": [None, 8, 16, 32, 64]},
                "finetune_epochs": {"type": "int", "low": 0, "high": 1},
                "quantize": {"type": "categorical", "choices": list(BYTES_PER)},
            },
        }
    )


def _shipped(settings: dict[str, Any]) -> tuple[int, int, float]:
    """(dense parameters, shipped non-zero parameters, accuracy lost) of the settings."""
    hidden = int(settings.get("hidden", 128))
    rank = settings.get("low_rank")
    prune = float(settings.get("prune_amount", 0.0))
    dense = IN * hidden + hidden + hidden * OUT + OUT
    params = dense
    loss = 0.0
    if rank is not None and int(rank) < hidden:
        params -= IN * hidden - int(rank) * (IN + hidden)
        loss += 0.3 * math.exp(-int(rank) / 6)
    loss += 0.6 * prune**4
    loss *= 0.6 ** int(settings.get("finetune_epochs", 0))
    loss += QUANT_LOSS.get(str(settings.get("quantize", "none")), 0.0)
    return dense, round(params * (1.0 - prune)), loss


def _model_bytes(nonzero: int, params: int, quantize: str) -> int:
    """Honest bytes: dense storage, or values plus 4-byte indices when sparse is smaller."""
    per = BYTES_PER.get(quantize, 4)
    return 1_500 + min(params * per, nonzero * (per + 4))


def final_metrics(settings: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The ``final_metrics`` user attribute of a completed run: shipped and dense figures."""
    dense, nonzero, loss = _shipped(settings)
    hidden = int(settings.get("hidden", 128))
    rank = settings.get("low_rank")
    params = dense if rank is None else dense - IN * hidden + int(rank) * (IN + hidden)
    dense_val = 0.955 + 0.006 * math.log2(hidden / 64) + rng.gauss(0.0, 0.003)
    val = max(0.1, dense_val - loss + rng.gauss(0.0, 0.003))
    quantize = str(settings.get("quantize", "none"))
    speedup = 1.0 + 0.5 * (quantize != "none")
    return {
        "val_accuracy": round(val, 5),
        "test_accuracy": round(val - 0.002, 5),
        "model_bytes": _model_bytes(nonzero, params, quantize),
        "params": params,
        "nonzero_params": nonzero,
        "flops": 2 * nonzero,
        "sparsity": round(1 - nonzero / params, 4),
        "latency_ms_b1": round(0.01 + 2e-8 * nonzero / speedup, 5),
        "latency_ms_b1024": round(0.05 + 4e-6 * nonzero / speedup, 4),
        "dense_val_accuracy": round(dense_val, 5),
        "dense_test_accuracy": round(dense_val - 0.002, 5),
        "dense_model_bytes": 1_500 + 4 * dense,
        "dense_params": dense,
        "dense_nonzero_params": dense,
        "dense_flops": 2 * dense,
        "dense_latency_ms_b1": round(0.01 + 2e-8 * dense, 5),
        "dense_latency_ms_b1024": round(0.05 + 4e-6 * dense, 4),
    }


def simulate(settings: dict[str, Any], rng: random.Random) -> Outcome:
    """A completed compression run (about 1 in 100 fails: out of memory)."""
    if rng.random() < 0.01:
        return Outcome(TrialState.FAIL, None, [], fail_reason="CUDA out of memory")
    final = final_metrics(settings, rng)
    curve = learning_curve(final["dense_val_accuracy"], EPOCHS, rng, float(settings["lr"]))
    return Outcome(
        TrialState.COMPLETE,
        final[METRIC],
        curve,
        values=[final[METRIC], float(final["model_bytes"])],
        final_metrics=final,
        telemetry=telemetry(curve),
    )


#: The third objective of :func:`three_objective_spec`.
LATENCY = "latency_ms_b1"


def three_objective_spec(name: str, max_trials: int = 20_000) -> StudySpec:
    """:func:`compression_spec` with latency at batch 1 as a third objective (minimized)."""
    raw = compression_spec(name, max_trials).model_dump(mode="json")
    raw |= {
        "objectives": [METRIC, "model_bytes", LATENCY],
        "directions": ["maximize", "minimize", "minimize"],
    }
    return StudySpec.model_validate(raw)


def simulate_three(settings: dict[str, Any], rng: random.Random) -> Outcome:
    """:func:`simulate` for :func:`three_objective_spec`: latency appended to the values."""
    outcome = simulate(settings, rng)
    if outcome.final_metrics:
        outcome.values = [*(outcome.values or []), outcome.final_metrics[LATENCY]]
    return outcome
