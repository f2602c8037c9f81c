"""Guest logs on a real PostgreSQL server run by a real guest agent, driven over the bus: the
general and slow-query logs turned on live (and in postgresql.conf for the next start), a
tenant's statements in them and the agent's own never, the three views of the server's one
file published apart into a store the agent writes, and turned off again. MariaDB's are in
tests/integration/test_mariadb_guest.py."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from pathlib import Path

import psycopg
import pytest
from guesthost import Host

from cove.compute.discovery import find_postgresql
from cove.domain import guestlogs
from cove.domain.backups import SealKey, StoreSpec
from cove.domain.guestlogs import LogIndex, LogStatus, LogTarget
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient
from cove.storage import Store, open_store
from cove.storage.sealed import unsealed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries"),
]

CTX = RequestContext()
PASSWORD = "pw-logs-Xy7"


def published(store: Store, target: LogTarget, instance_id: str, log: str) -> bytes:
    """The plain text of a log's published copy, read as the API reads it."""
    index = LogIndex.from_json(b"".join(store.get(guestlogs.index_key(instance_id, log))))
    out = b""
    for part in index.parts:
        assert part.key_id == target.seal.key_id
        sealed = b"".join(store.get(part.key))
        out += b"".join(unsealed([sealed], target.seal, part.checksum))
    return out


def wait_logged(log_file: Path, text: bytes) -> None:
    """PostgreSQL writes a record when the statement ends; wait until it is in the file."""
    deadline = time.monotonic() + 30
    while text not in log_file.read_bytes():
        assert time.monotonic() < deadline, f"{text!r} never reached {log_file}"
        time.sleep(0.05)


def test_postgresql_logs_through_a_real_agent(host: Host) -> None:
    spec = host.spec()
    iid = spec.instance_id
    host.create(spec)
    guest = GuestClient(host.bus, iid)
    guest.prepare(CTX, [DatabaseSpec("a")], [UserSpec("u1", PASSWORD, "%", ("a",))])
    root = Path(host.settings.data_dir) / "backups"
    root.mkdir(exist_ok=True, mode=0o700)
    os.chown(root, host.driver.uid, host.driver.gid)
    target = LogTarget(
        StoreSpec(kind="filesystem", location=str(root), prefix="database-logs"),
        SealKey("bk-0000logs", secrets.token_hex(32)),
    )
    store = open_store(target.store)
    log_file = host.driver.instance_dir(iid) / "log" / "postgresql.log"
    conf = host.driver.instance_dir(iid) / "conf" / "postgresql.conf"

    states = {s.name: s for s in guest.list_logs(CTX)}
    assert guestlogs.status(states["general"]) is LogStatus.DISABLED
    assert guestlogs.status(states["error"]) is LogStatus.READY  # the server's start
    assert guestlogs.status(guest.set_log(CTX, "general", True)) is not LogStatus.DISABLED
    guest.set_log(CTX, "slow_query", True)
    text = conf.read_text()
    assert "log_statement = 'all'" in text and "log_min_duration_statement = 1000" in text

    with psycopg.connect(
        host=spec.address, user="u1", password=PASSWORD, dbname="a", autocommit=True
    ) as tenant:
        tenant.execute("SELECT 'marker-general'")
        tenant.execute("SELECT pg_sleep(1.2), 'marker-slow'")
        with pytest.raises(psycopg.errors.DivisionByZero):
            tenant.execute("SELECT 1 / 0")
    wait_logged(log_file, b"division by zero")
    assert [d.name for d in guest.list_databases(CTX)] == ["a"]  # the agent's own query

    for name in ("general", "slow_query", "error"):
        state = guest.publish_log(CTX, name, target)
        assert guestlogs.status(state) is LogStatus.PUBLISHED, state
    general = published(store, target, iid, "general")
    assert b"marker-general" in general and b"marker-slow" in general
    # The agent's statements (its listing, its vital signs) are not the tenant's log.
    assert b"datname" not in general and b"pg_stat" not in general
    slow = published(store, target, iid, "slow_query")
    assert b"duration: " in slow and b"marker-general" not in slow
    errors = published(store, target, iid, "error")
    assert b"division by zero" in errors and b"ready to accept connections" in errors
    assert b"statement: " not in errors and b"execute <" not in errors

    guest.set_log(CTX, "general", False)
    assert "log_statement" not in conf.read_text()
    with psycopg.connect(
        host=spec.address, user="u1", password=PASSWORD, dbname="a", autocommit=True
    ) as tenant:
        tenant.execute("SELECT 'marker-after'")
        with pytest.raises(psycopg.errors.DivisionByZero):
            tenant.execute("SELECT 2 / 0")
    wait_logged(log_file, b"SELECT 2 / 0")
    guest.publish_log(CTX, "general", target)
    assert b"marker-after" not in published(store, target, iid, "general")

    gone = guest.discard_log(CTX, "general", target)
    assert gone.published == 0 and store.keys(guestlogs.prefix(iid, "general")) == []


def test_an_agent_told_json_logs_json_lines(host: Host) -> None:
    """An agent whose settings say ``log_format = json`` writes one JSON object per line."""
    spec = dataclasses.replace(host.spec(), log_format="json")
    host.create(spec)
    GuestClient(host.bus, spec.instance_id).prepare(CTX, [], [])
    log = host.driver.instance_dir(spec.instance_id) / "log" / "guestagent.log"
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert {r["service"] for r in records} == {"guestagent"}
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
