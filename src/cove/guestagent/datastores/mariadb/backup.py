"""MariaDB backups: ``mariadb-backup`` as one xbstream, restored with ``mbstream`` and
``mariadb-backup --prepare``.

``mariadb-backup --backup --stream=xbstream`` copies the InnoDB files while following the redo
log the server writes meanwhile, then the other tables under MariaDB's backup stages (writes to
them wait for that moment only), and writes it all as one xbstream on stdout while the server
keeps serving. It connects as the agent's account over the instance's socket; the password
reaches it only through a defaults file of mode 0600 that exists while the tool runs.

Restoring is extracting the stream into an empty data directory with ``mbstream`` and applying
the copied redo log with ``--prepare``: the data directory is then as it was when the backup
ended. The system tables come with it, and with them the source instance's accounts, the
agent's own included; the server's init file (``privileges.startup_sql``) writes this
instance's agent account back at every start, before any client connects.

Backups are full ones. For a later incremental backup the meta keeps the ``to_lsn`` of the
``xtrabackup_checkpoints`` that mariadb-backup streams: it also writes a copy of that file to
disk (``--extra-lsndir``), read once the stream has ended, so nothing of the stream is held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from cove.common.errors import CommandFailed, GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.datastores.base import BackupSource, RestoreSource
from cove.guestagent.datastores.mariadb import conf
from cove.guestagent.datastores.mariadb.server import MariaServer, beside_server

LOG = logging.getLogger(__name__)

#: What the engine writes in ``meta["format"]``; a restore refuses any other.
FORMAT = "mariadb-backup-xbstream"
TOOL = "mariadb-backup"
EXTRACT = "mbstream"
#: The LSNs a backup covers, in the stream and (``--extra-lsndir``) beside it.
CHECKPOINTS = "xtrabackup_checkpoints"
#: The source's InnoDB layout (page size, data files, undo tablespaces), in the stream.
BACKUP_CNF = "backup-my.cnf"
#: The tool's defaults file, with the agent's password, under conf/ (never in the server's
#: tmpdir, which is its secure_file_priv).
DEFAULTS_FILE = "mariadb-backup.cnf"
#: The tool's working directory under the instance's tmpdir.
WORK_DIR = "backup"
#: Applying the redo log that a long backup of a busy server copied can take hours; the
#: restore has nothing else to wait for.
PREPARE_TIMEOUT = 6 * 3600.0


def defaults_text(my_cnf: Path, password: str) -> str:
    """The tool's only defaults file: the instance's my.cnf (the data directory and the InnoDB
    settings), then the agent's login. One file, because mariadb-backup refuses
    ``--defaults-extra-file`` beside ``--defaults-file``, and without ``--defaults-file`` it
    reads /etc/mysql. Raises Unprocessable for a password my.cnf cannot hold."""
    return (
        f"!include {my_cnf}\n"
        "[mariadb-backup]\n"
        f"user = {conf.ADMIN_USER}\n"
        f"password = {conf.render_value(password)}\n"
    )


def to_lsn(checkpoints: str) -> str | None:
    """The ``to_lsn`` of an xtrabackup_checkpoints file: where an incremental backup on top of
    this one would start; None when the text has none."""
    for line in checkpoints.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "to_lsn" and value.strip().isdigit():
            return value.strip()
    return None


def check_meta(meta: Mapping[str, str], version: str) -> None:
    """Raises GuestError unless ``meta`` is of a backup this engine made on MariaDB
    ``version``."""
    if meta.get("format") != FORMAT:
        raise GuestError(f"not a MariaDB backup (format {meta.get('format')})")
    if meta.get("version") != version:
        raise GuestError(
            f"the backup was made by MariaDB {meta.get('version')}, this instance runs {version}"
        )


def make_private(root: Path) -> None:
    """Directories 0700 and files 0600 under ``root``: mbstream and mariadb-backup leave files
    readable by the group, some by everyone. Raises GuestError for a symbolic link, which
    neither tool writes."""
    root.chmod(0o700)
    for top, dirs, files in os.walk(root):
        for names, mode in ((dirs, 0o700), (files, 0o600)):
            for name in names:
                path = Path(top, name)
                if path.is_symlink():
                    raise GuestError(f"the restored backup holds a symbolic link: {name}")
                path.chmod(mode)


class _Source:
    def __init__(self, streamed: process.Streamed, version: str, lsn_dir: Path) -> None:
        self._streamed = streamed
        self._lsn_dir = lsn_dir
        self.meta: dict[str, str] = {"format": FORMAT, "version": version}

    def chunks(self) -> Iterator[bytes]:
        yield from self._streamed.chunks()
        # Reached only when the tool exited 0, after it wrote the copy.
        try:
            lsn = to_lsn((self._lsn_dir / CHECKPOINTS).read_text())
        except OSError as exc:
            lsn = None
            LOG.warning("mariadb-backup left no %s: %s", CHECKPOINTS, exc.strerror)
        if lsn is not None:
            self.meta["to_lsn"] = lsn


class MariadbBackups:
    incremental = False

    def __init__(self, server: MariaServer) -> None:
        self.server = server

    @property
    def config(self) -> GuestSettings:
        # The server's: it follows apply_configuration.
        return self.server.config

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        if parent_meta is not None:
            raise GuestError("MariaDB backups are full backups only")
        tool = beside_server(self.server.bin_dir, TOOL)
        tmp = conf.tmp_dir(self.config)
        tmp.mkdir(mode=0o700, exist_ok=True)
        work = tmp / WORK_DIR
        defaults = self.config.conf_dir / DEFAULTS_FILE
        # One backup runs at a time: what is there was left by an agent killed during one.
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        try:
            text = defaults_text(self.server.conf_file, self.server.admin_password())
            conf.write_private(defaults, text)
            argv: list[str | Path] = [
                tool,
                f"--defaults-file={defaults}",
                "--backup",
                "--stream=xbstream",
                f"--target-dir={work}",
                f"--extra-lsndir={work}",
                f"--socket={self.server.socket}",
            ]
            errors = self.config.log_dir / "mariadb-backup.log"
            with process.stream_out(argv, errors=errors, cwd=work) as streamed:
                yield _Source(streamed, self.config.datastore_version, work)
        finally:
            defaults.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        if len(pieces) != 1:
            raise GuestError("a MariaDB restore takes exactly one full backup")
        piece = pieces[0]
        check_meta(piece.meta, self.config.datastore_version)
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        # mbstream skips names that are absolute or hold "..": nothing lands outside.
        process.stream_in(
            [beside_server(self.server.bin_dir, EXTRACT), "--extract", f"--directory={data}"],
            piece.chunks,
            errors=self.config.log_dir / "restore.log",
        )
        if not (data / BACKUP_CNF).is_file() or not (data / CHECKPOINTS).is_file():
            raise GuestError("the restored backup holds no mariadb-backup data directory")
        self._prepare(data)
        make_private(data)
        LOG.info("restored the data directory from a mariadb-backup stream")

    def _prepare(self, data: Path) -> None:
        """Apply the copied redo log. Raises GuestError when mariadb-backup fails."""
        pool = conf.memory_settings(self.config.ram_mb)["innodb_buffer_pool_size"]
        argv: list[str | Path] = [
            beside_server(self.server.bin_dir, TOOL),
            # The source's InnoDB layout, which the prepare must use; as the only defaults
            # file it also keeps /etc/mysql out.
            f"--defaults-file={data / BACKUP_CNF}",
            "--prepare",
            f"--target-dir={data}",
            # The server is stopped: the prepare may have its buffer pool.
            f"--use-memory={pool}",
        ]
        try:
            process.run(argv, timeout=PREPARE_TIMEOUT, cwd=data)
        except CommandFailed as exc:
            raise GuestError(f"cannot prepare the restored backup: {exc.message}") from exc
