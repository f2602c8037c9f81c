"""each instance's recent notification events

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 22:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "instance_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_instance_events_instance", "instance_events", ["instance_id", "created"])


def downgrade() -> None:
    op.drop_index("ix_instance_events_instance", "instance_events")
    op.drop_table("instance_events")
