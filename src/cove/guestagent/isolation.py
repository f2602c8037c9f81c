"""What the kernel enforces on the instance, as its agent finds it at each heartbeat: its own
control group's limits and usage (``cove.common.cgroups``) and the volume its files live on
(the instance directory, when the compute driver mounted a filesystem of its own there).

Two changes are reported to the conductor besides: processes killed by the kernel at the
memory limit (a ``server`` report, ``out_of_memory``), and the volume filling up or having
room again (a ``volume`` report, ``full`` or ``ok``; the fault it sets tells the tenant why
writes fail, and growing the volume clears it).

A full volume is guarded, so that it costs refused writes and nothing else: the agent keeps a
reserve file on the volume (``RESERVE``, a sixteenth of it up to 64 MB, allocated for real)
while there is room. When the free space falls under the edge, the reserve goes at once (a
server that could not write its log, PostgreSQL's WAL, can then restart and serve reads) and
the server is told to refuse tenants' writes (``DatastoreManager.refuse_writes``, asked
again at each look until it holds; in a thread of its own, as a server may take seconds to
answer with its disk full, and under the agent's operation lock, never waiting for it);
once the volume has room again (it was grown), writes are taken again and the reserve is made
anew. Each heartbeat says whether the volume is full (``Isolation.volume_full``), so a lost
report does not leave the conductor's fault behind.
"""

from __future__ import annotations

import logging
import os
import pwd
import threading
from collections.abc import Callable
from pathlib import Path

from cove.common import cgroups
from cove.common.errors import CoveError
from cove.common.service_user import is_instance_user_name
from cove.domain.guest import (
    SERVER_REPORT,
    VOLUME_REPORT,
    Isolation,
    ServerOutcome,
    VolumeOutcome,
)
from cove.guestagent.datastores.base import DatastoreManager

#: A volume with less free space than this share of it (and at least FULL_MB) reads as full;
#: it reads as having room again at twice that, so a volume on the edge does not flap.
FULL_SHARE = 0.02
FULL_MB = 16
#: While full, the report is sent again every so many guard looks (a lost one is not final).
REPEAT = 150  # every 30 s
#: Seconds between two looks at the volume's free space: a writer fills the edge (2% of the
#: volume) in about this long at a few hundred MB/s, so the guard comes before the disk is full.
GUARD_INTERVAL = 0.2
#: The reserve file, in the instance directory; its size is the volume's / RESERVE_SHARE,
#: at most RESERVE_MB.
RESERVE = "volume-reserve"
RESERVE_SHARE = 16
RESERVE_MB = 64

LOG = logging.getLogger(__name__)


def _user_name() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def volume_of(root: Path) -> tuple[int, int] | None:
    """(size, used) in MiB of the filesystem mounted on ``root``; None when ``root`` is no
    mount point of its own."""
    try:
        if not os.path.ismount(root):
            return None
        st = os.statvfs(root)
    except OSError:
        return None
    size = st.f_blocks * st.f_frsize >> 20
    return size, size - (st.f_bavail * st.f_frsize >> 20)


def _mb(value: int | None) -> int | None:
    return None if value is None else value >> 20


