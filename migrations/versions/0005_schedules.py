"""schedules: PBT segments (hpo_schedule_segments) and ASHA rungs (hpo_schedule_rungs)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _study_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "study_id",
        sa.Integer(),
        sa.ForeignKey("hpo_studies.study_id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "hpo_schedule_segments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _study_fk(),
        sa.Column("member", sa.Integer(), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("start_step", sa.Integer(), nullable=False),
        sa.Column("end_step", sa.Integer(), nullable=False),
        sa.Column("parent_trial_id", sa.Integer(), nullable=True),
        sa.Column("resume_artifact_id", sa.String(64), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("changed", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True, unique=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "member", "segment", name="uq_hpo_segment"),
    )
    op.create_index("ix_hpo_segments_study_state", "hpo_schedule_segments", ["study_id", "state"])
    op.create_table(
        "hpo_schedule_rungs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _study_fk(),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("optuna_trial_id", "rung", name="uq_hpo_rung"),
    )
    op.create_index("ix_hpo_rungs_study_rung", "hpo_schedule_rungs", ["study_id", "rung"])


def downgrade() -> None:
    op.drop_index("ix_hpo_rungs_study_rung", table_name="hpo_schedule_rungs")
    op.drop_table("hpo_schedule_rungs")
    op.drop_index("ix_hpo_segments_study_state", table_name="hpo_schedule_segments")
    op.drop_table("hpo_schedule_segments")
