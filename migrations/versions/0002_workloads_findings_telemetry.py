"""workers: workloads, resources, telemetry and pack; trials: findings and telemetry

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_workers") as batch:
        batch.add_column(sa.Column("workloads", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("telemetry", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pack", sa.JSON(), nullable=True))
        batch.create_index("ix_hpo_workers_name", ["name"])
    with op.batch_alter_table("hpo_trials") as batch:
        batch.add_column(sa.Column("findings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("telemetry", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.drop_column("telemetry")
        batch.drop_column("findings")
    with op.batch_alter_table("hpo_workers") as batch:
        batch.drop_index("ix_hpo_workers_name")
        batch.drop_column("pack")
        batch.drop_column("telemetry")
        batch.drop_column("resources")
        batch.drop_column("workloads")
