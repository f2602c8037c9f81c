"""the primary's last position, as its lease renewals report it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-15 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replication_groups") as batch:
        batch.add_column(sa.Column("primary_position", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replication_groups") as batch:
        batch.drop_column("primary_position")
