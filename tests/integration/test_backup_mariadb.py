"""MariaDB backups and restores through real guest agents and a filesystem store:
``mariadb-backup`` while the source serves, sealed on the way, and a new instance made from the
artifact with exactly the rows, users and databases of the moment it was taken."""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

import pymysql
import pytest
from guesthost import Host

from cove.common.errors import GuestError
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

pytestmark = [pytest.mark.integration]

CTX = RequestContext()
KEY = SealKey("bk-0000test", secrets.token_hex(32))
APP_PASSWORD = "app-Secret-Mx41q"
ROWS = 20000


def store_for(host: Host) -> StoreSpec:
    """A filesystem store the service user (the agents) may write."""
    root = Path(host.settings.data_dir) / "backups"
    root.mkdir(exist_ok=True, mode=0o700)
    os.chown(root, host.driver.uid, host.driver.gid)
    return StoreSpec(kind="filesystem", location=str(root), prefix="cove-backups")


def back_up(guest: GuestClient, store: StoreSpec, backup_id: str) -> BackupProgress:
    job = BackupJob(backup_id, store, f"p/{backup_id}", KEY)
    guest.start_backup(CTX, job)
    deadline = time.monotonic() + 120
    while True:
        progress = guest.backup_progress(CTX, backup_id)
        if progress.state is not JobState.RUNNING:
            return progress
        assert time.monotonic() < deadline, "the backup did not end"
        time.sleep(0.1)


def login(spec: GuestSettings) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host=spec.address,
        port=spec.port,
        user="app",
        password=APP_PASSWORD,
        database="shop",
        autocommit=True,
        connect_timeout=5,
    )


def rows(spec: GuestSettings) -> tuple[object, ...]:
    with login(spec) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), max(id), sum(crc32(note)) FROM orders")
        orders = cur.fetchone()
        cur.execute("SELECT group_concat(word ORDER BY word) FROM notes")
        notes = cur.fetchone()
    assert orders is not None and notes is not None
    return (*orders, *notes)


def test_a_mariadb_backup_restores_into_a_new_instance(host: Host) -> None:
    store = store_for(host)
    source = host.spec_of("mariadb")
    host.create(source)
    guest = GuestClient(host.bus, source.instance_id)
    guest.prepare(CTX, [DatabaseSpec("shop")], [UserSpec("app", APP_PASSWORD, databases=("shop",))])
    with login(source) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id int primary key, note text) ENGINE=InnoDB")
        cur.execute(f"INSERT INTO orders SELECT seq, md5(seq) FROM seq_1_to_{ROWS}")
        # Not InnoDB: copied under the backup stage that blocks writes to such tables.
        cur.execute("CREATE TABLE notes (word varchar(20)) ENGINE=Aria")
        cur.execute("INSERT INTO notes VALUES ('alpha'), ('beta')")
    before = rows(source)

    started = time.monotonic()
    done = back_up(guest, store, "b-1")
    took = time.monotonic() - started
    assert done.state is JobState.COMPLETED, done.error
    assert done.result is not None
    print(f"\nbackup of {ROWS} rows: {took:.2f} s, {done.result.size} bytes stored")
    meta = done.result.meta
    assert meta["format"] == "mariadb-backup-xbstream"
    assert meta["version"] == source.datastore_version
    assert meta["to_lsn"].isdigit()
    artifact = Path(store.location, store.prefix, "p", "b-1")
    assert artifact.stat().st_size == done.result.size
    assert b"xtrabackup" not in artifact.read_bytes()  # sealed, not in clear
    # The password file went with the tool, and its password never reached the log.
    home = host.driver.instance_dir(source.instance_id)
    assert not (home / "conf" / "mariadb-backup.cnf").exists()
    assert not (home / "tmp" / "backup").exists()
    secret = (home / "conf" / "admin.secret").read_text().strip()
    tool_log = (home / "log" / "mariadb-backup.log").read_text()
    assert "completed OK" in tool_log and secret not in tool_log

    # Written after the backup: not in the restore.
    with login(source) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO orders VALUES (999999, 'after')")
        cur.execute("DELETE FROM orders WHERE id <= 10")
        cur.execute("INSERT INTO notes VALUES ('gamma')")
    assert rows(source) != before

    piece = RestorePiece("b-1", done.result.artifact, done.result.checksum, KEY, dict(meta))
    copy = host.spec_of("mariadb")
    host.create(copy)
    restored = GuestClient(host.bus, copy.instance_id)
    restored.prepare(CTX, [], [], RestoreJob(store, [piece]))
    assert rows(copy) == before
    # The agent logs in (with the new instance's own password, not the source's).
    copy_home = host.driver.instance_dir(copy.instance_id)
    assert (copy_home / "conf" / "admin.secret").read_text().strip() != secret
    users = restored.list_users(CTX)
    assert [(u.name, u.host, list(u.databases)) for u in users] == [("app", "%", ["shop"])]
    assert [d.name for d in restored.list_databases(CTX)] == ["shop"]
    data = copy_home / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [data, *data.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == host.driver.owner(copy.instance_id).uid, path
        assert stat.S_IMODE(info.st_mode) & 0o007 == 0, path

    # A flipped byte: the restore fails, no server runs on what it read.
    damaged = bytearray(artifact.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    artifact.write_bytes(bytes(damaged))
    broken = host.spec_of("mariadb")
    host.create(broken)
    with pytest.raises(GuestError, match=r"damaged|changed"):
        GuestClient(host.bus, broken.instance_id).prepare(CTX, [], [], RestoreJob(store, [piece]))
