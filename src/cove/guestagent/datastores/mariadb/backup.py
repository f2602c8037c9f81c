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

Every backup's meta keeps the ``to_lsn`` of the ``xtrabackup_checkpoints`` that mariadb-backup
streams (it also writes a copy of that file to disk, ``--extra-lsndir``, read once the stream
has ended, so nothing of the stream is held): the log sequence number up to which its InnoDB
pages are whole. An incremental backup (``--incremental-lsn`` at its parent's ``to_lsn``) holds
only the InnoDB pages changed since, as ``.delta`` files, the redo log written during the
backup and every other file in full (the Aria system tables, .frm files); its meta says it is
incremental and where it starts (``from_lsn``).

A chain is restored oldest first: the full backup is extracted into the data directory and
prepared, then each incremental is extracted into a directory of its own under the instance's
tmpdir and applied onto the data directory (``--prepare --incremental-dir``), which needs its
``from_lsn`` to be the data directory's ``to_lsn``. MariaDB's prepare rolls nothing back (the
server does that at its first start), so incrementals still apply after the full backup's
prepare. The chain is checked whole before anything is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
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
#: Where a restore extracts incrementals, under the instance's tmpdir (one directory each).
RESTORE_DIR = "restore"
#: ``meta["type"]`` of a full and of an incremental backup (a meta without one: full).
FULL = "full"
INCREMENTAL = "incremental"
#: ``backup_type`` in the checkpoints of what mbstream extracted, by ``meta["type"]``.
EXTRACTED_TYPES = {FULL: "full-backuped", INCREMENTAL: "incremental"}
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


def read_checkpoints(text: str) -> dict[str, str]:
    """The ``key = value`` lines of an xtrabackup_checkpoints file (``backup_type``,
    ``from_lsn``, ``to_lsn``, ``last_lsn``...); other lines are ignored."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            found[key.strip()] = value.strip()
    return found


def to_lsn(checkpoints: str) -> str | None:
    """The ``to_lsn`` of an xtrabackup_checkpoints file: where an incremental backup on top of
    this one would start; None when the text has none."""
    lsn = read_checkpoints(checkpoints).get("to_lsn", "")
    return lsn if lsn.isdigit() else None


def check_meta(meta: Mapping[str, str], version: str) -> None:
    """Raises GuestError unless ``meta`` is of a backup this engine made on MariaDB
    ``version``."""
    if meta.get("format") != FORMAT:
        raise GuestError(f"not a MariaDB backup (format {meta.get('format')})")
    if meta.get("version") != version:
        raise GuestError(
            f"the backup was made by MariaDB {meta.get('version')}, this instance runs {version}"
        )


def backup_type(meta: Mapping[str, str]) -> str:
    """FULL or INCREMENTAL; raises GuestError for any other type. Backups made before Cove had
    incrementals record none: they are full."""
    kind = meta.get("type", FULL)
    if kind not in (FULL, INCREMENTAL):
        raise GuestError(f"unknown MariaDB backup type {kind!r}")
    return kind


def parent_lsn(parent: Mapping[str, str], version: str) -> str:
    """Where an incremental backup on top of ``parent`` (its meta) starts: the parent's
    ``to_lsn``. Raises GuestError when ``parent`` is no MariaDB backup of ``version`` or
    recorded no ``to_lsn``."""
    check_meta(parent, version)
    lsn = parent.get("to_lsn", "")
    if not lsn.isdigit():
        raise GuestError(
            "the parent backup recorded no to_lsn (where its data ends), so no incremental "
            "backup can build on it; make a full backup"
        )
    return lsn


def check_chain(chain: Sequence[Mapping[str, str]], version: str) -> None:
    """Raises GuestError unless ``chain`` (metas, oldest first) is a full backup made by this
    engine on MariaDB ``version``, then incrementals each starting at the LSN where the backup
    before it ends."""
    if not chain:
        raise GuestError("a MariaDB restore needs at least one backup")
    for meta in chain:
        check_meta(meta, version)
    if backup_type(chain[0]) != FULL:
        raise GuestError("the backup chain does not start with a full backup")
    for number, (before, meta) in enumerate(pairwise(chain), start=2):
        if backup_type(meta) != INCREMENTAL:
            raise GuestError(f"backup {number} of the chain is a full backup, not an incremental")
        ends, starts = before.get("to_lsn"), meta.get("from_lsn")
        if ends is None or starts != ends:
            raise GuestError(
                f"the backup chain is broken: backup {number} starts at LSN {starts}, the "
                f"backup before it ends at LSN {ends}"
            )


def check_extracted(checkpoints: Mapping[str, str], meta: Mapping[str, str]) -> None:
    """Raises GuestError unless the ``checkpoints`` that mbstream extracted are those of the
    backup that ``meta`` describes (its type, where an incremental starts)."""
    kind = backup_type(meta)
    if checkpoints.get("backup_type") != EXTRACTED_TYPES[kind]:
        raise GuestError(
            f"the restored backup is of type {checkpoints.get('backup_type')}, not {kind}"
        )
    if kind == INCREMENTAL and checkpoints.get("from_lsn") != meta.get("from_lsn"):
        raise GuestError(
            f"the restored incremental backup starts at LSN {checkpoints.get('from_lsn')}, "
            f"not at the {meta.get('from_lsn')} it recorded"
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
    def __init__(
        self, streamed: process.Streamed, version: str, lsn_dir: Path, from_lsn: str | None
    ) -> None:
        self._streamed = streamed
        self._lsn_dir = lsn_dir
        self.meta: dict[str, str] = {"format": FORMAT, "version": version, "type": FULL}
        if from_lsn is not None:
            self.meta.update(type=INCREMENTAL, from_lsn=from_lsn)

    def chunks(self) -> Iterator[bytes]:
        yield from self._streamed.chunks()
        # Reached only when the tool exited 0, after it wrote the copy.
        try:
            found = read_checkpoints((self._lsn_dir / CHECKPOINTS).read_text())
        except OSError as exc:
            LOG.warning("mariadb-backup left no %s: %s", CHECKPOINTS, exc.strerror)
            return
        wanted = self.meta.get("from_lsn")
        if wanted is not None and found.get("from_lsn") != wanted:
            raise GuestError(
                f"mariadb-backup started the incremental backup at LSN {found.get('from_lsn')}, "
                f"not at its parent's {wanted}"
            )
        if found.get("to_lsn", "").isdigit():
            self.meta["to_lsn"] = found["to_lsn"]


class MariadbBackups:
    incremental = True

    def __init__(self, server: MariaServer) -> None:
        self.server = server

    @property
    def config(self) -> GuestSettings:
        # The server's: it follows apply_configuration.
        return self.server.config

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        """A full backup, or with ``parent_meta`` an incremental one on top of that backup.
        Raises GuestError for a parent it cannot build on, CommandFailed when the tool
        cannot start."""
        version = self.config.datastore_version
        start = parent_lsn(parent_meta, version) if parent_meta is not None else None
        extra = [f"--incremental-lsn={start}"] if start is not None else []
        # One backup runs at a time: what its working directory holds was left by an agent
        # killed during one.
        streaming = self._streamed(WORK_DIR, DEFAULTS_FILE, "mariadb-backup.log", extra)
        with streaming as (streamed, work):
            yield _Source(streamed, version, work, start)

    @contextlib.contextmanager
    def open_copy(self, name: str) -> Iterator[process.Streamed]:
        """A full copy of the running server for a new replica (``restore`` takes it): a full
        backup whose working directory, defaults file and log are named after ``name``, so it
        runs beside backups and other copies (the server has one wait for another's backup
        stages). Raises CommandFailed when the tool cannot start."""
        with self._streamed(name, f"{name}.cnf", f"{name}.log", []) as (streamed, _work):
            yield streamed
        # Read to its end (a failed tool raises there): its log holds nothing worth keeping,
        # and every copy has one of its own.
        (self.config.log_dir / f"{name}.log").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _streamed(
        self, work_name: str, defaults_name: str, log_name: str, extra: list[str]
    ) -> Iterator[tuple[process.Streamed, Path]]:
        """mariadb-backup streaming a backup of the running server (``extra`` arguments
        added), with its working directory ``work_name`` under the tmpdir and its defaults
        file ``defaults_name`` under conf/, both removed afterwards."""
        tool = beside_server(self.server.bin_dir, TOOL)
        tmp = conf.tmp_dir(self.config)
        tmp.mkdir(mode=0o700, exist_ok=True)
        work = tmp / work_name
        defaults = self.config.conf_dir / defaults_name
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
                *extra,
            ]
            errors = self.config.log_dir / log_name
            with process.stream_out(argv, errors=errors, cwd=work) as streamed:
                yield streamed, work
        finally:
            defaults.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        """Rebuild the data directory from a full backup and the incrementals on top of it,
        oldest first, reading each piece's stream in that order. Raises GuestError for a
        chain that does not hold together (before anything is touched) and when a tool
        fails, CommandFailed when mbstream fails, and what reading a stream raises."""
        check_chain([piece.meta for piece in pieces], self.config.datastore_version)
        data = self.config.data_dir
        self.server.empty_data_dir()
        self._extract(pieces[0], data)
        self._prepare(data)
        if len(pieces) > 1:
            work = conf.tmp_dir(self.config) / RESTORE_DIR
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(mode=0o700, parents=True)
            try:
                for number, piece in enumerate(pieces[1:], start=1):
                    delta = work / f"incremental-{number}"
                    delta.mkdir(mode=0o700)
                    self._extract(piece, delta)
                    self._prepare(data, delta)
                    # Applied: its copy is no longer needed, and the next may be as big.
                    shutil.rmtree(delta)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        make_private(data)
        LOG.info("restored the data directory from %d mariadb-backup stream(s)", len(pieces))

    def _extract(self, piece: RestoreSource, target: Path) -> None:
        """Unpack one piece's stream into the empty directory ``target``. Raises GuestError
        when what it holds is not the mariadb-backup directory its meta describes."""
        # mbstream skips names that are absolute or hold "..": nothing lands outside.
        process.stream_in(
            [beside_server(self.server.bin_dir, EXTRACT), "--extract", f"--directory={target}"],
            piece.chunks,
            errors=self.config.log_dir / "restore.log",
        )
        try:
            found = read_checkpoints((target / CHECKPOINTS).read_text())
        except OSError:
            found = {}
        if not (target / BACKUP_CNF).is_file() or not found:
            raise GuestError("the restored backup holds no mariadb-backup data directory")
        check_extracted(found, piece.meta)

    def _prepare(self, data: Path, incremental: Path | None = None) -> None:
        """Apply the copied redo log or, with ``incremental``, that backup's changed pages and
        redo log onto ``data``. Raises GuestError when mariadb-backup fails."""
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
        if incremental is not None:
            argv.append(f"--incremental-dir={incremental}")
        what = (
            "an incremental backup onto the restored one" if incremental else "the restored backup"
        )
        try:
            process.run(argv, timeout=PREPARE_TIMEOUT, cwd=data)
        except CommandFailed as exc:
            raise GuestError(f"cannot prepare {what}: {exc.message}") from exc
