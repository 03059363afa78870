"""Per-trial findings: what went wrong in one training run, with its evidence.

``check_trial(history, status, diagnosis)`` reads a trial's per-epoch metrics
(the dicts the reference trainer reports, or the subset an own objective
reports) and returns a list of :class:`Finding`. Each check reads only the
metrics it names and is skipped when they are missing, so a partial history
gets fewer checks, never a wrong one. A healthy run gets no finding at all:
every threshold below was set from measured healthy runs with a margin
(tests/workers/test_findings_runs.py runs both sides).

Metrics read (per epoch; ``epoch`` numbers from 1, else the list position):

    diverged             status / diagnosis message, train_loss, val_loss (non-finite)
    exploding_gradients  grad_norm_max (else grad_norm)
    vanishing_gradients  grad_norm_first, grad_norm, train_loss
    dead_units           dead_fraction
    overfitting          train_loss, val_loss
    underfitting         train_loss (initial_loss on the first epoch, optional)
    plateau              train_loss, val_loss (when present)

Standard library and pydantic only: the client and the server import this too.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# --------------------------------------------------------------------------- thresholds

# Global gradient L2 norm counted as exploding. Healthy reference-trainer runs
# (cross-entropy on normalised MNIST) peak at 2-60 even at aggressive learning
# rates (adam 0.02: 60); a 30x scaled init starts at ~2.7e4. An own objective
# with a larger loss scale can pass its own threshold to check_trial.
EXPLODING_NORM = 1e3
# First layer's gradient norm / global gradient norm under which the gradient
# is vanishing before it reaches the input. Healthy 1-4 layer MLPs measured
# 0.14-0.76 (per step), stuck 8-layer ones 0.017-0.038.
VANISHING_RATIO = 0.05
# Fraction of hidden ReLU units silent on every validation image that counts
# as dead units: healthy adam 1e-3 runs have ~5%, adam 0.01 ~40%; sgd lr>=1
# leaves 50-90% dead. Half the width gone is worth a warning.
DEAD_FRACTION = 0.5
DEAD_SEVERE = 0.9  # nine units in ten dead: the model has almost no width left
# Overfitting: validation loss at least this much (relative) above its best...
OVERFIT_RISE = 0.1
# ...and at least OVERFIT_MIN_RISE above it (in the loss's own units: nats of
# cross-entropy for the reference trainer), in each of the last
# OVERFIT_MIN_EPOCHS epochs, so one noisy epoch (sgd lr 0.1 on 2k images: +15%
# for one epoch) is not a finding. The absolute floor keeps the mild rise of a
# healthy full-MNIST 10-epoch run (adam 1e-3: 0.093 -> 0.114, +0.022; momentum
# 0.05: +0.020, accuracy flat at 0.98) out; memorising 200-500 images rises
# +0.06 to +0.23. Loss-based on purpose: accuracy can still creep up while the
# model grows overconfident (both accuracies are in the evidence).
OVERFIT_MIN_RISE = 0.05
OVERFIT_MIN_EPOCHS = 2
# Underfitting: the training loss fell by less than this share of its start
# over the whole run (lr 1e-7: 0%; healthy 2-3 epoch runs: 60-75%).
UNDERFIT_MIN_DROP = 0.1
# Plateau: over the last PLATEAU_EPOCHS epochs neither loss improved its best
# by PLATEAU_MIN_GAIN (relative)...
PLATEAU_EPOCHS = 4
PLATEAU_MIN_GAIN = 0.01
# ...while the training loss is still above this share of where it started
# (a converged run sits far below it: healthy runs end at 5-20%).
PLATEAU_HIGH_LOSS = 0.25


class FindingKind(StrEnum):
    DIVERGED = "diverged"
    EXPLODING_GRADIENTS = "exploding_gradients"
    VANISHING_GRADIENTS = "vanishing_gradients"
    DEAD_UNITS = "dead_units"
    OVERFITTING = "overfitting"
    UNDERFITTING = "underfitting"
    PLATEAU = "plateau"
    # hpo.findings_responsible: privacy, fairness, robustness (from the final metrics)
    DP_NOISE_TOO_HIGH = "dp_noise_too_high"
    CLASS_LEFT_BEHIND = "class_left_behind"
    ROBUSTNESS_CLIFF = "robustness_cliff"


class Severity(StrEnum):
    INFO = "info"  # worth knowing; the run may still be useful
    WARNING = "warning"  # the run is wasting its budget or capacity
    ERROR = "error"  # the run's result is not usable


Evidence = dict[str, float | int | str | None]


class Finding(BaseModel):
    """One problem of one trial: what, since when, how bad, and the numbers."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    epoch: int | None = Field(description="epoch in which it started (from 1); None if unknown")
    message: str = Field(description="one sentence with the numbers")
    evidence: Evidence = Field(default_factory=dict)
    severity: Severity


