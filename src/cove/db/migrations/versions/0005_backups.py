"""backups

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("datastore_version_id", sa.String(length=36), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("store", sa.Text(), nullable=False),
        sa.Column("artifact", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("fault_message", sa.Text(), nullable=True),
        sa.Column("task_owner", sa.String(length=64), nullable=True),
        sa.Column("task_lease_until", TIMESTAMP, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("updated", TIMESTAMP, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["datastore_version_id"], ["datastore_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_backups_project_page", "backups", ["project_id", "deleted", "updated", "id"]
    )
    op.create_index("ix_backups_instance", "backups", ["instance_id", "deleted"])
    op.create_index("ix_backups_parent_id", "backups", ["parent_id"])
    op.create_index("ix_backups_deleted", "backups", ["deleted"])


def downgrade() -> None:
    op.drop_table("backups")
