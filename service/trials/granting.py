"""The last step of leasing: a trial row becomes ``leased`` and gets its lease row.

Two ways in, each one compare-and-set (:func:`service.trials.states.move_trial`):
a freshly sampled ``creating`` row (attempt 1), or a ``queued`` re-run (the same
Optuna trial and params, attempt + 1). The answer is the :class:`TrialSpec` the
worker runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from hpo.protocol import Checkpoint, TrialSpec
from hpo.spec import to_settings, trial_seed
from service import schedules
from service.artifacts.records import latest_checkpoint_without_commit
from service.core.context import AppContext
from service.fleet import registry
from service.storage.models import LeaseRecord, StudyRecord, TrialRecord
from service.trials.rows import study_spec
from service.trials.states import LeaseState, TrialState, move_trial


@dataclass(frozen=True)
class Sampled:
    """A ``creating`` row whose Optuna trial was sampled."""

    row_id: int
    optuna_id: int
    number: int
    params: dict[str, Any]


def _new_lease(
    ctx: AppContext, row_id: int, attempt: int, worker_id: str, now: datetime
) -> tuple[LeaseRecord, dict[str, Any]]:
    """A new lease on trial row ``row_id`` (not added yet) and the trial columns it sets."""
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=ctx.settings.lease_ttl_s)
    lease = LeaseRecord(lease_id=lease_id, trial_row_id=row_id, attempt=attempt, expires_at=expires)
    values = {
        "lease_id": lease_id,
        "worker_id": worker_id,
        "attempts": attempt,
        "lease_expires_at": expires,
    }
    return lease, values


def grant_sampled_without_commit(
    ctx: AppContext,
    session: Session,
    study: StudyRecord,
    sampled: Sampled,
    worker_id: str,
    now: datetime,
) -> TrialSpec | None:
    """``creating`` -> ``leased`` plus the lease row; None when the reaper took the row."""
    lease, values = _new_lease(ctx, sampled.row_id, 1, worker_id, now)
    values |= {
        "optuna_trial_id": sampled.optuna_id,
        "number": sampled.number,
        "params": sampled.params,
    }
    creating = [TrialState.CREATING]
    if not move_trial(
        session, sampled.row_id, creating, TrialState.LEASED, values, now, strict=False
    ):
        return None
    _add_lease_without_commit(session, study, lease, sampled.optuna_id, worker_id, now)
    resume = schedules.granted_resume(session, sampled.optuna_id, sampled.params)  # PBT
    spec = trial_spec(ctx, study, sampled.optuna_id, sampled.number, sampled.params, lease, resume)
    return schedules.with_pause(session, study, spec)


def grant_queued_without_commit(
    ctx: AppContext,
    session: Session,
    study: StudyRecord,
    trial: TrialRecord,
    worker_id: str,
    now: datetime,
) -> TrialSpec | None:
    """``queued`` -> ``leased`` (only if nobody took the row since it was read)."""
    lease, values = _new_lease(ctx, trial.id, trial.attempts + 1, worker_id, now)
    queued = [TrialState.QUEUED]
    moved = move_trial(
        session,
        trial.id,
        queued,
        TrialState.LEASED,
        values,
        now,
        lease_id=trial.lease_id,
        strict=False,
    )
    if not moved:
        return None
    _add_lease_without_commit(session, study, lease, trial.optuna_trial_id, worker_id, now)
    assert trial.optuna_trial_id is not None and trial.number is not None
    resume = latest_checkpoint_without_commit(
        session, trial.optuna_trial_id
    ) or schedules.requeued_resume(session, trial.optuna_trial_id)  # PBT: the parent's
    params = trial.params or {}
    spec = trial_spec(ctx, study, trial.optuna_trial_id, trial.number, params, lease, resume)
    return schedules.with_pause(session, study, spec)


def _add_lease_without_commit(
    session: Session,
    study: StudyRecord,
    lease: LeaseRecord,
    optuna_id: int | None,
    worker_id: str,
    now: datetime,
) -> None:
    """Store ``lease`` as the active lease of ``worker_id``, who now runs the trial."""
    lease.worker_id, lease.state, lease.created_at = worker_id, LeaseState.ACTIVE, now
    session.add(lease)
    registry.set_current_without_commit(session, worker_id, optuna_id, study.name, now)


def trial_spec(
    ctx: AppContext,
    study: StudyRecord,
    optuna_id: int,
    number: int,
    params: dict[str, Any],
    lease: LeaseRecord,
    resume: Checkpoint | None = None,
) -> TrialSpec:
    """What the worker needs to run this attempt (``resume``: its latest checkpoint)."""
    spec = study_spec(study)
    declared = spec.model_dump(mode="json")["space"] if spec.space else None
    return TrialSpec(
        lease_id=lease.lease_id,
        trial_id=optuna_id,
        trial_number=number,
        study_name=study.name,
        attempt=lease.attempt,
        workload=spec.workload,
        params=dict(params),
        settings={**spec.fixed, **to_settings(spec, params)},
        fixed=dict(spec.fixed),
        space=declared,
        objective=spec.objective_names[0],
        direction=spec.study_directions[0],
        objectives=spec.objective_names,
        directions=spec.study_directions,
        seed=trial_seed(study.seed, number),
        resume=resume,
        lease_expires_at=lease.expires_at,
        heartbeat_interval_s=ctx.settings.heartbeat_interval_s,
    )
