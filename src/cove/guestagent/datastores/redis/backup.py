"""Redis backups: the tenant's ACL users, then an RDB snapshot from ``redis-cli --rdb``.

Tenant users live in the ACL file, not in the data, so a backup carries both: a header
(:data:`MAGIC`, a 4-byte big-endian length, the ``ACL LIST`` lines of every user but the
agent's own) followed by the RDB that ``redis-cli --rdb -`` receives by asking the server for a
replica's full sync, which Redis 7 streams from a forked child without a file on disk while
the server keeps serving. The agent logs in as its own user over the instance's socket; its
password reaches ``redis-cli`` only through ``REDISCLI_AUTH``.

A restore writes the RDB as the base of Redis 7's multi-part append-only file (the server runs
with ``appendonly yes``, so it loads the AOF manifest, never a ``dump.rdb``) and puts the
tenant's users back after the fresh instance's own admin line in the ACL file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import string
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import redis

from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.datastores.base import BackupSource, RestoreSource
from cove.guestagent.datastores.redis import conf
from cove.guestagent.datastores.redis.server import RedisServer

LOG = logging.getLogger(__name__)

#: What the engine writes in ``meta["format"]``; a restore refuses any other.
FORMAT = "redis-rdb-acl"
#: The first bytes of the engine's stream, before the length of the ACL text.
MAGIC = b"COVEREDIS1\n"
#: Far more users than an instance holds; a longer header is no header of ours.
MAX_ACL_BYTES = 64 << 20
#: Redis 7's multi-part AOF under the default ``appenddirname`` and ``appendfilename``, which
#: tenants may not change (``cove.domain.datastores.redis.DENIED``).
AOF_DIR = "appendonlydir"
BASE_FILE = "appendonly.aof.1.base.rdb"
MANIFEST = "appendonly.aof.manifest"

RDB_MAGIC = b"REDIS"
#: An RDB ends with this opcode and an 8-byte checksum.
_RDB_EOF = 0xFF
_RDB_END = 9
#: A diskless sync ends with a random 40-hex-digit mark, which ``redis-cli --rdb`` writes out
#: and then cuts off with ftruncate, except on stdout (redis/redis#9135), where it stays.
_EOF_MARK = 40
_HEX = frozenset(string.hexdigits.lower().encode())


def header(acl_lines: Sequence[str]) -> bytes:
    """The stream's header for ``acl_lines``; raises GuestError when they do not fit in it."""
    text = "".join(f"{line}\n" for line in acl_lines).encode("utf-8")
    if len(text) > MAX_ACL_BYTES:
        raise GuestError(f"the instance's ACL users take {len(text)} bytes, too many to back up")
    return MAGIC + len(text).to_bytes(4, "big") + text


def rdb_only(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``redis-cli --rdb -``'s output without the diskless sync's end mark, when there is one.

    Raises GuestError when the output does not begin and end as an RDB does (a redis-cli
    that failed half-way also exits non-zero, which ``chunks`` raises). The mark is recognised
    by where the RDB's own end is: 40 hex digits after the end opcode and checksum, which an
    RDB without a mark cannot end with (its end opcode is no hex digit).
    """
    tail = _RDB_END + _EOF_MARK
    held = b""
    started = False
    for chunk in chunks:
        held += chunk
        if not started:
            if len(held) < len(RDB_MAGIC):
                continue
            if not held.startswith(RDB_MAGIC):
                raise GuestError("redis-cli sent no RDB snapshot")
            started = True
        if len(held) > tail:
            yield held[:-tail]
            held = held[-tail:]
    if not started:
        raise GuestError("redis-cli sent no RDB snapshot")
    if len(held) >= tail and held[-tail] == _RDB_EOF and set(held[-_EOF_MARK:]) <= _HEX:
        held = held[:-_EOF_MARK]
    if len(held) < _RDB_END or held[-_RDB_END] != _RDB_EOF:
        raise GuestError("redis-cli's RDB snapshot is cut short")
    yield held


class BackupStream:
    """Reads a restore's chunks: exact byte counts for the header, then the rest as it comes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise GuestError("the backup ends inside its header")
            self._buffer += chunk
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def rest(self) -> Iterator[bytes]:
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()
        yield from self._chunks


def read_header(stream: BackupStream) -> list[str]:
    """The ACL lines of a backup's header. Raises GuestError when the stream has none of ours
    or a line is no user of a tenant's."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise GuestError("not a Cove Redis backup (its header is missing)")
    size = int.from_bytes(stream.read(4), "big")
    if size > MAX_ACL_BYTES:
        raise GuestError("not a Cove Redis backup (its ACL header is too long)")
    try:
        lines = stream.read(size).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise GuestError("the backup's ACL users are not text") from exc
    for line in lines:
        parts = line.split(" ")
        # The ACL file is line-based and the agent's own user is the restoring instance's.
        if (
            len(parts) < 2
            or parts[0] != "user"
            or parts[1] == conf.ADMIN_USER
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in line)
        ):
            raise GuestError("the backup holds an ACL line that is no tenant user")
    if not any(line.split(" ")[1] == conf.ROOT_USER for line in lines):
        # Redis would make a missing default user one with every permission and no password.
        raise GuestError(f"the backup's ACL users lack the {conf.ROOT_USER} user")
    return lines


def restored_acl(current: str, backed_up: Sequence[str]) -> str:
    """The ACL file of a restored instance: its own admin line from ``current``, then the
    backup's users (root's ``default`` included, in place of the fresh one) but a replication
    account, which is a primary's own (its replicas know its password, not the restored
    instance's). Raises GuestError when ``current`` has no admin line."""
    own = [line for line in current.splitlines() if line.split()[:2] == ["user", conf.ADMIN_USER]]
    if len(own) != 1:
        raise GuestError("the instance's ACL file does not hold the agent's user")
    tenants = [line for line in backed_up if line.split(" ")[:2] != ["user", conf.REPLICATION_USER]]
    return "".join(f"{line}\n" for line in (own[0], *tenants))


