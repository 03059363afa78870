"""Tables of the schedules (migration 0005): PBT segments and ASHA rung results.

``hpo_schedule_segments``: one row per segment of a PBT member, inserted when
the server decides it (exploit/explore) under the study lock; the unique
``(study_id, member, segment)`` makes a second decision for the same member and
segment fail, so a population never doubles, and every member always has its
next row, so it never shrinks. ``hpo_schedule_rungs``: one row per trial and
rung it reached in a promotion-ASHA study, with the value there and whether it
was promoted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.storage.models import Base, UTCDateTime


class SegmentRecord(Base):
    """One segment of a PBT member: an Optuna trial with fixed params.

    state: ``pending`` (decided; its Optuna trial waits, or is being created),
    ``leased`` (a worker trains it), ``done`` (it ended; the next one is decided).
    """

    __tablename__ = "hpo_schedule_segments"
    __table_args__ = (
        UniqueConstraint("study_id", "member", "segment", name="uq_hpo_segment"),
        Index("ix_hpo_segments_study_state", "study_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.study_id", ondelete="CASCADE"))
    member: Mapped[int] = mapped_column(Integer)
    segment: Mapped[int] = mapped_column(Integer)
    start_step: Mapped[int] = mapped_column(Integer)
    end_step: Mapped[int] = mapped_column(Integer)
    #: the Optuna trial whose checkpoint it starts from (None: a fresh start)
    parent_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: that checkpoint (hpo_artifacts.artifact_id)
    resume_artifact_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: fixed params (None: the first segment, sampled by the study's sampler)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: what explore changed: {param: [old, new]}; exploit: the member it copied
    changed: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RungRecord(Base):
    """A trial of a promotion-ASHA study that reached a rung."""

    __tablename__ = "hpo_schedule_rungs"
    __table_args__ = (
        UniqueConstraint("optuna_trial_id", "rung", name="uq_hpo_rung"),
        Index("ix_hpo_rungs_study_rung", "study_id", "rung"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.study_id", ondelete="CASCADE"))
    optuna_trial_id: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
