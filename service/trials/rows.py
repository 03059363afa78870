"""Shared pieces of the trial protocol: loading a lease with its trial and study,
the "is this lease still the trial's current one" rule, and the study handles.

States and transitions are :mod:`service.trials.states`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hpo.protocol import NoWork, NoWorkCode, TrialOutcome
from hpo.spec import BudgetSpec, StudySpec
from service.core.context import AppContext
from service.core.errors import LeaseExpired, LeaseNotFound, TrialFinished
from service.storage.models import LeaseRecord, StudyRecord, TrialRecord
from service.storage.optuna_store import CachedStudy
from service.studies.specs import stored_spec
from service.trials.states import StudyState, TrialState

#: Optuna state -> the state name of the wire contract.
FINAL_STATES = {
    optuna.trial.TrialState.COMPLETE: TrialOutcome.COMPLETE,
    optuna.trial.TrialState.PRUNED: TrialOutcome.PRUNED,
    optuna.trial.TrialState.FAIL: TrialOutcome.FAIL,
}


@dataclass
class LeaseView:
    """A lease with its trial row and study row, read in one unit of work."""

    lease: LeaseRecord
    trial: TrialRecord
    study: StudyRecord

    @property
    def label(self) -> str:
        return f"trial {self.trial.number} of study {self.study.name!r}"


def load_lease_without_commit(session: Session, lease_id: str) -> LeaseView:
    """The lease, its trial and its study; LeaseNotFound when there is no such lease."""
    row = session.execute(
        select(LeaseRecord, TrialRecord, StudyRecord)
        .join(TrialRecord, TrialRecord.id == LeaseRecord.trial_row_id)
        .join(StudyRecord, StudyRecord.study_id == TrialRecord.study_id)
        .where(LeaseRecord.lease_id == lease_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise LeaseNotFound(f"lease {lease_id!r} not found", "lease_id")
    return LeaseView(lease=row[0], trial=row[1], study=row[2])


def check_current(view: LeaseView) -> None:
    """Raise unless the lease is its trial's current one.

    A trial finished through another lease -> TrialFinished; re-leased to a
    newer attempt -> LeaseExpired (both 409).
    """
    lease, trial = view.lease, view.trial
    if trial.lease_id == lease.lease_id:
        return
    if trial.state == TrialState.FINISHED:
        raise TrialFinished(
            f"{view.label} already finished ({trial.final_state}) through another lease",
            "lease_id",
        )
    raise LeaseExpired(
        f"lease {lease.lease_id} (attempt {lease.attempt}) is no longer current: "
        f"{view.label} was leased again (attempt {trial.attempts})",
        "lease_id",
    )


def retries_used(trial: TrialRecord) -> int:
    """Re-runs of a trial that count against ``max_retries``: attempts after the first,
    less those a preempted worker handed back."""
    return max(0, trial.attempts - 1 - (trial.preemptions or 0))


def lock_study_without_commit(session: Session, study_id: int) -> StudyRecord | None:
    """Serialize leasing of one study: bump ``lease_seq`` first, then read the row.

    On PostgreSQL the UPDATE holds the study row lock until commit (across
    server processes); on SQLite it takes the database write lock.
    """
    result = session.execute(
        update(StudyRecord)
        .where(StudyRecord.study_id == study_id)
        .values(lease_seq=StudyRecord.lease_seq + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return None
    return session.scalars(
        select(StudyRecord)
        .where(StudyRecord.study_id == study_id)
        .execution_options(populate_existing=True)
    ).one()


def add_creating_row_without_commit(
    session: Session, study_id: int, worker_id: str, now: datetime
) -> TrialRecord:
    """A new CREATING trial row held by ``worker_id``, flushed so that it has its id."""
    row = TrialRecord(
        study_id=study_id,
        state=TrialState.CREATING,
        attempts=0,
        worker_id=worker_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def blocker(study: StudyRecord, total: int, active: int, queued: int) -> NoWork | None:
    """Why ``study`` cannot hand out a trial now (None: it can).

    ``total`` counts every trial row, ``active`` those holding a concurrency slot,
    ``queued`` those waiting for a re-run (a re-run needs no budget).
    """
    name = study.name
    if study.state != StudyState.RUNNING:
        code = NoWorkCode.PAUSED if study.state == StudyState.PAUSED else NoWorkCode.STOPPED
        return NoWork(code=code, study=name, message=f"study {name!r} is {study.state}")
    budget = study_budget(study)
    limit = budget.max_concurrent
    if limit is not None and active >= limit:
        message = f"study {name!r}: {active} trials running (max_concurrent {limit})"
        return NoWork(code=NoWorkCode.CONCURRENCY_FULL, study=name, message=message)
    if queued == 0 and total >= budget.max_trials:
        message = f"study {name!r}: budget used ({total}/{budget.max_trials} trials)"
        return NoWork(code=NoWorkCode.BUDGET_USED, study=name, message=message)
    return None


def study_spec(study: StudyRecord) -> StudySpec:
    return stored_spec(study.spec)


def study_budget(study: StudyRecord) -> BudgetSpec:
    """The budget alone (cheaper than validating the whole spec)."""
    return BudgetSpec.model_validate((study.spec or {}).get("budget") or {})


def cached_study(ctx: AppContext, study: StudyRecord) -> CachedStudy:
    """The app's cached Optuna study (loaded on first use)."""
    return ctx.store.get(study.study_id, study.name, study_spec(study), study.seed)


def stored_answer(lease: LeaseRecord) -> dict[str, Any] | None:
    """The answer stored by complete/fail, if the lease has one."""
    result = lease.result or {}
    answer = result.get("answer")
    return answer if isinstance(answer, dict) else None


def is_multi_objective(study: StudyRecord) -> bool:
    spec = study.spec or {}
    return len(spec.get("directions") or []) > 1


def naive_local(moment: datetime) -> datetime:
    """Optuna stores naive local times; convert an aware time for comparisons."""
    return moment.astimezone().replace(tzinfo=None)


def tell_optuna(
    cached: CachedStudy,
    number: int,
    state: optuna.trial.TrialState,
    values: list[float] | None = None,
) -> tuple[optuna.trial.TrialState, list[float] | None] | None:
    """``study.tell``, tolerant of a trial already finished; (state, values) stored,
    or None when Optuna refused (see :meth:`CachedStudy.tell`).

    The sampler lock is taken only for samplers whose ``after_trial`` keeps state
    (grid, NSGA-II, ...); random and TPE tell without it, so completes never queue
    behind sampling.
    """
    return cached.tell(number, state, values)
