"""clusters, and the instances that are their members

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-20 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column(
            "datastore_version_id",
            sa.String(36),
            sa.ForeignKey("datastore_versions.id"),
            nullable=False,
        ),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("task_started_at", TIMESTAMP, nullable=True),
        sa.Column("locality", sa.String(16), nullable=True),
        sa.Column("extended_properties", sa.Text(), nullable=True),
        sa.Column(
            "configuration_id", sa.String(36), sa.ForeignKey("configurations.id"), nullable=True
        ),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("updated", TIMESTAMP, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
    )
    op.create_index(
        "ix_clusters_project_page", "clusters", ["project_id", "deleted", "created", "id"]
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("cluster_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("cluster_index", sa.Integer(), nullable=True))
        batch.create_index("ix_instances_cluster_id", ["cluster_id"])


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_cluster_id")
        batch.drop_column("cluster_index")
        batch.drop_column("cluster_id")
    op.drop_index("ix_clusters_project_page", "clusters")
    op.drop_table("clusters")