class _Source:
    def __init__(self, head: bytes, streamed: process.Streamed, version: str) -> None:
        self._head = head
        self._streamed = streamed
        self.meta: dict[str, str] = {"format": FORMAT, "version": version}

    def chunks(self) -> Iterator[bytes]:
        yield self._head
        yield from rdb_only(self._streamed.chunks())


class RedisBackups:
    incremental = False

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def config(self) -> GuestSettings:
        # The server's: new settings reach it (and so this engine) without another object.
        return self.server.config

    def _cli(self) -> Path:
        beside = Path(self.config.bin_dir) / "redis-cli"
        if beside.is_file():
            return beside
        found = shutil.which("redis-cli")
        if found is None:
            raise GuestError("redis-cli is neither beside redis-server nor on PATH")
        return Path(found)

    def _tenant_acl(self) -> list[str]:
        """``ACL LIST`` without the agent's own user and the replication account. Raises
        GuestError."""
        try:
            with self.server.connect() as client:
                lines = [str(line) for line in client.acl_list()]
        except redis.RedisError as exc:
            # A refusal's text may quote a rule, and so a password hash.
            detail = type(exc).__name__ if isinstance(exc, redis.ResponseError) else str(exc)
            raise GuestError(f"cannot read the Redis ACL users: {detail}") from exc
        agents = [["user", conf.ADMIN_USER], ["user", conf.REPLICATION_USER]]
        return [line for line in lines if line.split(" ")[:2] not in agents]

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        if parent_meta is not None:
            raise GuestError("Redis backups are full backups only")
        acl = self._tenant_acl()
        head = header(acl)
        argv: list[str | Path] = [
            self._cli(),
            "-s",
            self.server.socket,
            "--user",
            conf.ADMIN_USER,
            "--rdb",
            "-",
        ]
        # A small environment of its own: the agent's may hold what redis-cli has no use for.
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "REDISCLI_AUTH": self.server.admin_password(),
        }
        errors = self.config.log_dir / "redis-cli-backup.log"
        LOG.info("backing up %d ACL user(s) and an RDB snapshot", len(acl))
        with process.stream_out(argv, errors=errors, env=env) as streamed:
            yield _Source(head, streamed, self.config.datastore_version)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        if len(pieces) != 1:
            raise GuestError("a Redis restore takes exactly one backup")
        piece = pieces[0]
        if piece.meta.get("format") != FORMAT:
            raise GuestError(f"not a Redis backup (format {piece.meta.get('format')})")
        if piece.meta.get("version") != self.config.datastore_version:
            raise GuestError(
                f"the backup was made by Redis {piece.meta.get('version')}, this instance "
                f"runs {self.config.datastore_version}"
            )
        stream = BackupStream(piece.chunks)
        acl = read_header(stream)
        try:
            current = self.server.acl_file.read_text()
        except OSError as exc:
            raise GuestError(f"cannot read the instance's ACL file: {exc.strerror}") from exc
        users = restored_acl(current, acl)
        self._write_aof(stream.rest())
        tmp = self.server.acl_file.with_name(f".{conf.ACL_FILE}.new")
        conf.write_private(tmp, users)
        tmp.replace(self.server.acl_file)
        LOG.info("restored an RDB snapshot and %d ACL user(s)", len(acl))

    def _write_aof(self, rdb: Iterable[bytes]) -> None:
        """Make ``rdb`` the only data of the (emptied) data directory, as the base of a
        multi-part AOF: Redis loads it on start and appends its first increment after it.
        Raises GuestError when it is no RDB, and what reading ``rdb`` raises."""
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        aof = data / AOF_DIR
        aof.mkdir(mode=0o700)
        fd = os.open(aof / BASE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            start = b""
            for chunk in rdb:
                if len(start) < len(RDB_MAGIC):
                    start += chunk[: len(RDB_MAGIC)]
                    if len(start) >= len(RDB_MAGIC) and not start.startswith(RDB_MAGIC):
                        raise GuestError("the backup holds no RDB snapshot")
                out.write(chunk)
            if len(start) < len(RDB_MAGIC):
                raise GuestError("the backup holds no RDB snapshot")
            out.flush()
            os.fsync(out.fileno())
        # Written last: a manifest names only a whole base file.
        conf.write_private(aof / MANIFEST, f"file {BASE_FILE} seq 1 type b\n")