# --------------------------------------------------------------------------- history access


class History:
    """A trial's per-epoch records with typed, missing-tolerant access."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.records = [dict(r) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def epoch(self, i: int) -> int:
        value = _number(self.records[i].get("epoch"))
        return int(value) if value is not None and math.isfinite(value) else i + 1

    def has(self, key: str) -> bool:
        return any(_number(r.get(key)) is not None for r in self.records)

    def _values(self, key: str) -> Iterator[tuple[int, float]]:
        for i, record in enumerate(self.records):
            value = _number(record.get(key))
            if value is not None:
                yield self.epoch(i), value

    def series(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) for every epoch where ``key`` is a finite number."""
        return [(e, v) for e, v in self._values(key) if math.isfinite(v)]

    def nonfinite(self, key: str) -> tuple[int, float] | None:
        """The first (epoch, value) where ``key`` is NaN or infinite."""
        return next(((e, v) for e, v in self._values(key) if not math.isfinite(v)), None)

    def last(self, key: str) -> float | None:
        values = self.series(key)
        return values[-1][1] if values else None


def _number(value: Any) -> float | None:
    """A metric as float; JSON's "NaN"/"Infinity" strings included; None if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def evidence_of(*parts: Mapping[str, float | int | str | None]) -> Evidence:
    """One evidence dict from several groups of entries."""
    out: Evidence = {}
    for part in parts:
        out.update(part)
    return out


def _g(value: float) -> str:
    return f"{value:.4g}"


# --------------------------------------------------------------------------- checks

_DIVERGED_AT = re.compile(
    r"epoch (?P<epoch>\d+)(?: batch (?P<batch>\d+))?: loss (?P<loss>\S+?)"
    r"(?: > (?P<factor>\S+) x first loss (?P<first_loss>\S+))?$"
)


def check_diverged(h: History, status: str | None, diagnosis: str | None) -> Finding | None:
    """The trainer's divergence guard fired, or a loss became NaN/Inf."""
    bad = h.nonfinite("train_loss") or h.nonfinite("val_loss")
    said = bool(diagnosis and diagnosis.startswith("diverged")) or status == "diverged"
    if not said and bad is None:
        return None
    evidence: Evidence = {"lr": h.last("lr")}
    match = _DIVERGED_AT.search(diagnosis or "")
    if match:
        evidence |= {k: _parsed(v) for k, v in match.groupdict().items() if v is not None}
    elif bad is not None:
        evidence |= {"epoch": bad[0], "loss": str(bad[1])}
    epoch = evidence.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int | float) else (h.epoch(len(h) - 1) if h else None)
    detail = diagnosis if said and diagnosis else f"diverged in epoch {epoch}"
    if match is None and bad is not None:
        detail += f": {'train' if h.nonfinite('train_loss') else 'val'} loss {bad[1]}"
    lr = evidence["lr"]
    at_lr = f", at lr {_g(lr)}" if isinstance(lr, float) else ""
    return Finding(
        kind=FindingKind.DIVERGED,
        epoch=epoch,
        message=f"Training {detail}{at_lr}.",
        evidence=evidence,
        severity=Severity.ERROR,
    )


