"""replication groups, their failovers, and each instance's promotion weight

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: Microseconds on MariaDB too: leases last a second and a half.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "replication_groups",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("primary_id", sa.String(length=36), nullable=False, unique=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("synchronous", sa.Boolean(), nullable=False),
        sa.Column("auto_failover", sa.Boolean(), nullable=False),
        sa.Column("max_lag_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("updated", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "failovers",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("group_id", sa.String(length=36), nullable=False, index=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("old_primary_id", sa.String(length=36), nullable=False, index=True),
        sa.Column("new_primary_id", sa.String(length=36), nullable=True),
        sa.Column("old_position", sa.BigInteger(), nullable=True),
        sa.Column("new_position", sa.BigInteger(), nullable=True),
        sa.Column("lost_bytes", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("promoted_at", TIMESTAMP, nullable=True),
        sa.Column("rejoined_at", TIMESTAMP, nullable=True),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("replication_weight", sa.Integer(), nullable=False, server_default="100")
        )


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("replication_weight")
    op.drop_table("failovers")
    op.drop_table("replication_groups")
