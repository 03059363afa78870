"""Summaries for the studies page and the study header (the workers page: ``workers_view``).

Built on the API's read side: trials per state and the best trial come from
:mod:`service.studies.records` (the ``hpo.schemas`` models of
``GET /api/v1/studies/{study}``), the diagnosis from
:mod:`service.studies.diagnosis` (``GET /api/v1/studies/{study}/diagnosis``). Only
what the API does not show is added here: studies created outside the service,
best settings, workers per study.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from hpo.schemas import TrialCounts
from service.dashboard import queries
from service.dashboard.frame import StudyMeta, meta_from_row
from service.storage.models import StudyRecord
from service.studies.diagnosis import study_diagnosis
from service.studies.records import best_trial, trial_counts
from service.studies.status import Fleet, live_fleet, study_status


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def header(session: Session, meta: StudyMeta, counts: TrialCounts | None = None) -> dict[str, Any]:
    """A study's trials per state (``TrialCounts``) and best trial (number, value, settings)."""
    if counts is None:
        counts = trial_counts(session, [meta.study_id])[meta.study_id]
    best = best_trial(session, meta.study_id, meta.direction)
    return {
        "counts": counts.model_dump(),
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": _finite(best.value),
            "settings": meta.settings(best.params),
        },
    }


def label(meta: StudyMeta, counts: dict[str, Any], fleet: Fleet) -> dict[str, Any]:
    """The study's label as the API's summary has it (``status``, ``waiting_on``,
    ``waiting_reason``): :func:`service.studies.status.study_status` over ``counts``."""
    shown = study_status(meta.run_state, TrialCounts(**counts), meta.spec, fleet)
    return {
        "status": shown.status.value,
        "waiting_on": shown.waiting_on,
        "waiting_reason": shown.reason,
    }


def summary(
    meta: StudyMeta, head: dict[str, Any], workers: list[str], fleet: Fleet
) -> dict[str, Any]:
    """A study's row on the studies page (and the study page's header): ``head`` is
    :func:`header`'s answer, ``workers`` those holding a lease on it."""
    return {
        "study_id": meta.study_id,
        "name": meta.name,
        "run_state": meta.run_state or "external",
        "direction": meta.direction,
        "objective": meta.objective_name,
        "sampler": meta.sampler,
        "pruner": meta.pruner,
        **head,
        "workers": workers,
        **label(meta, head["counts"], fleet),
    }


def studies(session: Session, worker_timeout_s: float) -> list[dict[str, Any]]:
    """Every Optuna study: label, run state, sampler, header and the workers on it."""
    metas = [meta_from_row(row) for row in queries.optuna_studies(session)]
    counts = trial_counts(session, [meta.study_id for meta in metas])
    workers = queries.active_workers(session)
    fleet = live_fleet(session, worker_timeout_s)
    return [
        summary(
            meta,
            header(session, meta, counts[meta.study_id]),
            workers.get(meta.study_id, []),
            fleet,
        )
        for meta in metas
    ]


def diagnosis(session: Session, meta: StudyMeta) -> dict[str, Any]:
    """The study's diagnosis as the API answers it (``StudyDiagnosis``: findings per
    kind, proposals with their spec edits); ``external`` for studies created outside
    the service, which have no trial records to diagnose."""
    record = session.get(StudyRecord, meta.study_id)
    if record is None:
        return {"study": meta.name, "trials": 0, "findings": {}, "proposals": [], "external": True}
    return study_diagnosis(session, record).model_dump(mode="json") | {"external": False}
