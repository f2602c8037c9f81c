"""replicas: an instance may be a read-only replica of another

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("replica_of_id", sa.String(length=36), nullable=True))
        batch.create_index("ix_instances_replica_of_id", ["replica_of_id"])


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_replica_of_id")
        batch.drop_column("replica_of_id")
