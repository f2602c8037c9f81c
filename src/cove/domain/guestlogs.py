"""Guest logs (Trove's log API): the logs each datastore has, the state one is in, and how
its published copy is laid out in the store.

A log is a file the database server writes in the instance's log directory, or a view of one.
PostgreSQL writes a single file: its general log is the file's statement records, its
slow-query log the records of statement durations, and its error log everything else. A USER
log costs the server work and is off until the instance's owner enables it; a SYS log is always
on.

Publishing copies what the file gained since the last publish into the store as parts of at
most ``PART_BYTES`` of whole lines, each sealed with the instance's log key. An index beside the
parts (:class:`LogIndex`, the "metafile") lists them with their sizes, line counts and
checksums; readers list a log by its index, never by the store's keys, so a part stored by a
publish that died before its index was written is never shown (the next publish overwrites it).
Discarding deletes the parts and the index; the next publish starts again at the file's start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

from cove.domain.backups import SealKey, StoreSpec

#: Plain bytes per published part, at most (a part ends at a line's end unless one line alone
#: is longer).
PART_BYTES = 1 << 20
#: Bytes of the log file one publish reads at most; the rest stays pending for the next one, so
#: a call ends within its time limit however large the file grew.
PUBLISH_BYTES = 64 << 20
#: The duration from which a statement is written to a slow-query log, in milliseconds.
SLOW_QUERY_MS = 1000


class LogType(StrEnum):
    USER = "USER"
    SYS = "SYS"


class LogStatus(StrEnum):
    """Trove's words for a log's state (see :func:`status`)."""

    DISABLED = "Disabled"
    ENABLED = "Enabled"
    UNAVAILABLE = "Unavailable"
    READY = "Ready"
    PUBLISHED = "Published"
    PARTIAL = "Partial"
    ROTATED = "Rotated"


class Records(StrEnum):
    """Which records of a shared file a log is (PostgreSQL's); ``ALL`` for a file of its own."""

    ALL = "all"
    STATEMENTS = "statements"
    DURATIONS = "durations"
    OTHERS = "others"


@dataclass(frozen=True)
class LogDef:
    name: str
    type: LogType
    file: str  # in the instance's log directory
    records: Records = Records.ALL


LOGS: Mapping[str, tuple[LogDef, ...]] = {
    "postgresql": (
        LogDef("general", LogType.USER, "postgresql.log", Records.STATEMENTS),
        LogDef("slow_query", LogType.USER, "postgresql.log", Records.DURATIONS),
        LogDef("error", LogType.SYS, "postgresql.log", Records.OTHERS),
    ),
    "mariadb": (
        LogDef("general", LogType.USER, "general.log"),
        LogDef("slow_query", LogType.USER, "slow.log"),
        LogDef("error", LogType.SYS, "mariadb.log"),
    ),
    "redis": (LogDef("error", LogType.SYS, "redis.log"),),
}


def logs_of(datastore: str) -> tuple[LogDef, ...]:
    return LOGS.get(datastore, ())


def find(datastore: str, name: str) -> LogDef:
    """The log ``name`` of ``datastore``. Raises LookupError naming the logs it has."""
    for log in logs_of(datastore):
        if log.name == name:
            return log
    known = ", ".join(log.name for log in logs_of(datastore)) or "none"
    raise LookupError(f"{datastore} has no log named '{name[:64]}' (its logs: {known}).")


@dataclass(frozen=True)
class LogState:
    """What a guest agent reports of one log. ``size`` is the file's (None: no file yet);
    ``offset`` how much of it was published (or looked through, for a view of a shared file);
    ``published`` the plain bytes in the store; ``rotated`` that the file is not the one the
    offset counts in (replaced or cut shorter since)."""

    name: str
    type: LogType
    enabled: bool
    size: int | None
    offset: int
    published: int
    rotated: bool = False

    @property
    def pending(self) -> int:
        """Bytes of the file the next publish reads."""
        if self.size is None:
            return 0
        return self.size if self.rotated else max(0, self.size - self.offset)


def status(state: LogState) -> LogStatus:
    """Trove's status of a log: off, no file yet, replaced since its last publish, or how much
    of it is published."""
    if not state.enabled:
        return LogStatus.DISABLED
    if state.size is None:
        return LogStatus.UNAVAILABLE if state.type is LogType.SYS else LogStatus.ENABLED
    if state.rotated:
        return LogStatus.ROTATED
    if state.published == 0:
        return LogStatus.READY if state.pending else LogStatus.ENABLED
    return LogStatus.PARTIAL if state.pending else LogStatus.PUBLISHED


# -- the published copy ----------------------------------------------------------------------


@dataclass(frozen=True)
class LogTarget:
    """Where an instance publishes its logs: the store (with its credentials) and the
    instance's log key (``cove.common.keys.derive_log_key``), never the deployment's."""

    store: StoreSpec
    seal: SealKey


def prefix(instance_id: str, log: str) -> str:
    """The store keys of a log's parts start with this (Trove's ``prefix``)."""
    return f"{instance_id}/{log}/"


def index_key(instance_id: str, log: str) -> str:
    """The key of a log's index (Trove's ``metafile``), outside its parts' prefix."""
    return f"{instance_id}/{log}.metafile"


def part_key(instance_id: str, log: str, number: int) -> str:
    return f"{prefix(instance_id, log)}log-{number:06d}"


@dataclass(frozen=True)
class LogPart:
    key: str
    bytes: int  # plain
    lines: int
    md5: str  # of the plain bytes: the object's ETag, as Swift gives it
    stored: int  # sealed, as in the store
    checksum: str  # of the stored bytes
    key_id: str  # the backup key the instance's log key came from
    published_at: str  # ISO 8601, UTC, with microseconds; strictly increasing within a log


@dataclass(frozen=True)
class LogIndex:
    parts: tuple[LogPart, ...] = ()

    @property
    def published(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, "parts": [asdict(p) for p in self.parts]}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LogIndex:
        """Raises ValueError when ``data`` is not an index."""
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise ValueError(f"unknown index version {doc.get('version')!r}")
            parts = tuple(LogPart(**p) for p in doc["parts"])
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a log index: {exc}") from None
        for p in parts:
            if not all(isinstance(v, int) for v in (p.bytes, p.lines, p.stored)):
                raise ValueError("not a log index: a part's sizes are not numbers")
            if not all(isinstance(v, str) for v in (p.key, p.md5, p.checksum, p.key_id)):
                raise ValueError("not a log index: a part's names are not text")
            try:
                datetime.fromisoformat(p.published_at)
            except (TypeError, ValueError):
                raise ValueError("not a log index: a part's time is not a time") from None
        return cls(parts)


# -- what a log takes from its file ----------------------------------------------------------

#: A line of PostgreSQL's log: its prefix (``log_line_prefix`` is ``%m [%p] %q%u@%d ``: the
#: time, the process, and for a session its user and database), its level, its message. A line
#: without one is a multi-line message's rest.
_PG_LINE = re.compile(
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[\d+\] (?:\S*@\S* )?([A-Z]+[0-9]?):  (.*)",
    re.DOTALL,
)
#: Levels whose lines belong to the message before them (its detail, hint, the statement that
#: failed), each written with a prefix of its own.
_PG_FOLLOWERS = frozenset({b"DETAIL", b"HINT", b"CONTEXT", b"STATEMENT", b"QUERY", b"LOCATION"})


def _kind(line: bytes) -> Records | None:
    """Which log a line starts a record of; None when it goes with the record before it."""
    match = _PG_LINE.match(line)
    if match is None:
        return None
    level, message = match.groups()
    if level in _PG_FOLLOWERS:
        return None
    if level == b"LOG":
        # A statement sent with parameters (the extended protocol) is logged as executed.
        if message.startswith((b"statement: ", b"execute ")):
            return Records.STATEMENTS
        if message.startswith(b"duration: "):
            return Records.DURATIONS
    return Records.OTHERS


def select(data: bytes, records: Records, keep: bool = False) -> tuple[bytes, bool]:
    """The part of ``data`` (whole lines) that a log of ``records`` shows, and whether the
    record ``data`` ends in is one of its: the next publish starts with that (its lines that
    start no record go with it). ``keep`` is what the previous publish ended with."""
    if records is Records.ALL:
        return data, True
    out: list[bytes] = []
    for line in data.splitlines(keepends=True):
        kind = _kind(line)
        # A line that starts no record goes with the record before it.
        if kind is not None:
            keep = kind is records
        if keep:
            out.append(line)
    return b"".join(out), keep


def whole_lines(data: bytes) -> bytes:
    """``data`` up to its last line's end: a line still being written waits for its end."""
    end = data.rfind(b"\n")
    return data[: end + 1]


def split(data: bytes, limit: int = PART_BYTES) -> list[bytes]:
    """``data`` in pieces of at most ``limit`` bytes, each ending at a line's end unless a
    single line is longer than ``limit``."""
    pieces: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        if end < len(data):
            cut = data.rfind(b"\n", start, end)
            if cut >= start:
                end = cut + 1
        pieces.append(data[start:end])
        start = end
    return pieces
