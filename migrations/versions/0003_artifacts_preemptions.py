"""artifacts (checkpoints, models, files) and preempted attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("artifact_id", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("hpo_studies.study_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("lease_id", sa.String(36), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("mimetype", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_hpo_artifacts_study_id", "hpo_artifacts", ["study_id"])
    op.create_index(
        "ix_hpo_artifacts_trial_kind", "hpo_artifacts", ["optuna_trial_id", "kind", "state"]
    )
    with op.batch_alter_table("hpo_trials") as batch:
        batch.add_column(sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.drop_column("preemptions")
    op.drop_index("ix_hpo_artifacts_trial_kind", table_name="hpo_artifacts")
    op.drop_index("ix_hpo_artifacts_study_id", table_name="hpo_artifacts")
    op.drop_table("hpo_artifacts")
