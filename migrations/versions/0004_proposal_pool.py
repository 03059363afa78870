"""proposal pool (hpo_proposals) and idempotent lease requests (hpo_lease_requests)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.storage.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_proposals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("hpo_studies.study_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True, unique=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("drawn_tells", sa.Integer(), nullable=False),
        sa.Column("sample_s", sa.Float(), nullable=True),
        sa.Column("lease_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ready_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_hpo_proposals_study_state", "hpo_proposals", ["study_id", "state", "id"])
    op.create_table(
        "hpo_lease_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_hpo_lease_requests_created_at", "hpo_lease_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_hpo_lease_requests_created_at", table_name="hpo_lease_requests")
    op.drop_table("hpo_lease_requests")
    op.drop_index("ix_hpo_proposals_study_state", table_name="hpo_proposals")
    op.drop_table("hpo_proposals")
