"""The migrations build the schema the models describe, on every database Cove supports."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from cove.db.engine import make_engine
from cove.db.instances import page_instances
from cove.db.migrate import alembic_config, upgrade
from cove.db.models import Base, Instance, UTCDateTime


def _ddl(dialect: str) -> str:
    """The SQL every migration up to head emits for ``dialect``, rendered without a server."""
    buf = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": buf}
    )
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    with Operations.context(context):
        for script in reversed(list(scripts.walk_revisions())):
            script.module.upgrade()
    return buf.getvalue()


@pytest.mark.parametrize("dialect", ["mysql", "mariadb"])
def test_mysql_timestamps_keep_microseconds(dialect: str):
    """MySQL and MariaDB round a plain DATETIME to the second, which would merge reports and
    instances that are apart by less than that."""
    ddl = _ddl(dialect)
    assert "CREATE TABLE instances" in ddl and "CREATE TABLE conductor_seen" in ddl
    types = re.findall(r"\bDATETIME\b(?:\(\d+\))?", ddl)
    assert types and set(types) == {"DATETIME(6)"}
    timestamps = [
        c
        for t in Base.metadata.tables.values()
        for c in t.columns
        if isinstance(c.type, UTCDateTime)
    ]
    assert len(types) == len(timestamps)


def test_migrated_database_matches_the_models(tmp_path: Path):
    """Up to head, down to nothing and up again: the schema is the models' one."""
    url = f"sqlite:///{tmp_path}/cove.sqlite"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_a_project_page_is_read_in_index_order(tmp_path: Path):
    """The list query of one project scans the paging index, with no sort of its own."""
    url = f"sqlite:///{tmp_path}/cove.sqlite"
    upgrade(url)
    engine = make_engine(url)
    sent: list[tuple[str, Any]] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, params, *_: sent.append((sql, params)),
    )
    query = select(Instance).where(Instance.project_id == "p1", Instance.deleted.is_(False))
    try:
        with Session(engine) as session:
            page_instances(session, query, None, 10)
            sql, params = sent[-1]
            rows = session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " | ".join(str(row[-1]) for row in rows)
    finally:
        engine.dispose()
    assert "USING INDEX ix_instances_project_page" in plan
    assert "TEMP B-TREE" not in plan


def test_configuration_tables_arrive_on_a_database_with_instances(tmp_path: Path):
    """0003 on a database that already holds an instance: the instance has no group, and a
    version's catalogue holds a parameter name once."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    url = f"sqlite:///{tmp_path}/cove.sqlite"
    upgrade(url, "0002")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO datastores (id, name) VALUES ('d', 'postgresql')"))
            conn.execute(
                text(
                    "INSERT INTO datastore_versions (id, datastore_id, name, version, manager, "
                    "bin_dir, active) VALUES ('v', 'd', '15', '15.4', 'postgresql', '/x', 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO flavors (id, name, ram, vcpus, disk, ephemeral, active) "
                    "VALUES ('1', 'tiny', 512, 1, 0, 0, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO instances (id, project_id, name, flavor_id, "
                    "datastore_version_id, volume_size, compute_driver, task, compute_state, "
                    "port, created, updated, deleted) VALUES ('i', 'p', 'n', '1', 'v', 1, "
                    "'local', 'NONE', 'ACTIVE', 5432, '2026-01-01', '2026-01-01', 0)"
                )
            )
        upgrade(url)
        with engine.begin() as conn:
            row = conn.execute(text("SELECT configuration_id FROM instances")).one()
            assert row == (None,)
            version = conn.execute(text("SELECT parameters_version FROM datastore_versions"))
            assert version.one() == (None,)
            insert = text(
                "INSERT INTO datastore_version_parameters (datastore_version_id, name, type, "
                "restart_required) VALUES ('v', 'work_mem', 'integer', 0)"
            )
            conn.execute(insert)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert)
    finally:
        engine.dispose()


def test_backup_schedules_come_and_go_without_touching_backups(tmp_path: Path):
    """0006 on a database that holds a backup, and back: the backup stays as it was."""
    from sqlalchemy import inspect, text

    url = f"sqlite:///{tmp_path}/cove.sqlite"
    upgrade(url, "0005")
    engine = make_engine(url)
    backup = (
        "INSERT INTO backups (id, project_id, name, instance_id, datastore_version_id, "
        "status, store, artifact, key_id, meta, created, updated, deleted) VALUES ('b', 'p', "
        "'n', 'i', 'v', 'COMPLETED', '{}', 'i/b.cbk', 'k', '{}', '2026-01-01', '2026-01-01', 0)"
    )
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO datastores (id, name) VALUES ('d', 'postgresql')"))
            conn.execute(
                text(
                    "INSERT INTO datastore_versions (id, datastore_id, name, version, manager, "
                    "bin_dir, active) VALUES ('v', 'd', '15', '15.4', 'postgresql', '/x', 1)"
                )
            )
            conn.execute(text(backup))
        upgrade(url, "0006")
        tables = set(inspect(engine).get_table_names())
        assert {"backup_schedules", "backup_schedule_runs"} <= tables
        command.downgrade(alembic_config(url), "0005")
        engine.dispose()
        tables = set(inspect(engine).get_table_names())
        assert not {"backup_schedules", "backup_schedule_runs"} & tables
        with engine.begin() as conn:
            assert conn.execute(text("SELECT id, status FROM backups")).all() == [
                ("b", "COMPLETED")
            ]
    finally:
        engine.dispose()
