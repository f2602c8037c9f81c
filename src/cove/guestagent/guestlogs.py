"""An instance's guest logs (``cove.domain.guestlogs`` says which and how they are laid out):
their state, turning USER logs on and off, publishing them to the store and discarding what
was published.

The agent keeps a record in the configuration directory (``guest-logs.json``): the USER logs
enabled, which the datastore's configuration files are rendered from at every write (so a
restart, a resize or a new configuration group keeps them on), and, per log, how far into which
file it was published. The record is written after the store: a publish that dies half-way is
published again from where the record says, its parts overwritten.

A publish reads at most ``PUBLISH_BYTES`` of the file and only whole lines; what it leaves is
the log's ``pending`` bytes, which the next publish takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from cove.common.errors import ArtifactMissing, BadRequest, NotFound
from cove.common.ids import utcnow
from cove.domain import guestlogs
from cove.domain.guestlogs import LogDef, LogIndex, LogPart, LogState, LogTarget, LogType
from cove.storage import Store, open_store

LOG = logging.getLogger(__name__)

#: The record's name in the configuration directory.
RECORD = "guest-logs.json"


def enabled_logs(conf_dir: Path) -> frozenset[str]:
    """The USER logs enabled on the instance whose configuration directory is ``conf_dir``
    (none when it has no record or an unreadable one)."""
    return frozenset(_read(conf_dir / RECORD).get("enabled", []))


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        LOG.error("cannot read the guest log record %s (%s); starting a new one", path, exc)
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class _Progress:
    """How far into which file a log was published, and whether the record the publish
    ended in was the log's (a view of a shared file goes on with it)."""

    offset: int = 0
    inode: int = 0
    published: int = 0
    keeping: bool = False