class IsolationWatch:
    def __init__(
        self,
        manager: DatastoreManager,
        report: Callable[[str, str, str], None],
        op_lock: threading.Lock | None = None,
    ) -> None:
        self.manager = manager
        self.op_lock = op_lock or threading.Lock()
        self.instance_id = manager.config.instance_id
        self.root = manager.config.root
        self.reserve = self.root / RESERVE
        self.report = report
        self._oom_kills: int | None = None
        self._refusing: threading.Thread | None = None
        self._room_untold = False
        # A full volume found by an earlier agent stays so until there is room.
        self._full = manager.writes_refused
        self._looks = 0

    def run_guard(self, stop: threading.Event) -> None:
        """Look at the volume's free space every GUARD_INTERVAL until ``stop``."""
        while not stop.wait(GUARD_INTERVAL):
            self.guard()

    def guard(self) -> None:
        """One look at the volume: the guard of a full one (see the module's notes)."""
        volume = volume_of(self.root)
        if volume is not None:
            self._looks += 1
            self._watch_volume(*volume)

    def look(self) -> Isolation | None:
        """The isolation to send in the heartbeat; reports memory kills since the last look."""
        volume = volume_of(self.root)
        limits = cgroups.own_limits(self.instance_id)
        name = _user_name()
        own_user = name is not None and is_instance_user_name(name)
        if limits is None and volume is None and not own_user:
            return None
        if limits is not None:
            self._watch_kills(limits)
        return Isolation(
            memory_limit_mb=None if limits is None else _mb(limits.memory_bytes),
            cpus=None if limits is None else limits.cpus,
            memory_used_mb=None if limits is None else _mb(limits.memory_used_bytes),
            oom_kills=0 if limits is None else limits.oom_kills,
            volume_mb=None if volume is None else volume[0],
            volume_used_mb=None if volume is None else volume[1],
            # Full until the server takes writes again.
            volume_full=self._full or self.manager.writes_refused,
            own_user=own_user,
        )

    def _watch_kills(self, limits: cgroups.Limits) -> None:
        seen, self._oom_kills = self._oom_kills, limits.oom_kills
        if seen is None or limits.oom_kills <= seen:
            return
        allowed = (
            ""
            if limits.memory_bytes is None
            else (f" (the flavor allows {limits.memory_bytes >> 20} MB)")
        )
        self.report(
            SERVER_REPORT,
            ServerOutcome.OUT_OF_MEMORY.value,
            f"the kernel killed {limits.oom_kills - seen} of its processes{allowed}",
        )

    def _watch_volume(self, size: int, used: int) -> None:
        edge = max(FULL_MB, int(size * FULL_SHARE))
        reserve = min(RESERVE_MB, size // RESERVE_SHARE)
        free = size - used
        # Room again only with space for the reserve and twice the edge: no flapping.
        full = free < edge if not self._full else free < 2 * edge + reserve
        if full and not self._full:
            LOG.warning("the volume is full (%d of %d MB used)", used, size)
            self.reserve.unlink(missing_ok=True)
        if full and (not self._full or self._looks % REPEAT == 0):
            self.report(
                VOLUME_REPORT,
                VolumeOutcome.FULL.value,
                f"{used} of {size} MB used; writes fail until the volume is resized",
            )
        if not full and self._full:
            LOG.info("the volume has room again (%d of %d MB used)", used, size)
            self._room_untold = True
        self._full = full
        if full != self.manager.writes_refused:
            self._refuse_writes(full)
        elif not full and self._room_untold:
            # Only once the server takes writes again: the fault goes with this report.
            self.report(VOLUME_REPORT, VolumeOutcome.OK.value, f"{used} of {size} MB used")
            self._room_untold = False
        if not full:
            self._keep_reserve(reserve)

    def _refuse_writes(self, refuse: bool) -> None:
        """Off the heartbeat's thread; asked again at the next look when it fails, or when an
        operation holds the lock."""
        if self._refusing is not None and self._refusing.is_alive():
            return
        self._refusing = threading.Thread(
            target=self._set_refused, args=(refuse,), name="refuse-writes", daemon=True
        )
        self._refusing.start()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait for a change of the server's writes under way."""
        if self._refusing is not None:
            self._refusing.join(timeout)

    def _set_refused(self, refuse: bool) -> None:
        if not self.op_lock.acquire(blocking=False):
            return
        try:
            self.manager.refuse_writes(refuse)
        except (CoveError, OSError) as exc:
            LOG.error("cannot have the server %s writes: %s", "refuse" if refuse else "take", exc)
        finally:
            self.op_lock.release()

    def _keep_reserve(self, mb: int) -> None:
        """Allocate the reserve when it is missing or smaller than ``mb``."""
        try:
            if self.reserve.exists() and self.reserve.stat().st_size >= mb << 20:
                return
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.posix_fallocate(fd, 0, mb << 20)
            finally:
                os.close(fd)
        except OSError as exc:
            LOG.warning("cannot keep the volume's reserve: %s", exc.strerror)
