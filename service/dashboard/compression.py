"""Compression as the dashboard shows it: the method a trial applied, its colour, and the
model as shipped against the dense one (the trainer's ``final_metrics`` user attribute).

The method is derived from a trial's settings (names in ``hpo.settings.COMPRESSION``):
``prune_amount`` > 0 is "prune", a ``low_rank`` is "low-rank", a ``quantize`` other
than "none" is its mode; several are joined ("prune+int8"), none is "none".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.settings import COMPRESSION, DEFAULT_OBJECTIVE, MODEL_METRICS
from service.dashboard.frame import StudyFrame, StudyMeta
from service.storage.optuna_rows import trial_user_attrs, trials

FINAL_METRICS = "final_metrics"
PRUNE, LOW_RANK, QUANTIZE = "prune_amount", "low_rank", "quantize"
SIZE = "model_bytes"
NONE = "none"
#: Fixed colours of the plain methods; combinations get palette colours.
METHOD_COLORS = {
    NONE: "#7f7f7f",
    "prune": "#1f77b4",
    "low-rank": "#2ca02c",
    "int8": "#d62728",
    "fp16": "#ff7f0e",
    "bf16": "#9467bd",
}
PALETTE = (
    "#17becf",
    "#bcbd22",
    "#8c564b",
    "#e377c2",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
    "#a55194",
    "#6b6ecf",
    "#b5cf6b",
    "#e7ba52",
)
#: (label, shipped key, dense key) of the trial page's before/after table.
BEFORE_AFTER = (
    ("validation accuracy", "val_accuracy", "dense_val_accuracy"),
    ("test accuracy", "test_accuracy", "dense_test_accuracy"),
    ("model bytes", "model_bytes", "dense_model_bytes"),
    ("latency, batch 1 (ms)", "latency_ms_b1", "dense_latency_ms_b1"),
    ("latency, batch 1024 (ms)", "latency_ms_b1024", "dense_latency_ms_b1024"),
    ("non-zero parameters", "nonzero_params", "dense_nonzero_params"),
    ("FLOPs", "flops", "dense_flops"),
)


def method(settings: dict[str, Any]) -> str:
    """The compression a trial applied, e.g. "prune+int8" (or "none")."""
    parts = []
    prune = settings.get(PRUNE)
    if isinstance(prune, int | float) and not isinstance(prune, bool) and prune > 0:
        parts.append("prune")
    if settings.get(LOW_RANK) not in (None, 0, False, "", "none", "None"):
        parts.append("low-rank")
    quantize = settings.get(QUANTIZE)
    if quantize not in (None, "", NONE):
        parts.append(str(quantize))
    return "+".join(parts) or NONE


def method_order(methods: set[str]) -> list[str]:
    """Plain methods in a fixed order, then combinations sorted (colours stay put)."""
    plain = [m for m in METHOD_COLORS if m in methods]
    return plain + sorted(m for m in methods if m not in METHOD_COLORS)


def method_color(name: str, order: Sequence[str]) -> str:
    """A method's colour: fixed for the plain ones, the palette in order for the rest."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    others = [m for m in order if m not in METHOD_COLORS]
    index = others.index(name) if name in others else sum(map(ord, name))
    return PALETTE[index % len(PALETTE)]


def is_compression_study(meta: StudyMeta) -> bool:
    """Does the study vary or apply compression, or minimise a model measurement?

    Studies created outside the service (no spec) count when multi-objective."""
    spec = meta.spec
    if spec is None:
        return len(meta.directions) > 1
    settings = {meta.setting_of(name) for name in spec.space} | set(spec.fixed)
    measured = set(spec.objective_names) & set(MODEL_METRICS)
    return bool(settings & set(COMPRESSION)) or bool(measured)


# --------------------------------------------------------------------------- final metrics


@dataclass(frozen=True, slots=True)
class Shipped:
    """What the size chart reads of a trial's final metrics (NaN where missing)."""

    accuracy: float
    size: float

    @property
    def usable(self) -> bool:
        return math.isfinite(self.accuracy) and math.isfinite(self.size) and self.size > 0


MISSING = Shipped(math.nan, math.nan)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _shipped(value_json: str | None) -> Shipped:
    try:
        data = json.loads(value_json) if value_json else None
    except ValueError:
        return MISSING
    if not isinstance(data, dict):
        return MISSING
    return Shipped(_number(data.get(DEFAULT_OBJECTIVE)), _number(data.get(SIZE)))


def shipped(session: Session, frame: StudyFrame) -> dict[int, Shipped]:
    """trial id -> accuracy and bytes as shipped, for the frame's COMPLETE trials.

    Read once per trial (one query for the trials not seen yet); kept with the frame
    and by the next one (a finished trial's user attributes do not change)."""
    memo: dict[int, Shipped] = frame.memo("shipped")
    todo = [r.trial_id for r in frame.rows if r.state == "COMPLETE" and r.trial_id not in memo]
    if todo:
        c = trial_user_attrs.c
        stmt = (
            select(c.trial_id, c.value_json)
            .join(trials, trials.c.trial_id == c.trial_id)
            .where(trials.c.study_id == frame.meta.study_id, c.key == FINAL_METRICS)
            .where(c.trial_id >= min(todo))
        )
        wanted = set(todo)
        for trial_id, value_json in session.execute(stmt):
            if trial_id in wanted:
                memo[trial_id] = _shipped(value_json)
        for trial_id in todo:
            memo.setdefault(trial_id, MISSING)
    return memo


def before_after(final: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The trial page's rows: label, dense (before) and shipped (after) value, change
    (all as text).

    Only rows with both numbers; empty when the trial reported no final metrics."""
    if not isinstance(final, dict):
        return []
    rows = []
    for label, after_key, before_key in BEFORE_AFTER:
        after, before = _number(final.get(after_key)), _number(final.get(before_key))
        if not (math.isfinite(after) and math.isfinite(before)):
            continue
        rows.append(
            {
                "label": label,
                "before": show(after_key, before),
                "after": show(after_key, after),
                "change": _change(after_key, before, after),
            }
        )
    return rows


def show(key: str, value: float) -> str:
    """A final metric for reading: accuracies with 4 decimals, latencies with 3
    significant digits, counts and bytes in whole units with thousands separated."""
    if key.endswith("accuracy"):
        return f"{value:.4f}"
    if key.startswith("latency"):
        return f"{value:.3g}"
    return f"{value:,.0f}"


def _change(key: str, before: float, after: float) -> str:
    """Accuracy as points gained or lost; sizes and times as a factor."""
    if key.endswith("accuracy"):
        return f"{100 * (after - before):+.2f} points"
    if after <= 0 or before <= 0:
        return "—"
    ratio = before / after
    less, more = ("faster", "slower") if key.startswith("latency") else ("smaller", "larger")
    return f"{ratio:.1f}x {less}" if ratio >= 1 else f"{1 / ratio:.1f}x {more}"


def applied(settings: dict[str, Any]) -> dict[str, Any]:
    """The trial's compression settings (those it has), in ``COMPRESSION`` order."""
    return {name: settings[name] for name in COMPRESSION if name in settings}
