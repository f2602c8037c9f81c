"""PostgreSQL backups: ``pg_basebackup`` as one tar stream, the archived WAL on top of it.

A full backup is ``pg_basebackup -Ft -D - -X fetch``: the whole cluster (tablespaces aside:
Cove makes none) as one tar on stdout, with the WAL needed to make it consistent inside, while
the server keeps serving. Restoring it alone is unpacking it into an empty data directory: its
``backup_label`` makes the server replay that WAL on its first start. The agent connects as
the admin role over the instance's own socket (peer authentication, a replication line in
``pg_hba.conf``), so no password is involved.

PostgreSQL 15 has no incremental base backup, so Cove's incrementals are WAL: a backup starts
the instance's continuous WAL archiving (``wal.py``) before its base backup, and an
incremental closes the current WAL file, waits until it is archived and records where it
ended (a small manifest is its artifact). Restoring a chain unpacks the full backup, fetches
the archived WAL from its start up to the last incremental's end and has the server replay
it to exactly that position; a point-in-time restore replays to a moment instead (or all that
was archived, when nothing was committed after that moment). The server then leaves recovery
on a new timeline, and the agent removes the recovery settings and the fetched WAL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import psycopg

from cove.common.errors import GuestError
from cove.domain import wal
from cove.domain.backups import WalArchive, WalRestore
from cove.domain.datastores.postgresql import ADMIN_USER
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.datastores.base import BackupSource, RestoreSource
from cove.guestagent.datastores.postgresql.conf import quote
from cove.guestagent.datastores.postgresql.replication import READ_ONLY, is_standby
from cove.guestagent.datastores.postgresql.server import PostgresServer
from cove.guestagent.datastores.postgresql.wal import (
    RESTORED,
    WalArchiver,
    fetch,
    remove_fetched,
)
from cove.storage import open_store

LOG = logging.getLogger(__name__)

#: What the engine writes in ``meta["format"]``; a restore refuses any other.
FORMAT = "pg_basebackup-tar"
#: The format of an incremental: a range of archived WAL.
WAL_RANGE = "pg-wal-range"
#: How long an incremental waits for its last WAL file to reach the store.
ARCHIVE_WAIT = 600.0
#: How long a restored server may take to replay the archived WAL and leave recovery.
RECOVERY_TIMEOUT = 6 * 3600.0
#: The settings a restore puts in ``postgresql.auto.conf`` and takes out once recovered.
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target_lsn",
    "recovery_target_time",
    "recovery_target_inclusive",
    "recovery_target_action",
)


class _Source:
    def __init__(self, chunks: Iterator[bytes], meta: dict[str, str]) -> None:
        self._chunks = chunks
        self.meta = meta

    def chunks(self) -> Iterator[bytes]:
        return self._chunks


class PostgresBackups:
    incremental = True

    def __init__(self, config: GuestSettings, server: PostgresServer) -> None:
        self.config = config
        self.server = server
        self.archiver = WalArchiver(config, Path(config.bin_dir))

    @property
    def _bin(self) -> Path:
        return Path(self.config.bin_dir)

    def archive_to(self, target: WalArchive) -> None:
        """Archive the instance's WAL to ``target`` from now on. Raises GuestError on a
        replica."""
        self._refuse_on_replica()
        self.archiver.configure(target)

    def _refuse_on_replica(self) -> None:
        """A standby neither archives nor switches WAL, which every backup here needs."""
        if is_standby(self.config.data_dir):
            raise GuestError(
                f"{READ_ONLY}: back up its primary instead "
                "(backups of replicas are not supported yet)."
            )

    def _query(self, sql: str, *params: str) -> str:
        try:
            with self.server.connect() as conn:
                row = conn.execute(sql, params or None).fetchone()
        except psycopg.Error as exc:
            raise GuestError(f"cannot ask the server where its WAL is: {exc}") from exc
        if row is None:
            raise GuestError(f"the server answered nothing to {sql}")
        return str(row[0])

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        self._refuse_on_replica()
        if parent_meta is not None:
            yield self._incremental(parent_meta)
            return
        # The WAL file the backup starts in or an earlier one, archived from now on: where a
        # replay on top of it begins. (At the very start of a file, pg_walfile_name names the
        # file before, which may have ended before archiving began: hence the + 1.)
        start_wal = self._query("SELECT pg_walfile_name(pg_current_wal_lsn() + 1)")
        argv: list[str | Path] = [
            self._bin / "pg_basebackup",
            "--pgdata=-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--no-password",
            f"--host={self.config.run_dir}",
            f"--port={self.config.port}",
            f"--username={ADMIN_USER}",
        ]
        errors = self.config.log_dir / "pg_basebackup.log"
        meta = {"format": FORMAT, "version": self.config.datastore_version, "start_wal": start_wal}
        with process.stream_out(argv, errors=errors) as streamed:

            def chunks() -> Iterator[bytes]:
                yield from streamed.chunks()
                # Reached once the tool exited 0: the backup is consistent by now.
                meta["end_time"] = self._query("SELECT clock_timestamp()")

            yield _Source(chunks(), meta)

    def _incremental(self, parent_meta: dict[str, str]) -> BackupSource:
        start_wal = parent_meta.get("start_wal")
        if parent_meta.get("format") not in (FORMAT, WAL_RANGE) or not start_wal:
            raise GuestError("the parent backup records no WAL position to build on")
        if not self.archiver.spool.is_dir():
            raise GuestError("WAL archiving is not set up on this instance")
        if self._query("SHOW archive_mode") != "on":
            raise GuestError(
                "WAL archiving is off on this instance's server; restart the instance to "
                "turn it on, then make a full backup"
            )
        meta = {
            "format": WAL_RANGE,
            "version": self.config.datastore_version,
            "start_wal": start_wal,
        }

        def chunks() -> Iterator[bytes]:
            # A record of its own marks the end: on a server idle since its last WAL switch,
            # the current position is the start of a file that holds nothing yet, no switch
            # would happen, and a replay could never reach that position. The record ends
            # where the switch record starts, in the file the switch closes and archives.
            end_lsn = self._query(
                "SELECT pg_logical_emit_message(false, 'cove', 'end of an incremental backup')"
            )
            switched = self._query("SELECT pg_switch_wal()")
            end_wal = self._query("SELECT pg_walfile_name(%s::pg_lsn)", switched)
            self.archiver.wait_shipped(end_wal, ARCHIVE_WAIT, self.server.running)
            meta.update(end_lsn=end_lsn, end_wal=end_wal)
            meta["end_time"] = self._query("SELECT clock_timestamp()")
            yield json.dumps(meta, sort_keys=True).encode()

        return _Source(chunks(), meta)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        self.restore_with_wal(pieces, None)

    def restore_with_wal(
        self, pieces: Sequence[RestoreSource], wal_restore: WalRestore | None
    ) -> None:
        """Unpack the chain's full backup; with ``wal_restore``, fetch the archived WAL and set
        the server to replay it on its next start (see the module)."""
        if not pieces:
            raise GuestError("a PostgreSQL restore needs a base backup")
        base, incrementals = pieces[0], pieces[1:]
        self._check(base.meta, FORMAT)
        for piece in incrementals:
            self._check(piece.meta, WAL_RANGE)
            # Read it whole: its seal and checksum are checked once the stream ends.
            manifest = json.loads(b"".join(piece.chunks) or b"{}")
            if manifest.get("end_lsn") != piece.meta.get("end_lsn"):
                raise GuestError("an incremental backup's manifest does not match its record")
        if incrementals and wal_restore is None:
            raise GuestError("restoring incremental backups needs the archived WAL")
        self._unpack(base)
        if wal_restore is None:
            return
        start_wal = base.meta.get("start_wal", "")
        if not start_wal:
            raise GuestError("the base backup records no WAL position to replay from")
        end = incrementals[-1].meta if incrementals else None
        self._prepare_replay(wal_restore, start_wal, end)

    def _check(self, meta: dict[str, str], kind: str) -> None:
        if meta.get("format") != kind:
            raise GuestError(f"not a PostgreSQL backup of the expected kind ({meta.get('format')})")
        if meta.get("version") != self.config.datastore_version:
            raise GuestError(
                f"the backup was made by PostgreSQL {meta.get('version')}, this instance "
                f"runs {self.config.datastore_version}"
            )

    def _unpack(self, piece: RestoreSource) -> None:
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        # GNU tar refuses members that would land outside the directory.
        process.stream_in(
            ["tar", "--extract", "--file=-", "--no-same-owner", f"--directory={data}"],
            piece.chunks,
            errors=self.config.log_dir / "restore.log",
        )
        if not (data / "PG_VERSION").is_file():
            raise GuestError("the restored backup holds no PostgreSQL data directory")
        for top, dirs, files in os.walk(data):
            for name in dirs + files:
                if Path(top, name).is_symlink():
                    raise GuestError(f"the restored backup holds a symbolic link: {name}")
        for leftover in ("postmaster.pid", "postmaster.opts"):
            (data / leftover).unlink(missing_ok=True)
        data.chmod(0o700)
        LOG.info("restored the data directory from a base backup")

    def _prepare_replay(
        self, restore: WalRestore, start_wal: str, end: dict[str, str] | None
    ) -> None:
        store = open_store(restore.store)
        archived = wal.listing(store.keys(wal.prefix(restore.source_instance)))
        reachable = wal.contiguous(archived, start_wal)
        settings: dict[str, str] = {}
        if end is not None:
            end_wal = end.get("end_wal", "")
            if not reachable or reachable[-1].wal_file[8:] < end_wal[8:]:
                raise GuestError(
                    f"the WAL archive of instance {restore.source_instance} misses WAL up to "
                    f"{end_wal}; the incremental backup cannot be restored"
                )
            wanted = wal.needed(archived, start_wal, end_wal)
            settings["recovery_target_lsn"] = end["end_lsn"]
        else:
            wanted = [o for o in wal.needed(archived, start_wal) if not o.segment or o in reachable]
            target = _moment(restore.target_time)
            newest = wal.latest_commit(reachable)
            if target is not None and newest is not None and target < newest:
                settings["recovery_target_time"] = target.isoformat(sep=" ")
            # Otherwise everything archived was committed before the moment: replay it all.
        if end is not None or "recovery_target_time" in settings:
            settings["recovery_target_inclusive"] = "on"
        restored = self.config.root / RESTORED
        remove_fetched(restored)
        fetch(restore, wanted, restored)
        settings["restore_command"] = f"cp {shlex.quote(str(restored))}/%f %p"
        settings["recovery_target_action"] = "promote"
        auto = self.config.data_dir / "postgresql.auto.conf"
        with auto.open("a") as fh:
            fh.write("# Written by the Cove guest agent for a restore; removed once recovered.\n")
            for name, value in settings.items():
                fh.write(f"{name} = {quote(value)}\n")
        (self.config.data_dir / "recovery.signal").touch(mode=0o600)
        LOG.info("the server will replay %d archived WAL file(s)", len(wanted))

    def finish_replay(self) -> None:
        """Once the server left recovery, take the restore's settings out and remove the
        fetched WAL; nothing when no replay was set up. Raises GuestError when the server
        does not leave recovery in time."""
        restored = self.config.root / RESTORED
        if not restored.exists():
            return
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while self._query("SELECT pg_is_in_recovery()") in ("True", "true", "t"):
            if time.monotonic() > deadline or not self.server.running():
                raise GuestError("the restored server did not finish replaying its WAL")
            time.sleep(0.2)  # the replay gives no notice of its end
        try:
            with self.server.connect() as conn:
                for name in RECOVERY_SETTINGS:
                    conn.execute(f"ALTER SYSTEM RESET {name}")
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            raise GuestError(f"cannot clear the restore's settings: {exc}") from exc
        remove_fetched(restored)
        LOG.info("the restored server replayed its WAL and left recovery")


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise GuestError(f"not a moment: {text[:40]!r}") from None
