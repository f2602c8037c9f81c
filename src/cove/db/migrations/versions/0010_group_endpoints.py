"""replication groups' stable endpoints: a read-write and a read-only address each

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replication_groups") as batch:
        batch.add_column(sa.Column("rw_address", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("ro_address", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replication_groups") as batch:
        batch.drop_column("ro_address")
        batch.drop_column("rw_address")