def _parsed(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text
    if value.is_integer() and "." not in text and "e" not in text.lower():
        return int(value)
    return value if math.isfinite(value) else text


def check_exploding(h: History, threshold: float = EXPLODING_NORM) -> Finding | None:
    """A sampled global gradient norm above ``threshold`` or non-finite."""
    key = "grad_norm_max" if h.has("grad_norm_max") else "grad_norm"
    nonfinite = h.nonfinite(key)
    high = [(e, v) for e, v in h.series(key) if v > threshold]
    if nonfinite is None and not high:
        return None
    epoch, value = nonfinite or max(high, key=lambda ev: ev[1])
    started = min([e for e, _ in high] + ([nonfinite[0]] if nonfinite else []))
    means = [v for _, v in h.series("grad_norm")]
    typical = statistics.median(means) if means else None
    evidence: Evidence = {key: value if math.isfinite(value) else str(value)}
    evidence |= {"peak_epoch": epoch, "threshold": threshold, "median_grad_norm": typical}
    many = typical is not None and len(means) >= 3
    usual = f" (median of the epoch means {_g(typical)})" if many and typical is not None else ""
    return Finding(
        kind=FindingKind.EXPLODING_GRADIENTS,
        epoch=started,
        message=f"Gradient norm reached {_g(value)} in epoch {epoch}, above {_g(threshold)}"
        f"{usual}: gradients are exploding.",
        evidence=evidence,
        severity=Severity.ERROR if nonfinite else Severity.WARNING,
    )


def _run_start(series: Sequence[tuple[int, float]], holds: Callable[[float], bool]) -> int:
    """The first epoch of the run of points that reaches the end of ``series`` with
    ``holds`` true (the last point's epoch when only it holds)."""
    started = series[-1][0]
    for epoch, value in reversed(series):
        if not holds(value):
            break
        started = epoch
    return started


def check_vanishing(h: History) -> Finding | None:
    """The first layer gets a vanishing share of the gradient and the loss is not falling."""
    first, total = dict(h.series("grad_norm_first")), dict(h.series("grad_norm"))
    ratios = [(e, first[e] / total[e]) for e in first if e in total and total[e] > 0]
    drop = _loss_drop(h)
    if not ratios or ratios[-1][1] >= VANISHING_RATIO or drop is None or drop >= UNDERFIT_MIN_DROP:
        return None
    epoch, ratio = ratios[-1]
    return Finding(
        kind=FindingKind.VANISHING_GRADIENTS,
        epoch=_run_start(ratios, lambda r: r < VANISHING_RATIO),
        message=f"The first layer's gradient is {ratio:.2%} of the whole gradient norm "
        f"(under {VANISHING_RATIO:.0%}) and the training loss fell only {drop:.1%}: "
        "gradients vanish before reaching the input.",
        evidence=evidence_of(
            {"ratio": ratio, "grad_norm_first": first[epoch], "grad_norm": total[epoch]},
            {"loss_drop": drop, "threshold": VANISHING_RATIO},
        ),
        severity=Severity.WARNING,
    )


def check_dead_units(h: History) -> Finding | None:
    """Most hidden ReLU units never fire on validation data (at the last measurement)."""
    series = h.series("dead_fraction")
    if not series or series[-1][1] < DEAD_FRACTION:
        return None
    epoch, value = series[-1]
    return Finding(
        kind=FindingKind.DEAD_UNITS,
        epoch=_run_start(series, lambda v: v >= DEAD_FRACTION),
        message=f"{value:.0%} of the hidden ReLU units never fire on validation data "
        f"(epoch {epoch}; threshold {DEAD_FRACTION:.0%}): most of the model's width is dead.",
        evidence=evidence_of(
            {"dead_fraction": value, "measured_epoch": epoch, "threshold": DEAD_FRACTION},
            {"max_dead_fraction": max(v for _, v in series)},
        ),
        severity=Severity.ERROR if value >= DEAD_SEVERE else Severity.WARNING,
    )


def check_overfitting(h: History) -> Finding | None:
    """Validation loss stayed well above its best for epochs while the training loss fell."""
    val, train = h.series("val_loss"), dict(h.series("train_loss"))
    if len(val) < OVERFIT_MIN_EPOCHS + 1:
        return None
    best_i = min(range(len(val)), key=lambda i: val[i][1])
    (best_epoch, best), (last_epoch, last) = val[best_i], val[-1]
    recent = [v for _, v in val[best_i + 1 :][-OVERFIT_MIN_EPOCHS:]]
    floor = max(best * (1 + OVERFIT_RISE), best + OVERFIT_MIN_RISE)
    if len(recent) < OVERFIT_MIN_EPOCHS or min(recent) < floor:
        return None  # too soon after the best, or not (or no longer) clearly above it
    train_best, train_last = train.get(best_epoch), train.get(last_epoch)
    if train_best is None or train_last is None or train_last > train_best * (1 - OVERFIT_RISE):
        return None  # the training loss did not keep falling: not memorising, maybe unstable
    accuracy = dict(h.series("val_accuracy"))
    return Finding(
        kind=FindingKind.OVERFITTING,
        epoch=val[best_i + 1][0],
        message=f"Validation loss rose from {_g(best)} (epoch {best_epoch}) to {_g(last)} "
        f"(epoch {last_epoch}) while training loss fell from {_g(train_best)} to "
        f"{_g(train_last)}: the model is overfitting.",
        evidence=evidence_of(
            {"best_epoch": best_epoch, "best_val_loss": best, "val_loss": last},
            {"train_loss_at_best": train_best, "train_loss": train_last, "rise": last / best - 1},
            {
                "val_accuracy_at_best": accuracy.get(best_epoch),
                "val_accuracy": accuracy.get(last_epoch),
            },
        ),
        severity=Severity.WARNING,
    )


def _loss_drop(h: History) -> float | None:
    """Share of the starting training loss shed by the last epoch; None if unknowable.

    The start is ``initial_loss`` (loss before the first step) when the first epoch
    reports it, else the first epoch's mean training loss (then 2+ epochs are needed).
    """
    train = h.series("train_loss")
    initial = _number(h.records[0].get("initial_loss")) if h else None
    if initial is not None and math.isfinite(initial) and initial > 0 and train:
        start = initial
    elif len(train) >= 2 and train[0][1] > 0:
        start = train[0][1]
    else:
        return None
    return (start - train[-1][1]) / start


def check_underfitting(h: History) -> Finding | None:
    """The training loss barely moved over the whole run (too-low lr, too much regularization)."""
    drop = _loss_drop(h)
    if drop is None or drop >= UNDERFIT_MIN_DROP:
        return None
    train = h.series("train_loss")
    initial = _number(h.records[0].get("initial_loss"))
    start = initial if initial is not None and math.isfinite(initial) else train[0][1]
    lr, acc = h.last("lr"), h.last("val_accuracy")
    at_lr = f" at lr {_g(lr)}" if lr is not None else ""
    accuracy = f", validation accuracy {acc:.3f}" if acc is not None else ""
    # Rising epochs mean the loss bounced instead of creeping: a too-HIGH lr (full-batch gd
    # at lr 1: 2.35 -> 1.55 -> 5.12 -> ...) also ends up "barely lower" than it started.
    rises = sum(b > a * (1 + OVERFIT_RISE) for (_, a), (_, b) in itertools.pairwise(train))
    why = (
        f"it rose in {rises} of {len(train) - 1} epochs: unstable, the lr may be too high"
        if rises
        else "the model is underfitting (lr too low, or too much regularization)"
    )
    return Finding(
        kind=FindingKind.UNDERFITTING,
        epoch=train[0][0],
        message=f"Training loss barely moved{at_lr}: {_g(start)} -> {_g(train[-1][1])} "
        f"({drop:.1%} lower) over {len(train)} epochs{accuracy}; {why}.",
        evidence=evidence_of(
            {"start_loss": start, "train_loss": train[-1][1], "loss_drop": drop},
            {"epochs": len(train), "rising_epochs": rises, "lr": lr, "val_accuracy": acc},
            {"threshold": UNDERFIT_MIN_DROP},
        ),
        severity=Severity.WARNING,
    )


def check_plateau(h: History) -> Finding | None:
    """The loss improved at first, then stopped improving while still high."""
    train, drop = h.series("train_loss"), _loss_drop(h)
    if len(train) < PLATEAU_EPOCHS + 1 or drop is None or drop < UNDERFIT_MIN_DROP:
        return None  # too short, or never moved at all (that is underfitting)
    if drop > 1 - PLATEAU_HIGH_LOSS:
        return None  # the loss came down most of the way: converging, not stuck
    for key in ("train_loss", "val_loss"):
        series = [v for _, v in h.series(key)]
        if series and _gain(series, PLATEAU_EPOCHS) >= PLATEAU_MIN_GAIN:
            return None
    since = train[-PLATEAU_EPOCHS - 1][0]
    best = min(v for _, v in train)
    return Finding(
        kind=FindingKind.PLATEAU,
        epoch=since,
        message=f"Training loss has stayed at {_g(best)} since epoch {since} "
        f"(less than {PLATEAU_MIN_GAIN:.0%} better over the last {PLATEAU_EPOCHS} epochs) "
        f"after falling only {drop:.0%}: training is stuck on a plateau.",
        evidence=evidence_of(
            {"since_epoch": since, "best_train_loss": best, "loss_drop": drop},
            {"val_loss": h.last("val_loss"), "lr": h.last("lr"), "epochs": PLATEAU_EPOCHS},
        ),
        severity=Severity.INFO,
    )


def _gain(values: Sequence[float], window: int) -> float:
    """Relative improvement of the best value over the last ``window`` entries."""
    before, recent = min(values[:-window]), min(values[-window:])
    return (before - recent) / before if before > 0 else 0.0


# --------------------------------------------------------------------------- entry point

_HISTORY_CHECKS: tuple[Callable[[History], Finding | None], ...] = (
    check_vanishing,
    check_dead_units,
    check_overfitting,
    check_underfitting,
    check_plateau,
)


def check_trial(
    history: Iterable[Mapping[str, Any]],
    status: str | None = None,
    diagnosis: str | None = None,
    exploding_norm: float = EXPLODING_NORM,
    final: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Every finding of one trial, in the order the checks run.

    ``history``: per-epoch metric dicts; ``status``/``diagnosis``: how the trainer
    ended (``"diverged"`` and its message, e.g. "diverged at epoch 2 batch 17: loss
    3e5 > 10 x first loss 2.3"). A diverged run is not also judged for
    underfitting, overfitting or plateau: its loss curve stops at the blow-up.
    ``final``: the trial's final metrics, for the privacy, fairness and robustness
    findings (hpo.findings_responsible).
    """
    h = History(history)
    findings = [check_diverged(h, status, diagnosis), check_exploding(h, exploding_norm)]
    diverged = findings[0] is not None
    for check in _HISTORY_CHECKS:
        if diverged and check in (check_overfitting, check_underfitting, check_plateau):
            continue
        findings.append(check(h))
    from hpo.findings_responsible import check_responsible  # it imports this module

    found = [f for f in findings if f is not None]
    return found if diverged else found + check_responsible(h, final)
