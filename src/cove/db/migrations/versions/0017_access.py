"""who may connect to an instance (Trove's access), and the port it is published on

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-21 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("allowed_cidrs", sa.Text(), nullable=True))
        batch.add_column(sa.Column("public_port", sa.Integer(), nullable=True))
        batch.create_index("ix_instances_public_port", ["public_port"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_public_port")
        batch.drop_column("public_port")
        batch.drop_column("allowed_cidrs")
        batch.drop_column("is_public")
