"""Worker registry: who is out there, when they were last seen, what they run.

A worker process (one per GPU) registers once and gets a ``worker_id``; every
lease, heartbeat and report touches ``last_seen_at``. A worker not seen for
``settings.worker_timeout_s`` is listed with ``alive = False``.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hpo.protocol import API_PREFIX, Resources, WorkerInfo, WorkerRegistration
from hpo.settings import REFERENCE_WORKLOAD
from service.core.config import TOUCH_EVERY_S
from service.core.db import utcnow
from service.core.errors import WorkerNotFound
from service.storage.models import WorkerRecord


def register_without_commit(
    session: Session, registration: WorkerRegistration, timeout_s: float
) -> WorkerRecord:
    """Record a new worker; returns its row (with a fresh ``worker_id``).

    A restarted worker registers again under the same name: the rows of earlier
    processes with that name that are gone (not seen for ``timeout_s``, running
    nothing) are removed, so the registry does not grow by a row per restart.
    """
    now = utcnow()
    if registration.name:
        forget_gone_without_commit(session, now - timedelta(seconds=timeout_s), registration.name)
    record = WorkerRecord(
        worker_id=str(uuid.uuid4()),
        hostname=registration.hostname,
        name=registration.name,
        devices=list(registration.devices),
        version=registration.version,
        registered_at=now,
        last_seen_at=now,
        workloads=list(registration.workloads),
        resources=registration.resources.model_dump(),
    )
    session.add(record)
    session.flush()
    return record


def forget_gone_without_commit(
    session: Session, seen_before: datetime, name: str | None = None
) -> int:
    """Delete workers last seen before ``seen_before`` that run no trial (optionally one name)."""
    stmt = delete(WorkerRecord).where(
        WorkerRecord.last_seen_at < seen_before, WorkerRecord.current_trial_id.is_(None)
    )
    if name is not None:
        stmt = stmt.where(WorkerRecord.name == name)
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def capabilities(record: WorkerRecord) -> tuple[list[str], Resources]:
    """The workloads a worker runs and the resources it has (old rows: the built-in trainer)."""
    workloads = list(record.workloads or [REFERENCE_WORKLOAD])
    return workloads, Resources.model_validate(record.resources or {})


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


class TouchThrottle:
    """When this process last wrote each worker's ``last_seen_at`` (one per app context).

    Heartbeat and report refresh it at most every ``TOUCH_EVERY_S`` per worker.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, every_s: float = TOUCH_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, worker_id: str) -> bool:
        """True (and noted) when ``worker_id``'s row should be written now."""
        clock = time.monotonic()
        with self._lock:
            last = self._last.get(worker_id)
            if last is not None and clock - last < self.every_s:
                return False
            if len(self._last) > self.MAX_ENTRIES:  # bounded: drop entries that are due anyway
                for key in [k for k, v in self._last.items() if clock - v >= self.every_s]:
                    del self._last[key]
            self._last[worker_id] = clock
            return True


def touch_without_commit(
    session: Session,
    worker_id: str,
    now: datetime,
    *,
    must_exist: bool = False,
    throttle: TouchThrottle | None = None,
    telemetry: dict[str, float] | None = None,
) -> bool:
    """Update ``last_seen_at``; with ``must_exist`` an unknown worker raises WorkerNotFound.

    With ``throttle`` (heartbeat, report: the worker is known to exist) the update
    is skipped when this process wrote it less than ``throttle.every_s`` ago: liveness
    is judged over ``worker_timeout_s`` (minutes), not per request.
    """
    if throttle is not None and not throttle.due(worker_id):
        return True
    values: dict[str, object] = {"last_seen_at": now}
    if telemetry:  # the device's latest utilisation and memory (the workers page, /metrics)
        values["telemetry"] = {**telemetry, "at": now.isoformat()}
    result = session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.worker_id == worker_id)
        .values(**values)
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
        workloads=capabilities(record)[0],
        resources=capabilities(record)[1],
    )


def _not_found(worker_id: str) -> str:
    return (
        f"worker {worker_id!r} is not registered "
        f"(POST {API_PREFIX}/workers/register first; the server may have been reset)"
    )
