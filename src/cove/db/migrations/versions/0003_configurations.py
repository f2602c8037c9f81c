"""configuration groups and parameter catalogues

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Fractions of a second matter (paging by creation time): MySQL and MariaDB need fsp=6 for them.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("datastore_version_id", sa.String(length=36), nullable=False),
        sa.Column("values", sa.Text(), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("updated", TIMESTAMP, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["datastore_version_id"], ["datastore_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("configurations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_configurations_project", ["project_id", "deleted", "created"], unique=False
        )

    op.create_table(
        "datastore_version_parameters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("datastore_version_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("min", sa.String(length=64), nullable=True),
        sa.Column("max", sa.String(length=64), nullable=True),
        sa.Column("allowed", sa.Text(), nullable=True),
        sa.Column("restart_required", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["datastore_version_id"], ["datastore_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("datastore_version_id", "name"),
    )
    with op.batch_alter_table("datastore_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parameters_version", sa.String(length=64), nullable=True))

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("configuration_id", sa.String(length=36), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_instances_configuration_id"), ["configuration_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_instances_configuration_id", "configurations", ["configuration_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_constraint("fk_instances_configuration_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_instances_configuration_id"))
        batch_op.drop_column("configuration_id")

    with op.batch_alter_table("datastore_versions", schema=None) as batch_op:
        batch_op.drop_column("parameters_version")

    op.drop_table("datastore_version_parameters")
    with op.batch_alter_table("configurations", schema=None) as batch_op:
        batch_op.drop_index("ix_configurations_project")

    op.drop_table("configurations")
