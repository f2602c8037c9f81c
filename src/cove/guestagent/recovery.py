"""Bringing back a database server that exited without being asked to.

The agent is its server's parent, so it sees such an exit at once (``cove.guestagent.child``),
and :class:`Recovery` starts the server again: the first time at once, later times after growing
pauses. When the server has had to be started :data:`RESTART_DELAYS`-many times within
:data:`RESTART_WINDOW` seconds and still does not run, the agent gives up; from then on only an
intended start (a restart asked through the API) brings the server back. An intended stop never
gets here: the server controller passes on only exits it did not ask for, and the manager's
``recover`` starts nothing once a stop has been asked.

Every step is reported to the conductor as ``report(operation=SERVER_REPORT, outcome,
details)`` (``cove.domain.guest``):

* ``crashed``: the server exited; ``details`` say how ("PostgreSQL was killed by SIGKILL");
* ``recovered``: it answers again (after an automatic restart, or a restart asked meanwhile);
* ``gave_up``: it could not be brought back; ``details`` carry the last start's error.

Committed data comes back with the server: PostgreSQL replays its WAL, InnoDB its redo log, and
Redis loads its append-only file (see docs/operator-guide.md for what each keeps).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from cove.common.errors import CoveError
from cove.domain.guest import ServerOutcome
from cove.domain.status import GuestStatus
from cove.guestagent.datastores.base import DatastoreManager

LOG = logging.getLogger(__name__)

#: The pause before each restart of one crash, in seconds. The first is immediate: most crashes
#: are one-off events (the OOM killer, a stray signal, a bug hit once), and a server that comes
#: straight back loses its clients for no longer than its own recovery takes. The later pauses
#: grow so that a cause that lasts a while (a full disk, memory pressure, a lock file another
#: process still holds) has time to clear without the agent restarting in a tight loop, while
#: a server that can come back is back within a minute (all the pauses add up to 51 s).
RESTART_DELAYS: tuple[float, ...] = (0.0, 1.0, 5.0, 15.0, 30.0)
#: Restarts count together within this many seconds: five restarts in ten minutes mean the
#: server cannot stay up and restarting it more hides a fault that needs an operator. A server
#: that stayed up for this long since its last restart has its whole allowance again.
RESTART_WINDOW = 600.0


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a crashed server, and when to stop trying."""

    delays: tuple[float, ...] = RESTART_DELAYS
    window: float = RESTART_WINDOW

    def next_delay(self, restarts: Sequence[float], now: float) -> float | None:
        """The pause before the next restart, given when the earlier ones were made (monotonic
        seconds); None when ``len(delays)`` of them were made within ``window``: give up."""
        recent = sum(1 for at in restarts if now - at < self.window)
        if recent >= len(self.delays):
            return None
        return self.delays[recent]


#: The policy the agent follows.
DEFAULT_POLICY = RestartPolicy()


class _State(Enum):
    IDLE = "idle"  # the server runs, or was stopped on purpose
    RESTARTING = "restarting"  # a crash is being dealt with: starting, or pausing
    GAVE_UP = "gave_up"  # only an intended start brings the server back


class Recovery:
    """Restarts the server after a crash, under ``op_lock`` (the lock the agent's lifecycle
    RPCs hold, so a restart asked through the API never interleaves with one made here), and
    tells ``report(outcome, details)`` how it went."""

    def __init__(
        self,
        manager: DatastoreManager,
        op_lock: threading.Lock,
        report: Callable[[ServerOutcome, str], None],
        policy: RestartPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manager = manager
        self.policy = policy
        self._op_lock = op_lock
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State.IDLE
        self._restarts: list[float] = []
        self._wake = threading.Event()
        self._closed = False

    @property
    def active(self) -> bool:
        """Whether a crash is being dealt with (a restart or a pause under way)."""
        return self._state is _State.RESTARTING

    @property
    def gave_up(self) -> bool:
        return self._state is _State.GAVE_UP

    def server_exited(self, what: str) -> None:
        """The server exited without being asked to (``what``: how); restart it, in a thread of
        its own. An exit while a crash is being dealt with belongs to that (a start that
        failed), and after giving up only an intended start brings the server back."""
        with self._lock:
            if self._closed or self._state is not _State.IDLE:
                return
            self._state = _State.RESTARTING
        threading.Thread(target=self._run, args=(what,), name="recovery", daemon=True).start()

    def started_on_purpose(self) -> None:
        """The server was started on purpose (a restart asked through the API): the restarts
        made so far no longer count, a pause under way ends, and a give-up is over."""
        with self._lock:
            self._restarts.clear()
            was = self._state
            if was is _State.GAVE_UP:
                self._state = _State.IDLE
            self._wake.set()
        if was is _State.GAVE_UP:
            self._report(ServerOutcome.RECOVERED, "started again by a restart")

    def close(self) -> None:
        """The agent stops: nothing is restarted from now on."""
        with self._lock:
            self._closed = True
            self._wake.set()

    def _run(self, what: str) -> None:
        LOG.warning("%s; restarting it", what)
        self._report(ServerOutcome.CRASHED, f"{what}; restarting it")
        made, error = 0, what
        while True:
            with self._lock:
                if self._closed:
                    self._state = _State.IDLE
                    return
                delay = self.policy.next_delay(self._restarts, self._clock())
                if delay is None:
                    self._state = _State.GAVE_UP
                    break
                self._wake.clear()
            if delay > 0 and self._wake.wait(delay) and self._closed:
                continue  # closed while pausing: the check above ends the loop
            with self._lock:
                self._restarts.append(self._clock())
            made += 1
            try:
                with self._op_lock:
                    if self._closed:
                        continue
                    started = self.manager.recover()
            except CoveError as exc:
                error = exc.message
                LOG.error("restart %d after the crash failed: %s", made, error)
                continue
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                LOG.exception("restart %d after the crash failed", made)
                continue
            with self._lock:
                if started and self.manager.status() is GuestStatus.CRASHED:
                    # It answered and died at once; its exit came while this crash was being
                    # dealt with, so it is dealt with here.
                    error = "it exited again right after it started"
                    continue
                self._state = _State.IDLE
            if started:
                LOG.info("the database server answers again after %d restart(s)", made)
                self._report(ServerOutcome.RECOVERED, f"answers again after {made} restart(s)")
            return
        details = (
            f"{len(self.policy.delays)} restarts within {self.policy.window:.0f} s did not "
            f"keep it running; the last start failed: {error}"
        )
        LOG.error("giving up on the database server: %s", details)
        self._report(ServerOutcome.GAVE_UP, details)
