"""initial hpo tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import service.storage.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _utc(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    """A timestamp column of this revision: UTC, with time zone (required by default)."""
    return sa.Column(name, service.storage.models.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "hpo_studies",
        sa.Column("study_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("lease_seq", sa.BigInteger(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.PrimaryKeyConstraint("study_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "hpo_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _utc("created_at"),
        _utc("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "hpo_workers",
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        _utc("registered_at"),
        _utc("last_seen_at"),
        sa.Column("current_trial_id", sa.Integer(), nullable=True),
        sa.Column("current_study", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    op.create_table(
        "hpo_trial_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _utc("created_at"),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("optuna_trial_id", "step", name="uq_hpo_metric_step"),
    )
    with op.batch_alter_table("hpo_trial_metrics", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hpo_trial_metrics_optuna_trial_id"), ["optuna_trial_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hpo_trial_metrics_study_id"), ["study_id"], unique=False
        )

    op.create_table(
        "hpo_trials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        _utc("lease_expires_at", nullable=True),
        sa.Column("final_state", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("diagnosis", sa.String(length=200), nullable=True),
        sa.Column("last_step", sa.Integer(), nullable=True),
        _utc("created_at"),
        _utc("updated_at"),
        _utc("finished_at", nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["hpo_studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("optuna_trial_id"),
    )
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.create_index("ix_hpo_trials_expiry", ["state", "lease_expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_hpo_trials_study_id"), ["study_id"], unique=False)
        batch_op.create_index("ix_hpo_trials_study_state", ["study_id", "state"], unique=False)

    op.create_table(
        "hpo_leases",
        sa.Column("lease_id", sa.String(length=36), nullable=False),
        sa.Column("trial_row_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _utc("created_at"),
        _utc("expires_at"),
        _utc("ended_at", nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["trial_row_id"], ["hpo_trials.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("lease_id"),
    )
    with op.batch_alter_table("hpo_leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hpo_leases_trial_row_id"), ["trial_row_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hpo_leases_worker_id"), ["worker_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hpo_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_leases_worker_id"))
        batch_op.drop_index(batch_op.f("ix_hpo_leases_trial_row_id"))

    op.drop_table("hpo_leases")
    with op.batch_alter_table("hpo_trials", schema=None) as batch_op:
        batch_op.drop_index("ix_hpo_trials_study_state")
        batch_op.drop_index(batch_op.f("ix_hpo_trials_study_id"))
        batch_op.drop_index("ix_hpo_trials_expiry")

    op.drop_table("hpo_trials")
    with op.batch_alter_table("hpo_trial_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hpo_trial_metrics_study_id"))
        batch_op.drop_index(batch_op.f("ix_hpo_trial_metrics_optuna_trial_id"))

    op.drop_table("hpo_trial_metrics")
    op.drop_table("hpo_workers")
    op.drop_table("hpo_tokens")
    op.drop_table("hpo_studies")
