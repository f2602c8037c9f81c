"""backup schedules

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("cron", sa.String(length=255), nullable=False),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("keep_count", sa.Integer(), nullable=True),
        sa.Column("keep_days", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run", TIMESTAMP, nullable=False),
        sa.Column("last_run", TIMESTAMP, nullable=True),
        sa.Column("last_backup_id", sa.String(length=36), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pruned_for", sa.String(length=36), nullable=True),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("updated", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_backup_schedules_project", "backup_schedules", ["project_id", "instance_id"]
    )
    op.create_index("ix_backup_schedules_due", "backup_schedules", ["enabled", "next_run"])
    op.create_table(
        "backup_schedule_runs",
        sa.Column("backup_id", sa.String(length=36), nullable=False),
        sa.Column("schedule_id", sa.String(length=36), nullable=False),
        sa.Column("run_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("backup_id"),
    )
    op.create_index("ix_backup_schedule_runs_schedule_id", "backup_schedule_runs", ["schedule_id"])


def downgrade() -> None:
    op.drop_table("backup_schedule_runs")
    op.drop_table("backup_schedules")
