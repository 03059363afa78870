"""Tables of the proposal pool and of idempotent lease requests (migration 0004).

``hpo_proposals``: proposals drawn ahead of leases, one row per pre-sampled
Optuna trial (RUNNING in Optuna, so the sampler's constant liar counts it), taken
by a lease in one compare-and-set. ``hpo_lease_requests``: the answer given to a
lease request carrying a client request id, so that a retry gets the same trials.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.storage.models import Base, UTCDateTime


class ProposalRecord(Base):
    """One proposal of a study's pool.

    state: ``drawing`` (slot reserved, being sampled), ``ready`` (may be leased),
    ``taken`` (leased; ``lease_id`` says by which lease) or ``stale`` (more than the
    allowed tells since it was drawn: its Optuna trial is failed and the row dropped).
    """

    __tablename__ = "hpo_proposals"
    __table_args__ = (Index("ix_hpo_proposals_study_state", "study_id", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.study_id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: finished trials of the study when this proposal was drawn (staleness is counted
    #: in tells since then)
    drawn_tells: Mapped[int] = mapped_column(Integer)
    #: seconds the sampler took for this proposal
    sample_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseRequestRecord(Base):
    """A lease request with a client request id and the answer it got (null while the
    first attempt is still being answered)."""

    __tablename__ = "hpo_lease_requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
