"""task leases, sealed task arguments, pending settings pushes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 07:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("task_lease_until", TIMESTAMP, nullable=True))
        batch_op.add_column(sa.Column("task_args", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("settings_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("settings_pending")
        batch_op.drop_column("task_args")
        batch_op.drop_column("task_lease_until")
        batch_op.drop_column("task_owner")
