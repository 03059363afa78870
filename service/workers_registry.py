"""Worker registry: who is out there, when they were last seen, what they run.

A worker process (one per GPU) registers once and gets a ``worker_id``; every
lease, heartbeat and report touches ``last_seen_at``. A worker not seen for
``settings.worker_timeout_s`` is listed with ``alive = False``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import utcnow
from service.errors import WorkerNotFound
from service.models import WorkerRecord
from workers.protocol import WorkerInfo, WorkerRegistration


def register_without_commit(session: Session, registration: WorkerRegistration) -> WorkerRecord:
    """Record a new worker; returns its row (with a fresh ``worker_id``)."""
    now = utcnow()
    record = WorkerRecord(
        worker_id=str(uuid.uuid4()),
        hostname=registration.hostname,
        name=registration.name,
        devices=list(registration.devices),
        version=registration.version,
        registered_at=now,
        last_seen_at=now,
    )
    session.add(record)
    session.flush()
    return record


def get_worker_without_commit(session: Session, worker_id: str) -> WorkerRecord:
    record = session.get(WorkerRecord, worker_id)
    if record is None:
        raise WorkerNotFound(_not_found(worker_id), "worker_id")
    return record


def list_workers(session: Session) -> list[WorkerRecord]:
    return list(
        session.scalars(
            select(WorkerRecord).order_by(WorkerRecord.last_seen_at.desc(), WorkerRecord.worker_id)
        )
    )


def touch_without_commit(
    session: Session, worker_id: str, now: datetime, *, must_exist: bool = False
) -> bool:
    """Update ``last_seen_at``; with ``must_exist`` an unknown worker raises WorkerNotFound."""
    result = session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.worker_id == worker_id)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    found = result.rowcount == 1  # type: ignore[attr-defined]
    if must_exist and not found:
        raise WorkerNotFound(_not_found(worker_id), "worker_id")
    return found


def set_current_without_commit(
    session: Session, worker_id: str, trial_id: int | None, study: str | None, now: datetime
) -> None:
    """The worker started ``trial_id`` (Optuna trial id) of ``study``."""
    session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.worker_id == worker_id)
        .values(current_trial_id=trial_id, current_study=study, last_seen_at=now)
        .execution_options(synchronize_session=False)
    )


def clear_current_without_commit(session: Session, worker_id: str, trial_id: int | None) -> None:
    """The worker no longer runs ``trial_id`` (unless it moved on to another trial)."""
    session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.worker_id == worker_id, WorkerRecord.current_trial_id == trial_id)
        .values(current_trial_id=None, current_study=None)
        .execution_options(synchronize_session=False)
    )


def to_info(record: WorkerRecord, timeout_s: float, now: datetime | None = None) -> WorkerInfo:
    """The wire view of a worker; ``alive`` = seen within ``timeout_s``."""
    now = now or utcnow()
    return WorkerInfo(
        worker_id=record.worker_id,
        hostname=record.hostname,
        name=record.name,
        devices=list(record.devices or []),
        version=record.version or "",
        registered_at=record.registered_at,
        last_seen_at=record.last_seen_at,
        current_trial_id=record.current_trial_id,
        current_study=record.current_study,
        alive=record.last_seen_at >= now - timedelta(seconds=timeout_s),
    )


def _not_found(worker_id: str) -> str:
    return (
        f"worker {worker_id!r} is not registered "
        "(POST /api/v1/workers/register first; the server may have been reset)"
    )