class GuestLogs:
    """The logs of one instance. ``apply`` is the datastore's hook that makes the server write
    (or stop writing) its USER logs as the record now says: it rewrites the server's files and
    sets live what the server can change live. Methods are safe to call from several threads."""

    def __init__(
        self,
        datastore: str,
        instance_id: str,
        conf_dir: Path,
        log_dir: Path,
        apply: Callable[[frozenset[str]], None],
    ) -> None:
        self.datastore = datastore
        self.instance_id = instance_id
        self.record = conf_dir / RECORD
        self.log_dir = log_dir
        self._apply = apply
        self._lock = threading.Lock()

    def _def(self, name: str) -> LogDef:
        try:
            return guestlogs.find(self.datastore, name)
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    # -- the record --------------------------------------------------------------------------

    def _load(self) -> tuple[frozenset[str], dict[str, _Progress]]:
        doc = _read(self.record)
        progress: dict[str, _Progress] = {}
        for name, values in (doc.get("logs") or {}).items():
            with contextlib.suppress(TypeError):
                progress[name] = _Progress(**values)
        return frozenset(doc.get("enabled", [])), progress

    def _save(self, enabled: frozenset[str], progress: dict[str, _Progress]) -> None:
        doc = {
            "enabled": sorted(enabled),
            "logs": {name: p.__dict__ for name, p in sorted(progress.items())},
        }
        tmp = self.record.with_name(f".{self.record.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        tmp.replace(self.record)

    # -- state -------------------------------------------------------------------------------

    def _state(self, log: LogDef, enabled: frozenset[str], progress: _Progress) -> LogState:
        try:
            st = os.stat(self.log_dir / log.file)
        except FileNotFoundError:
            size, rotated = None, False
        else:
            size = st.st_size
            rotated = progress.offset > 0 and (
                st.st_ino != progress.inode or st.st_size < progress.offset
            )
        return LogState(
            name=log.name,
            type=log.type,
            enabled=log.type is LogType.SYS or log.name in enabled,
            size=size,
            offset=progress.offset,
            published=progress.published,
            rotated=rotated,
        )

    def states(self) -> list[LogState]:
        enabled, progress = self._load()
        return [
            self._state(log, enabled, progress.get(log.name, _Progress()))
            for log in guestlogs.logs_of(self.datastore)
        ]

    def show(self, name: str) -> LogState:
        log = self._def(name)
        enabled, progress = self._load()
        return self._state(log, enabled, progress.get(name, _Progress()))

    # -- actions -----------------------------------------------------------------------------

    def set_enabled(self, name: str, on: bool) -> LogState:
        """Turn a USER log on or off (idempotent). Raises NotFound, BadRequest for a SYS log,
        and whatever the datastore's hook raises (the record is then put back)."""
        log = self._def(name)
        if log.type is LogType.SYS:
            raise BadRequest(
                f"The {name} log is a system log: it is always on and cannot be "
                f"{'enabled' if on else 'disabled'}."
            )
        with self._lock:
            enabled, progress = self._load()
            wanted = enabled | {name} if on else enabled - {name}
            if wanted != enabled:
                self._save(wanted, progress)
                try:
                    self._apply(wanted)
                except Exception:
                    # The server's files may have been rewritten already: put both back.
                    self._save(enabled, progress)
                    try:
                        self._apply(enabled)
                    except Exception:
                        LOG.exception("cannot put the %s log's settings back", name)
                    raise
                LOG.info("the %s log is %s", name, "on" if on else "off")
            return self._state(log, wanted, progress.get(name, _Progress()))

    def publish(self, name: str, target: LogTarget) -> LogState:
        """Copy what the log gained since its last publish into the store (at most
        PUBLISH_BYTES of its file); a disabled USER log publishes what it wrote while it was
        on. Raises NotFound, StoreUnavailable."""
        log = self._def(name)
        with self._lock:
            enabled, progress = self._load()
            done = progress.get(name, _Progress())
            store = open_store(target.store)
            index = self._index(store, name)
            if index.published != done.published:
                # The store lost or gained parts behind the record's back (a discard by
                # another agent, a restored store): the store is what readers see.
                done = replace(done, published=index.published)
            try:
                fd = os.open(self.log_dir / log.file, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                return self._state(log, enabled, done)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                start, keeping = done.offset, done.keeping
                if st.st_ino != done.inode or st.st_size < start:
                    start, keeping = 0, False  # a new file: it is published from its start
                fh.seek(start)
                read = fh.read(min(st.st_size - start, guestlogs.PUBLISH_BYTES))
            data = guestlogs.whole_lines(read)
            if not data and len(read) == guestlogs.PUBLISH_BYTES:
                data = read  # one line longer than a publish reads: it is cut, not stuck
            shown, keeping = guestlogs.select(data, log.records, keeping)
            parts = list(index.parts)
            for piece in guestlogs.split(shown):
                parts.append(self._put_part(store, target, name, len(parts), piece, parts))
            now = LogIndex(tuple(parts))
            if len(parts) > len(index.parts):
                store.put(guestlogs.index_key(self.instance_id, name), [now.to_json()])
            done = _Progress(start + len(data), st.st_ino, now.published, keeping)
            progress[name] = done
            self._save(enabled, progress)
            LOG.info("published %d bytes of the %s log", len(data), name)
            return self._state(log, enabled, done)

    def _put_part(
        self,
        store: Store,
        target: LogTarget,
        name: str,
        number: int,
        piece: bytes,
        before: list[LogPart],
    ) -> LogPart:
        now = utcnow()
        if before:
            # Readers order parts by time: two publishes in one microsecond still differ.
            last = before[-1].published_at
            if now.isoformat(timespec="microseconds") <= last:
                now = now.fromisoformat(last) + timedelta(microseconds=1)
        # Imported here: zstd and the ciphers cost an agent's start what only a publish needs.
        from cove.storage.sealed import Sealed

        key = guestlogs.part_key(self.instance_id, name, number)
        sealed = Sealed([piece], target.seal)
        stored = store.put(key, sealed)
        return LogPart(
            key=key,
            bytes=len(piece),
            lines=piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1),
            md5=hashlib.md5(piece, usedforsecurity=False).hexdigest(),
            stored=stored,
            checksum=sealed.checksum,
            key_id=target.seal.key_id,
            published_at=now.isoformat(timespec="microseconds"),
        )

    def _index(self, store: Store, name: str) -> LogIndex:
        """The log's index in the store; an empty one when there is none or it is damaged
        (its parts are then published again)."""
        key = guestlogs.index_key(self.instance_id, name)
        try:
            data = b"".join(store.get(key))
        except ArtifactMissing:
            return LogIndex()
        try:
            return LogIndex.from_json(data)
        except ValueError as exc:
            LOG.error("the index of the %s log is damaged (%s); publishing it anew", name, exc)
            return LogIndex()

    def discard(self, name: str, target: LogTarget) -> LogState:
        """Delete the log's published parts and index; the next publish starts at the file's
        start. Idempotent. Raises NotFound, StoreUnavailable."""
        log = self._def(name)
        with self._lock:
            enabled, progress = self._load()
            store = open_store(target.store)
            index = self._index(store, name)
            keys = {p.key for p in index.parts}
            keys.update(store.keys(guestlogs.prefix(self.instance_id, name)))
            store.delete(guestlogs.index_key(self.instance_id, name))
            for key in sorted(keys):
                store.delete(key)
            done = replace(progress.get(name, _Progress()), offset=0, published=0, keeping=False)
            progress[name] = done
            self._save(enabled, progress)
            LOG.info("discarded the published %s log (%d parts)", name, len(keys))
            return self._state(log, enabled, done)
