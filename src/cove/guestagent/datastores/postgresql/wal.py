"""Continuous WAL archiving to the backup store, and fetching it back for a restore.

The server's ``archive_command`` copies each WAL file it finishes into a spool directory beside
the data directory, but only once the spool exists: an instance without backups archives
nothing and its WAL is recycled as before. The first backup of an instance creates the spool
and hands the agent where to ship (``WalArchive``); from then on a thread of the agent seals
each spooled file and stores it under the instance's prefix (``cove.domain.wal`` names it),
then removes it from the spool. The file stays in the spool until it is stored, so a store
that is away for a while loses nothing: the spool grows on the instance's own volume, as
``pg_wal`` would, and drains when the store is back.

Where to ship is kept in the agent's configuration directory (mode 0600, like the server's
other secrets there) so an agent started again goes on shipping without being asked. The key
it seals with is derived for this instance alone; the deployment's backup key never reaches
the instance.

Each stored object's name records the newest commit it holds, read with ``pg_waldump``, so
the control plane knows the point-in-time window from a listing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from cove.common.errors import CoveError, GuestError
from cove.domain import wal
from cove.domain.backups import SealKey, WalArchive, WalRestore
from cove.domain.guest import GuestSettings
from cove.rpc import codec
from cove.storage import open_store
from cove.storage.base import Store
from cove.storage.sealed import Sealed, unsealed

LOG = logging.getLogger(__name__)

#: The spool the server's archive_command copies finished WAL files into (beside the data
#: directory: a base backup must not carry it).
SPOOL = "wal-spool"
#: Where the fetched WAL of a restore waits for the server to replay it.
RESTORED = "wal-restore"
#: The shipping target, in the configuration directory.
STATE = "wal-archive.json"
#: Longest pause between two attempts to reach a store that is away.
MAX_PAUSE = 30.0

_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def archive_command(spool: Path) -> str:
    """The server's archive_command: copy the finished file into ``spool`` (synced, then
    renamed, so the agent never ships half a file) when the spool exists; otherwise nothing
    to do."""
    s = shlex.quote(str(spool))
    return f"test ! -d {s} || {{ cp %p {s}/%f.part && sync {s}/%f.part && mv {s}/%f.part {s}/%f; }}"


def last_commit_us(waldump: Path, segment: Path) -> int:
    """The newest commit recorded in the WAL ``segment``, in µs since the epoch; 0 when it
    holds none. ``pg_waldump`` ends with an error at a record running into the next file,
    which is normal here: what it printed before counts."""
    try:
        proc = subprocess.run(
            [str(waldump), "--rmgr=Transaction", str(segment)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning("cannot read the commits of %s: %s", segment.name, exc)
        return 0
    newest = 0
    for match in _COMMIT.finditer(proc.stdout):
        text = match[1]
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
        moment = datetime.strptime(text, fmt).replace(tzinfo=UTC)
        newest = max(newest, int(moment.timestamp() * 1_000_000))
    return newest


class WalArchiver:
    """Ships the spooled WAL files of one instance to its store (see the module)."""

    def __init__(self, config: GuestSettings, bin_dir: Path) -> None:
        self.spool = config.root / SPOOL
        self._state = config.conf_dir / STATE
        self._instance_id = config.instance_id
        self._waldump = bin_dir / "pg_waldump"
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._target: WalArchive | None = None
        self._store: Store | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: The store's last refusal, for progress messages; empty while shipping works.
        self.last_error = ""

    def configure(self, target: WalArchive) -> None:
        """Ship to ``target`` from now on (kept across agent restarts); creates the spool, so
        the server starts copying finished WAL files. Raises GuestError when it cannot be
        recorded."""
        text = json.dumps(codec.to_wire(target))
        tmp = self._state.with_name(f".{STATE}.new")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            tmp.replace(self._state)
            self.spool.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise GuestError(f"cannot set up WAL archiving: {exc.strerror}") from exc
        with self._lock:
            self._target = target
            self._store = None
        self._start()

    def resume(self) -> None:
        """Go on shipping to the recorded target, if there is one (at agent start)."""
        try:
            data = json.loads(self._state.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            LOG.error("cannot read %s; WAL is not shipped until the next backup: %s", STATE, exc)
            return
        target: WalArchive = codec.from_wire(WalArchive, data, "WAL archive")
        with self._lock:
            self._target = target
        self.spool.mkdir(mode=0o700, exist_ok=True)
        self._start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._wake.notify_all()
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="wal-archiver", daemon=True)
            self._thread.start()

    def pending(self) -> list[str]:
        """The spooled WAL files not shipped yet, oldest first."""
        try:
            names = os.listdir(self.spool)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if wal.is_wal_file(n))

    def wait_shipped(self, wal_file: str, timeout: float, running: Callable[[], bool]) -> None:
        """Wait until ``wal_file`` was shipped, the server having archived it (``running``
        says whether the server still runs). Raises GuestError on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._shipped_already(wal_file):
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not running():
                    why = f": {self.last_error}" if self.last_error else ""
                    raise GuestError(f"WAL file {wal_file} was not archived in time{why}")
                self._wake.wait(min(left, 1.0))

    def _shipped_already(self, wal_file: str) -> bool:
        """Whether the server archived ``wal_file`` and the spool holds nothing up to it."""
        if (self.spool / wal_file).exists() or (self.spool / f"{wal_file}.part").exists():
            return False
        status = self.spool.parent / "data" / "pg_wal" / "archive_status"
        if (status / f"{wal_file}.ready").exists():
            return False
        return not any(n[8:] <= wal_file[8:] for n in self.pending() if len(n) == 24)

    def _run(self) -> None:
        pause = 1.0
        while True:
            with self._lock:
                if self._stopping:
                    return
                target = self._target
            shipped = 0
            if target is not None:
                try:
                    shipped = self._ship(target)
                    self.last_error = ""
                    pause = 1.0
                except (CoveError, OSError, ValueError) as exc:
                    message = exc.message if isinstance(exc, CoveError) else str(exc)
                    if message != self.last_error:
                        LOG.warning("cannot ship WAL (kept in the spool): %s", message)
                    self.last_error = message
                    pause = min(pause * 2, MAX_PAUSE)
            with self._lock:
                self._wake.notify_all()
                if not shipped and not self._stopping:
                    self._wake.wait(pause)

    def _ship(self, target: WalArchive) -> int:
        """Ship what is spooled now; the number of files shipped."""
        with self._lock:
            if self._store is None:
                self._store = open_store(target.store)
            store = self._store
        shipped = 0
        for name in self.pending():
            path = self.spool / name
            commit = last_commit_us(self._waldump, path) if len(name) == 24 else 0
            sealed = Sealed(_read(path), target.seal)
            data = b"".join(sealed)  # one WAL file (16 MB at most): its name needs the checksum
            key = wal.object_key(
                self._instance_id, name, target.seal.key_id, commit, sealed.checksum
            )
            store.put(key, [data])
            path.unlink()
            shipped += 1
            with self._lock:
                self._wake.notify_all()
        return shipped


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def fetch(restore: WalRestore, objects: list[wal.WalObject], into: Path) -> None:
    """Unseal ``objects`` from the store into ``into`` under their WAL file names, checking
    each. Raises ArtifactMissing, ArtifactDamaged, StoreUnavailable and GuestError (no key)."""
    keys: dict[str, SealKey] = {k.key_id: k for k in restore.keys}
    store = open_store(restore.store)
    into.mkdir(mode=0o700, exist_ok=True)
    for obj in objects:
        seal = keys.get(obj.key_id)
        if seal is None:
            raise GuestError(f"no key {obj.key_id} for the archived WAL file {obj.wal_file}")
        part = into / f"{obj.wal_file}.part"
        with part.open("wb") as fh:
            for chunk in unsealed(store.get(obj.key), seal, obj.checksum):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        part.replace(into / obj.wal_file)
    LOG.info("fetched %d archived WAL file(s) for the restore", len(objects))


def remove_fetched(into: Path) -> None:
    """Remove what ``fetch`` put in ``into``."""
    with contextlib.suppress(FileNotFoundError):
        for entry in into.iterdir():
            entry.unlink()
        into.rmdir()
