"""Trial and lease states, the transitions allowed between them, and the one
compare-and-set that moves a row from one state to another.

A trial row (``hpo_trials``) follows one Optuna trial across all its attempts;
a lease row (``hpo_leases``) is one attempt::

    trial:  creating --sampled--> leased <--expired/abandoned, re-leased--> queued
               |                    |                                        |
               +--sampling failed---+------completed/failed/given up---------+--> finished

    lease:  active --extend--> active --claim--> finishing --> completed | failed
              |                                                   ^
              +--no heartbeat--> expired --claim------------------+
              |                    +--heartbeat (not re-leased yet)--> active
              +--abandon--> abandoned <--abandon-- expired

Every change of state is a compare-and-set: ``UPDATE ... WHERE state IN
(:expected)`` with the rowcount checked, so two servers (or a request and the
reaper) racing on one row never both win; the loser looks again (:class:`Changed`).
The tables below are the only place the allowed transitions are written down;
:func:`move_trial` and :func:`move_lease` refuse any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from hpo.schemas import StudyState
from service.storage.models import LeaseRecord, TrialRecord


class TrialState(StrEnum):
    """Lease bookkeeping state of a trial row (Optuna keeps the trial's own state)."""

    CREATING = "creating"  # slot reserved, the Optuna trial is being sampled
    LEASED = "leased"  # a worker holds its current lease
    QUEUED = "queued"  # waiting for a re-run after an expired or abandoned lease
    PAUSED = "paused"  # handed back at a rung (promotion ASHA): queued when promoted
    FINISHED = "finished"  # told to Optuna (complete, pruned or fail)


class LeaseState(StrEnum):
    """State of one attempt."""

    ACTIVE = "active"
    EXPIRED = "expired"  # no heartbeat in time; may still finish until its trial is re-leased
    FINISHING = "finishing"  # complete/fail claimed it; Optuna is being told
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"  # given back (worker shutting down) or expired for good


#: Trial rows that occupy a concurrency slot.
ACTIVE_TRIAL_STATES = (TrialState.CREATING, TrialState.LEASED)
#: Lease states whose answer is stored in ``hpo_leases.result``.
DONE_LEASE_STATES = (LeaseState.COMPLETED, LeaseState.FAILED, LeaseState.ABANDONED)

T, L = TrialState, LeaseState
TRIAL_TRANSITIONS: dict[TrialState, frozenset[TrialState]] = {
    T.CREATING: frozenset({T.LEASED, T.FINISHED}),
    T.LEASED: frozenset({T.LEASED, T.QUEUED, T.PAUSED, T.FINISHED}),
    T.QUEUED: frozenset({T.LEASED, T.QUEUED, T.PAUSED, T.FINISHED}),
    T.PAUSED: frozenset({T.QUEUED, T.FINISHED}),
    T.FINISHED: frozenset(),
}
LEASE_TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    L.ACTIVE: frozenset({L.ACTIVE, L.EXPIRED, L.FINISHING, L.ABANDONED}),
    L.EXPIRED: frozenset({L.ACTIVE, L.FINISHING, L.ABANDONED}),
    L.FINISHING: frozenset({L.COMPLETED, L.FAILED, L.ABANDONED}),
    L.COMPLETED: frozenset(),
    L.FAILED: frozenset(),
    L.ABANDONED: frozenset(),
}
STUDY_TRANSITIONS: dict[str, dict[StudyState, StudyState]] = {
    "pause": {StudyState.RUNNING: StudyState.PAUSED, StudyState.PAUSED: StudyState.PAUSED},
    "resume": {StudyState.PAUSED: StudyState.RUNNING, StudyState.RUNNING: StudyState.RUNNING},
    "stop": {s: StudyState.STOPPED for s in StudyState},
}


#: ``move_trial(lease_id=ANY_LEASE)``: do not check the row's lease.
ANY_LEASE: Any = object()


class Changed(Exception):
    """A compare-and-set lost a race (the row is not in an expected state): look again."""


class IllegalTransition(RuntimeError):
    """A programming error: a transition that the tables above do not allow."""


def _check(
    table: dict[Any, frozenset[Any]], frm: Iterable[StrEnum], to: StrEnum, what: str
) -> tuple[Any, ...]:
    states = tuple(frm)
    for state in states:
        if to not in table[state]:
            raise IllegalTransition(f"{what} {state} -> {to} is not an allowed transition")
    return states


def move_trial(
    session: Session,
    row_id: int,
    frm: Iterable[TrialState],
    to: TrialState,
    values: dict[str, Any],
    now: datetime,
    *,
    lease_id: str | None = ANY_LEASE,
    strict: bool = True,
) -> bool:
    """Compare-and-set a trial row from one of ``frm`` to ``to`` (plus ``values``).

    ``lease_id`` (when given, None included) must also still be the row's lease.
    Returns whether the row moved; with ``strict`` a lost race raises :class:`Changed`.
    """
    states = _check(TRIAL_TRANSITIONS, frm, to, "trial")
    where = [TrialRecord.id == row_id, TrialRecord.state.in_(states)]
    if lease_id is not ANY_LEASE:
        where.append(
            TrialRecord.lease_id.is_(None) if lease_id is None else TrialRecord.lease_id == lease_id
        )
    stmt = update(TrialRecord).where(*where).values(**values, state=to, updated_at=now)
    return _applied(session, stmt, strict)


def move_lease(
    session: Session,
    lease_id: str,
    frm: Iterable[LeaseState],
    to: LeaseState,
    values: dict[str, Any],
    *,
    expired_before: datetime | None = None,
    strict: bool = True,
) -> bool:
    """Compare-and-set a lease row from one of ``frm`` to ``to`` (plus ``values``).

    ``expired_before``: move only if the lease's expiry is earlier (the reaper).
    Returns whether the row moved; with ``strict`` a lost race raises :class:`Changed`.
    """
    states = _check(LEASE_TRANSITIONS, frm, to, "lease")
    where = [LeaseRecord.lease_id == lease_id, LeaseRecord.state.in_(states)]
    if expired_before is not None:
        where.append(LeaseRecord.expires_at < expired_before)
    stmt = update(LeaseRecord).where(*where).values(**values, state=to)
    return _applied(session, stmt, strict)


def _applied(session: Session, stmt: Any, strict: bool) -> bool:
    done = session.execute(stmt.execution_options(synchronize_session=False))
    moved = done.rowcount == 1  # type: ignore[attr-defined]
    if strict and not moved:
        raise Changed
    return moved
