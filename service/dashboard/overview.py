"""Summaries for the studies page, the study header and the workers page.

Built on the API's read side: trials per state and the best trial come from
:mod:`service.studies.records` (the ``hpo.schemas`` models of
``GET /api/v1/studies/{study}``), workers and their ``alive`` rule from
:mod:`service.fleet.registry` (the answer of ``GET /api/v1/workers``). Only
what the API does not show is added here: studies created outside the service,
best settings, workers per study, recent throughput and memory.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from hpo.protocol import WorkerInfo
from hpo.schemas import TrialCounts
from service.core.db import utcnow
from service.dashboard import queries
from service.dashboard.frame import StudyMeta, meta_from_row
from service.fleet.registry import list_workers, to_info
from service.studies.records import best_trial, trial_counts


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def header(session: Session, meta: StudyMeta, counts: TrialCounts | None = None) -> dict[str, Any]:
    """A study's trials per state (``TrialCounts``) and best trial (number, value, settings)."""
    if counts is None:
        counts = trial_counts(session, [meta.study_id])[meta.study_id]
    best = best_trial(session, meta.study_id, meta.direction)
    return {
        "counts": counts.model_dump(),
        "best": None if best is None else {
            "number": best.number, "value": _finite(best.value),
            "settings": meta.settings(best.params),
        },
    }  # fmt: skip


def summary(meta: StudyMeta, head: dict[str, Any], workers: list[str]) -> dict[str, Any]:
    """A study's row on the studies page (and the study page's header): ``head`` is
    :func:`header`'s answer, ``workers`` those holding a lease on it."""
    return {
        "study_id": meta.study_id, "name": meta.name, "run_state": meta.run_state or "external",
        "direction": meta.direction, "objective": meta.objective_name,
        "sampler": meta.sampler, "pruner": meta.pruner, **head, "workers": workers,
    }  # fmt: skip


def studies(session: Session) -> list[dict[str, Any]]:
    """Every Optuna study: run state, sampler, header and the workers on it."""
    metas = [meta_from_row(row) for row in queries.optuna_studies(session)]
    counts = trial_counts(session, [meta.study_id for meta in metas])
    workers = queries.active_workers(session)
    return [
        summary(meta, header(session, meta, counts[meta.study_id]),
                workers.get(meta.study_id, []))
        for meta in metas
    ]  # fmt: skip


def workers(session: Session, timeout_s: float) -> list[dict[str, Any]]:
    """Each worker as the registry shows it, plus its current trial, recent throughput
    and peak memory (over its last few trials)."""
    now = utcnow()
    records = list_workers(session)
    leased = queries.leased_trials(session)
    recent = queries.recent_worker_metrics(session)
    current = {w.worker_id: w.current_trial_id or leased.get(w.worker_id) for w in records}
    places = queries.trial_places(session, [t for t in current.values() if t is not None])
    return [
        _worker(to_info(w, timeout_s, now), places.get(current[w.worker_id] or -1),
                recent.get(w.worker_id, []))
        for w in records
    ]  # fmt: skip


def _worker(
    info: WorkerInfo, place: tuple[int, int, str] | None, recent: list[tuple[int, dict[str, Any]]]
) -> dict[str, Any]:
    metrics = [m for _, m in recent]
    speeds = [float(m["samples_per_s"]) for m in metrics if _num(m.get("samples_per_s"))]
    memory = [float(m["peak_memory_mb"]) for m in metrics if _num(m.get("peak_memory_mb"))]
    return info.model_dump(mode="json") | {
        "trial": None if place is None else {
            "study_id": place[0], "number": place[1], "study": place[2],
        },
        "recent_trials": len({t for t, _ in recent}),
        "samples_per_s": sum(speeds) / len(speeds) if speeds else None,
        "peak_memory_mb": max(memory) if memory else None,
    }  # fmt: skip


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
