"""PostgreSQL backups: ``pg_basebackup`` as one tar stream, restored with ``tar``.

``pg_basebackup -Ft -D - -X fetch`` writes the whole cluster (tablespaces aside: Cove makes
none) as one tar on stdout, with the WAL needed to make it consistent inside, while the server
keeps serving. Restoring is unpacking it into an empty data directory: its ``backup_label``
makes the server replay that WAL on its first start. The agent connects as the admin role over
the instance's own socket (peer authentication, a replication line in ``pg_hba.conf``), so no
password is involved.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.datastores.base import BackupSource, RestoreSource
from cove.guestagent.datastores.postgresql.conf import ADMIN_USER

LOG = logging.getLogger(__name__)

#: What the engine writes in ``meta["format"]``; a restore refuses any other.
FORMAT = "pg_basebackup-tar"


class _Source:
    def __init__(self, streamed: process.Streamed, version: str) -> None:
        self._streamed = streamed
        self.meta: dict[str, str] = {"format": FORMAT, "version": version}

    def chunks(self) -> Iterator[bytes]:
        return self._streamed.chunks()


class PostgresBackups:
    incremental = False

    def __init__(self, config: GuestSettings) -> None:
        self.config = config

    @property
    def _bin(self) -> Path:
        return Path(self.config.bin_dir)

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        if parent_meta is not None:
            raise GuestError("PostgreSQL base backups are full backups only")
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
        with process.stream_out(argv, errors=errors) as streamed:
            yield _Source(streamed, self.config.datastore_version)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        if len(pieces) != 1:
            raise GuestError("a PostgreSQL restore takes exactly one base backup")
        piece = pieces[0]
        if piece.meta.get("format") != FORMAT:
            raise GuestError(f"not a PostgreSQL base backup (format {piece.meta.get('format')})")
        if piece.meta.get("version") != self.config.datastore_version:
            raise GuestError(
                f"the backup was made by PostgreSQL {piece.meta.get('version')}, this instance "
                f"runs {self.config.datastore_version}"
            )
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
        for leftover in ("postmaster.pid", "postmaster.opts"):
            (data / leftover).unlink(missing_ok=True)
        data.chmod(0o700)
        LOG.info("restored the data directory from a base backup")
