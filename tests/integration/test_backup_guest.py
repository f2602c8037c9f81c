"""Backups and restores through real guest agents and a filesystem store: the engine's own tool,
sealed on the way, and a new instance made from the artifact with exactly the data, users and
databases of the moment it was taken."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from guesthost import Host

from cove.common.errors import GuestError
from cove.compute.discovery import find_postgresql
from cove.domain.backups import (
    BackupJob,
    BackupProgress,
    JobState,
    RestoreJob,
    RestorePiece,
    SealKey,
    StoreSpec,
)
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient

pytestmark = pytest.mark.integration
needs_postgresql = pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")

CTX = RequestContext()
KEY = SealKey("bk-0000test", secrets.token_hex(32))


def store_for(host: Host) -> StoreSpec:
    """A filesystem store the service user (the agents) may write."""
    root = Path(host.settings.data_dir) / "backups"
    root.mkdir(exist_ok=True, mode=0o700)
    os.chown(root, host.driver.uid, host.driver.gid)
    return StoreSpec(kind="filesystem", location=str(root), prefix="cove-backups")


def back_up(guest: GuestClient, store: StoreSpec, backup_id: str) -> BackupProgress:
    job = BackupJob(backup_id, store, f"p/{backup_id}", KEY)
    guest.start_backup(CTX, job)
    # Asking again is harmless: the same backup answers its progress.
    assert guest.start_backup(CTX, job).state is not JobState.UNKNOWN
    deadline = time.monotonic() + 120
    while True:
        progress = guest.backup_progress(CTX, backup_id)
        if progress.state is not JobState.RUNNING:
            return progress
        assert time.monotonic() < deadline, "the backup did not end"
        time.sleep(0.1)


def pg(spec: GuestSettings, user: str, password: str, db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=spec.address, user=user, password=password, dbname=db, autocommit=True
    )


@needs_postgresql
def test_a_postgresql_backup_restores_into_a_new_instance(host: Host) -> None:
    store = store_for(host)
    source = host.spec()
    host.create(source)
    guest = GuestClient(host.bus, source.instance_id)
    guest.prepare(
        CTX, [DatabaseSpec("shop")], [UserSpec("app", "app-Secret-1", databases=["shop"])]
    )
    with pg(source, "app", "app-Secret-1", "shop") as conn:
        conn.execute("CREATE TABLE orders (id int primary key, note text)")
        conn.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        conn.execute("INSERT INTO orders VALUES (0, 'plain-marker-4f1c9e27b')")

    done = back_up(guest, store, "b-1")
    assert done.state is JobState.COMPLETED, done.error
    assert done.result is not None
    artifact = Path(store.location, store.prefix, "p", "b-1")
    assert artifact.stat().st_size == done.result.size
    # Sealed: neither the tar's file names nor a row's text are there in clear (markers long
    # enough that random ciphertext never holds them).
    sealed = artifact.read_bytes()
    assert b"plain-marker-4f1c9e27b" not in sealed and b"PG_VERSION" not in sealed
    # Written after the backup: not in the restore.
    with pg(source, "app", "app-Secret-1", "shop") as conn:
        conn.execute("INSERT INTO orders VALUES (9999, 'after')")

    piece = RestorePiece("b-1", done.result.artifact, done.result.checksum, KEY, done.result.meta)
    copy = host.spec()
    host.create(copy)
    GuestClient(host.bus, copy.instance_id).prepare(CTX, [], [], RestoreJob(store, [piece]))
    with pg(copy, "app", "app-Secret-1", "shop") as conn:
        count, top = conn.execute("SELECT count(*), max(id) FROM orders").fetchone()  # type: ignore[misc]
    assert (count, top) == (5001, 5000)  # 1 to 5000 and the marker row 0
    users = GuestClient(host.bus, copy.instance_id).list_users(CTX)
    assert [(u.name, list(u.databases)) for u in users] == [("app", ["shop"])]

    # A flipped byte: the restore fails, no server runs on what it read.
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x40
    artifact.write_bytes(bytes(data))
    broken = host.spec()
    host.create(broken)
    with pytest.raises(GuestError, match=r"damaged|changed"):
        GuestClient(host.bus, broken.instance_id).prepare(CTX, [], [], RestoreJob(store, [piece]))


def rd(spec: GuestSettings, user: str, password: str) -> redis.Redis:
    return redis.Redis(host=spec.address, port=6379, username=user, password=password)


def test_a_redis_backup_restores_into_a_new_instance(host: Host) -> None:
    store = store_for(host)
    source = host.spec_of("redis")
    host.create(source)
    guest = GuestClient(host.bus, source.instance_id)
    guest.prepare(CTX, [], [UserSpec("app", "app-Secret-1")])
    # Random, so the RDB cannot compress it away: the stream spans several chunks.
    big = os.urandom(2_000_000)
    with rd(source, "app", "app-Secret-1") as client:
        client.mset({f"order:{i}": f"note-{i}" for i in range(1000)})
        client.set("big", big)
        client.rpush("queue", "a", "b", "c")
        client.set("doomed", "x")

    done = back_up(guest, store, "b-r1")
    assert done.state is JobState.COMPLETED, done.error
    assert done.result is not None
    raw = int(done.result.meta.pop("raw_size"))  # the RDB stream, before compression
    assert raw > 2_000_000
    assert done.result.meta == {"format": "redis-rdb-acl", "version": source.datastore_version}
    artifact = Path(store.location, store.prefix, "p", "b-r1")
    assert artifact.stat().st_size == done.result.size > 2_000_000
    assert b"order:" not in artifact.read_bytes()  # sealed, not in clear
    # Written after the backup: not in the restore.
    with rd(source, "app", "app-Secret-1") as client:
        client.set("order:after", "late")
        client.set("order:1", "changed")
        client.delete("doomed")

    piece = RestorePiece("b-r1", done.result.artifact, done.result.checksum, KEY, done.result.meta)
    copy = host.spec_of("redis")
    host.create(copy)
    restored = GuestClient(host.bus, copy.instance_id)
    restored.prepare(CTX, [], [], RestoreJob(store, [piece]))
    with rd(copy, "app", "app-Secret-1") as client:
        keys = {key.decode() for key in client.keys("*")}
        assert keys == {f"order:{i}" for i in range(1000)} | {"big", "queue", "doomed"}
        assert client.get("order:1") == b"note-1"
        assert client.get("big") == big
        assert client.lrange("queue", 0, -1) == [b"a", b"b", b"c"]
        client.set("order:new", "fresh")  # and the restored server goes on as usual
        assert client.get("order:new") == b"fresh"
    assert [(u.name, list(u.databases)) for u in restored.list_users(CTX)] == [("app", [])]
    assert not restored.is_root_enabled(CTX)

    # A flipped byte: the restore fails, no server runs on what it read.
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x40
    artifact.write_bytes(bytes(data))
    broken = host.spec_of("redis")
    host.create(broken)
    with pytest.raises(GuestError, match=r"damaged|changed"):
        GuestClient(host.bus, broken.instance_id).prepare(CTX, [], [], RestoreJob(store, [piece]))


@needs_postgresql
def test_a_backup_to_a_store_it_cannot_write_fails_with_the_reason(host: Host) -> None:
    source = host.spec()
    host.create(source, prepare=True)
    guest = GuestClient(host.bus, source.instance_id)
    root = Path(host.settings.data_dir) / "not-writable"
    root.mkdir(mode=0o700)  # root's: the agent runs as the service user
    store = StoreSpec(kind="filesystem", location=str(root), prefix="c")
    done = back_up(guest, store, "b-2")
    if os.geteuid() == 0 and host.driver.uid != 0:
        assert done.state is JobState.FAILED
        assert "cannot look at" in done.error and "filesystem store" in done.error
    assert guest.backup_progress(CTX, "never-started").state is JobState.UNKNOWN
