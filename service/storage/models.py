"""The service's own tables (prefix ``hpo_``), next to Optuna's in one database.

Optuna's RDB storage owns studies, trials, params and intermediate values.
These tables add what Optuna has no place for: the study spec and its run
state, the lease bookkeeping of every trial attempt, the worker registry,
hashed API tokens and per-epoch training metrics. They are created only by
the Alembic migrations in ``migrations/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hpo.schemas import StudyState


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns timezone-aware datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class StudyRecord(Base):
    """A study's spec and run state. ``study_id`` is Optuna's study id."""

    __tablename__ = "hpo_studies"

    study_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RUNNING)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by every lease transaction: the UPDATE takes the row lock
    # (PostgreSQL) or the write lock (SQLite) that serializes leasing.
    lease_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TrialRecord(Base):
    """Lease bookkeeping of one Optuna trial across all its attempts.

    state: ``creating`` (slot reserved, Optuna trial being sampled), ``leased``,
    ``queued`` (waiting for a re-run after an expired/abandoned lease) or
    ``finished``.
    """

    __tablename__ = "hpo_trials"
    __table_args__ = (
        Index("ix_hpo_trials_study_state", "study_id", "state"),
        Index("ix_hpo_trials_expiry", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.study_id", ondelete="CASCADE"), index=True
    )
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    final_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    fail_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    diagnosis: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: what the diagnosis found in the trial's curves (hpo.findings.Finding as JSON)
    findings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    #: device utilisation and memory while it ran (mean/peak; samples/s; data wait share)
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: attempts handed back by a preempted worker (not counted against max_retries)
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseRecord(Base):
    """One attempt at a trial. ``result`` holds the answer given to complete/fail,
    so that a retried request gets the same answer (idempotency)."""

    __tablename__ = "hpo_leases"

    lease_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    trial_row_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_trials.id", ondelete="CASCADE"), index=True
    )
    worker_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    # active|finishing|completed|failed|expired|abandoned
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ArtifactRecord(Base):
    """A file the service stored for a trial (or study) in the artifact store.

    Optuna's metadata (system attribute ``artifacts:<id>``) is written too; this row
    adds what Optuna has no place for: kind, step, size, hash and the commit. A row
    exists only for an upload that arrived whole with a matching hash, so a cut-off
    upload never becomes a trial's latest checkpoint. ``state``: committed | bad
    (a worker could not read it) | deleted (retention or an admin removed the file).
    """

    __tablename__ = "hpo_artifacts"
    __table_args__ = (Index("ix_hpo_artifacts_trial_kind", "optuna_trial_id", "kind", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    artifact_id: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.study_id", ondelete="CASCADE"), index=True
    )
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    filename: Mapped[str] = mapped_column(String(255))
    mimetype: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerRecord(Base):
    """A registered worker process (one per GPU)."""

    __tablename__ = "hpo_workers"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    devices: Mapped[list[str]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(64), default="")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    current_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    current_study: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: workload names it runs and the resources it has (None: the built-in trainer, no GPU)
    workloads: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: latest device utilisation and memory sample, sent with heartbeats
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: the fused pack it trains (size and member trials), when it runs one
    pack: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class TokenRecord(Base):
    """An API token; only its SHA-256 hash is stored."""

    __tablename__ = "hpo_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin|worker|viewer
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TrialMetric(Base):
    """Per-step metrics reported by a worker (train loss, val acc, lr, ...)."""

    __tablename__ = "hpo_trial_metrics"
    __table_args__ = (UniqueConstraint("optuna_trial_id", "step", name="uq_hpo_metric_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.study_id", ondelete="CASCADE"), index=True
    )
    optuna_trial_id: Mapped[int] = mapped_column(Integer, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
