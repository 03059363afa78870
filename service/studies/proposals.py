"""Per-study diagnosis: patterns across trials, each with a proposed search-space edit.

``diagnose_study(trials, spec)`` reads the study's trials (number, state, params,
value, findings) and its spec (a dict) and returns :class:`Proposal` s such as
"9 of 12 adam trials with lr_adaptive > 0.02 diverged: narrow lr_adaptive to
high: 0.02", with counts and a spec edit (``{"path": "space.lr_adaptive.high",
"old": 0.1, "new": 0.02}``). Per bad outcome (a finding kind, or "failed"):

* numeric parameters: a threshold with the outcome on one side and mostly
  healthy trials on the other, over all trials or among one categorical choice
  (``optimizer: adam``): narrow the bound to the shortest decimal that still
  separates the two sides (log ranges come out as 0.02, 3e-05...);
* categorical choices whose trials (nearly) all have the outcome: remove them.

Minimum counts and a one-sided Fisher exact test keep a few unlucky trials from
making a proposal; a study without findings gets none. The server runs it (the
study's diagnosis, :mod:`service.studies.diagnosis`); the answer's shapes
(:class:`~hpo.schemas.Proposal`, :class:`~hpo.schemas.SpecEdit`) are the wire
contract's. Standard library and pydantic only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from hpo.findings import Finding, FindingKind
from hpo.protocol import TrialOutcome
from hpo.schemas import Proposal, SpecEdit
from service.studies.splits import (
    MAX_KEPT_RATE,
    MAX_P_VALUE,
    MIN_KEPT,
    MIN_REGION_BAD,
    Split,
    best_split,
    fisher_greater,
)

# --------------------------------------------------------------------------- thresholds

FAILED = "failed"  # outcome of a trial in state fail (no findings of its own)
STATES = (TrialOutcome.COMPLETE, TrialOutcome.PRUNED, TrialOutcome.FAIL)  # not running ones
# Removing a categorical choice: nearly all of its trials (and at least
# MIN_REGION_BAD of them) have the outcome.
CHOICE_BAD_RATE = 0.9

_VERBS = {
    FindingKind.DIVERGED: "diverged",
    FindingKind.EXPLODING_GRADIENTS: "had exploding gradients",
    FindingKind.VANISHING_GRADIENTS: "had vanishing gradients",
    FindingKind.DEAD_UNITS: "had mostly dead ReLU units",
    FindingKind.OVERFITTING: "overfit",
    FindingKind.UNDERFITTING: "underfit",
    FindingKind.PLATEAU: "plateaued",
    FindingKind.DP_NOISE_TOO_HIGH: "collapsed under DP-SGD noise",
    FindingKind.CLASS_LEFT_BEHIND: "left a class behind",
    FindingKind.ROBUSTNESS_CLIFF: "fell off a robustness cliff",
    FAILED: "failed",
}


class TrialRecord(BaseModel):
    """What the diagnosis needs of one trial. ``params`` are keyed by the spec's
    parameter names (Optuna's params) or by setting names (``lr``)."""

    number: int
    state: str
    params: dict[str, Any] = Field(default_factory=dict)
    value: float | None = None
    findings: list[Finding] = Field(default_factory=list)

    def outcomes(self) -> set[str]:
        found = {str(f.kind) for f in self.findings}
        return found | {FAILED} if self.state.lower() == TrialOutcome.FAIL else found


# --------------------------------------------------------------------------- space access


class _Study:
    """The spec's space and the trials that count, with parameter look-ups."""

    def __init__(self, spec: Mapping[str, Any], trials: list[TrialRecord]) -> None:
        space = spec.get("space") or {}
        self.space = {str(k): dict(v) for k, v in space.items() if isinstance(v, Mapping)}
        self.trials = [t for t in trials if t.state.lower() in STATES]

    def value(self, trial: TrialRecord, name: str) -> Any:
        """The value parameter ``name`` took in ``trial``; None where it was not active."""
        if name in trial.params:
            return trial.params[name]
        entry = self.space.get(name, {})
        setting = entry.get("setting") or name
        if setting == name or setting not in trial.params:
            return None
        return trial.params[setting] if self.active(trial, entry) else None

    def active(self, trial: TrialRecord, entry: Mapping[str, Any]) -> bool:
        """Whether ``entry``'s ``when`` condition holds for the trial."""
        for other, allowed in (entry.get("when") or {}).items():
            value = self.value(trial, other) if other in self.space else trial.params.get(other)
            if value is None or value not in allowed:
                return False
        return True

    def matches(self, trial: TrialRecord, condition: Mapping[str, Any]) -> bool:
        return all(self.value(trial, k) == c for k, c in condition.items())

    def numeric_rows(self, name: str) -> list[tuple[TrialRecord, float]]:
        rows = [(t, _numeric(self.value(t, name))) for t in self.trials]
        return [(t, v) for t, v in rows if v is not None]


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _conditions(study: _Study, name: str, rows: list[tuple[TrialRecord, float]]) -> list[dict]:
    """Every (categorical, choice) that holds for some but not all trials of ``name``."""
    out: list[dict[str, Any]] = []
    for other, entry in study.space.items():
        if other == name or entry.get("type") != "categorical":
            continue
        seen = [study.value(t, other) for t, _ in rows]
        for choice in entry.get("choices") or []:
            if 0 < sum(v == choice for v in seen) < len(rows):
                out.append({other: choice})
    return out


def _numeric_proposals(study: _Study, name: str) -> list[Proposal]:
    """Per outcome and side: the pattern over all trials, else the strongest conditioned one."""
    rows = study.numeric_rows(name)
    conditions = [{}, *_conditions(study, name, rows)]
    found = []
    for outcome in sorted({o for t, _ in rows for o in t.outcomes()}):
        for side in ("above", "below"):
            made = [_narrow(study, name, rows, outcome, c, side) for c in conditions]
            made = [p for p in made if p is not None]
            if made:
                strongest = min(made, key=lambda p: (-p.bad, p.p_value))
                found.append(made[0] if not made[0].condition else strongest)
    return found


def _narrow(
    study: _Study,
    name: str,
    rows: list[tuple[TrialRecord, float]],
    outcome: str,
    condition: dict[str, Any],
    side: Literal["above", "below"],
) -> Proposal | None:
    """The proposal to move one bound of ``name`` past the region where ``outcome`` rules."""
    points = [(v, outcome in t.outcomes()) for t, v in rows if study.matches(t, condition)]
    split = best_split(points, side)
    entry = study.space[name]
    if split is None or (new := _new_bound(entry, split)) is None:
        return None
    bound = "high" if side == "above" else "low"
    who = "".join(f"{v} " if isinstance(v, str) else f"{k}={v} " for k, v in condition.items())
    verb = _VERBS.get(outcome, outcome)
    if split.bad == split.total:
        where = "above" if side == "above" else "below"
        pattern = f"{name} {where} {new:g} {verb} in every {who}trial ({split.bad} of {split.bad})"
    else:
        op = ">" if side == "above" else "<"
        pattern = f"{split.bad} of {split.total} {who}trials with {name} {op} {new:g} {verb}"
    message = f"{pattern}: narrow {name} to {bound}: {new:g}"
    return Proposal(
        parameter=name,
        outcome=outcome,
        region=side,
        threshold=new,
        condition=condition,
        bad=split.bad,
        total=split.total,
        kept_bad=split.kept_bad,
        kept_total=split.kept_total,
        p_value=split.p_value,
        pattern=pattern,
        edit=SpecEdit(path=f"space.{name}.{bound}", old=entry.get(bound), new=new),
        message=message + _collateral(study, name, condition, side, new),
    )


def _new_bound(entry: Mapping[str, Any], split: Split) -> float | int | None:
    """The split as the entry's new bound; None when it would not narrow the range."""
    new: float | int = split.threshold
    if entry.get("type") == "int":
        new = math.floor(new) if split.side == "above" else math.ceil(new)
    low, high = _numeric(entry.get("low")), _numeric(entry.get("high"))
    if low is None or high is None or not low < new < high:
        return None  # already narrower than the split, or the edit would empty the range
    return new


def _collateral(study: _Study, name: str, condition: dict[str, Any], side: str, new: float) -> str:
    """A conditioned pattern edits a shared bound: say what else the edit excludes."""
    if not condition:
        return ""
    cut = [
        t
        for t, v in study.numeric_rows(name)
        if (v > new if side == "above" else v < new) and not study.matches(t, condition)
    ]
    if not cut:
        return ""
    fine = sum(not t.outcomes() for t in cut)
    (key,) = condition
    return f" (this also excludes {len(cut)} trials with another {key}, {fine} of them fine)"


# --------------------------------------------------------------------------- categoricals


def _choice_proposal(study: _Study, name: str) -> Proposal | None:
    """Remove the choices of ``name`` whose trials (nearly) all share one bad outcome."""
    choices = list(study.space[name].get("choices") or [])
    rows = [(t, v) for t in study.trials if (v := study.value(t, name)) is not None]
    outcomes = sorted({o for t, _ in rows for o in t.outcomes()})
    hits = []  # (choice, outcome, bad, total, p) with the lowest p per choice
    for choice in choices:
        stats = [(o, *s) for o in outcomes if (s := _choice_stats(rows, choice, o))]
        if stats:
            hits.append((choice, *min(stats, key=lambda s: s[3])))
    if not hits or len(hits) >= len(choices):
        return None  # nothing to remove, or nothing would be left
    removed = [h[0] for h in hits]
    bad_kinds = {h[1] for h in hits}
    kept = [t for t, v in rows if v not in removed]
    pattern = "; ".join(f"{c} {_VERBS.get(o, o)} in {b} of {n} trials" for c, o, b, n, _ in hits)
    return Proposal(
        parameter=name,
        outcome=hits[0][1],
        region="choice",
        choices=removed,
        bad=sum(h[2] for h in hits),
        total=sum(h[3] for h in hits),
        kept_bad=sum(bool(t.outcomes() & bad_kinds) for t in kept),
        kept_total=len(kept),
        p_value=max(h[4] for h in hits),
        pattern=pattern,
        edit=SpecEdit(
            path=f"space.{name}.choices", old=choices, new=[c for c in choices if c not in removed]
        ),
        message=f"{pattern}: remove {', '.join(map(str, removed))} from {name}",
    )


def _choice_stats(
    rows: list[tuple[TrialRecord, Any]], choice: Any, outcome: str
) -> tuple[int, int, float] | None:
    """(bad, total, p) when ``choice`` nearly always has ``outcome`` and other choices rarely."""
    inside = [outcome in t.outcomes() for t, v in rows if v == choice]
    outside = [outcome in t.outcomes() for t, v in rows if v != choice]
    bad, total, other_bad = sum(inside), len(inside), sum(outside)
    if bad < MIN_REGION_BAD or bad < CHOICE_BAD_RATE * total:
        return None
    if len(outside) < MIN_KEPT or other_bad > MAX_KEPT_RATE * len(outside):
        return None
    p = fisher_greater(bad, total, bad + other_bad, len(rows))
    return (bad, total, p) if p <= MAX_P_VALUE else None


# --------------------------------------------------------------------------- entry point


def diagnose_study(
    trials: Iterable[TrialRecord | Mapping[str, Any]], spec: Mapping[str, Any]
) -> list[Proposal]:
    """Proposed spec edits for a study, strongest first; [] for a healthy study.

    ``trials``: records or dicts (number, state, params, value, findings); only
    complete, pruned and failed trials count. ``spec``: the study spec as a dict
    (its ``space`` maps parameter names to {type, low, high, log, choices, when,
    setting}). One proposal per edited spec path: weaker patterns that the same
    edit also addresses are listed in its ``related``.
    """
    records = [t if isinstance(t, TrialRecord) else TrialRecord.model_validate(t) for t in trials]
    study = _Study(spec, records)
    found: list[Proposal] = []
    for name, entry in study.space.items():
        if entry.get("type") in ("float", "int"):
            found += _numeric_proposals(study, name)
        elif entry.get("type") == "categorical":
            found += [p for p in [_choice_proposal(study, name)] if p is not None]
    return _one_per_path(found)


def _one_per_path(proposals: list[Proposal]) -> list[Proposal]:
    kept: dict[str, Proposal] = {}
    for proposal in sorted(proposals, key=lambda p: (-p.bad, p.p_value, p.edit.path)):
        first = kept.get(proposal.edit.path)
        if first is None:
            kept[proposal.edit.path] = proposal
        else:
            first.related.append(proposal.message)
    return list(kept.values())
