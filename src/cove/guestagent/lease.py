"""The lease a replication group's primary holds through its guest agent ("Replication and
failover" in docs/architecture.md).

A server that takes writes in a replication group does so only while its agent holds the
group's lease: :class:`LeaseKeeper` renews it through the conductor every ``LEASE_RENEW``
seconds and fences the server (``DatastoreManager.fence``: it takes no more writes, for good)
when the conductor answers that another instance is the primary, or when the agent's own
deadline (``domain.failover.AgentLease``, counted from when the last accepted renewal was
*sent*) passes without a renewal. The task managers' coordinator promotes a replica only once
the lease has lapsed in the control database, which is always after that deadline.

An agent remembers that its instance was a group's primary (a marker beside the server's
configuration), so a new agent of an old primary, after a crash of its host or a fence that
killed it, asks before it starts the server: it starts it only when the conductor grants the
lease or says the instance is standalone. Replicas and standalone instances start at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cove.common.errors import CoveError
from cove.domain.failover import LEASE_RENEW, AgentLease, LeaseAnswer, LeaseGrant
from cove.guestagent.datastores.base import DatastoreManager
from cove.rpc import RequestContext
from cove.rpc.conductor import ConductorClient

LOG = logging.getLogger(__name__)

#: The marker of an instance that was a group's primary when it last asked.
GROUP_MARKER = "replication-group"
#: How often the watchdog looks at the lease's deadline (seconds).
WATCHDOG = 0.05
#: How often an instance that is in no group asks whether it has become a group's primary.
IDLE_POLL = 5.0


class LeaseKeeper:
    def __init__(
        self,
        manager: DatastoreManager,
        conductor: ConductorClient,
        instance_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manager = manager
        self.conductor = conductor
        self.instance_id = instance_id
        self.clock = clock
        self._marker = manager.config.conf_dir / GROUP_MARKER
        self._lease = AgentLease(None)
        self._epoch: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: The group's automatic failover, as the last grant said.
        self.auto_failover = True

    @property
    def grouped(self) -> bool:
        """Whether the instance was a group's primary when it last asked."""
        return self._marker.is_file()

    def needs_lease(self) -> bool:
        """Whether the server may take writes only under the lease: a prepared, unfenced
        primary (not a replica) of a group."""
        manager = self.manager
        return (
            manager.replication is not None
            and manager.prepared
            and not manager.fenced
            and not manager.is_replica
            and self.grouped
        )

    def holds(self) -> bool:
        """Whether the agent holds the lease right now, by its own clock."""
        return self.needs_lease() and not self._lease.fenced(self.clock())

    def forget(self) -> None:
        """Start afresh after a change of role (a promotion, a rejoin): the next renewal
        carries no epoch and is the first of the new role."""
        self._epoch = None
        self._lease = AgentLease(None)
        self._wake.set()

    def assume_held(self) -> None:
        """Count the lease as renewed now, for a server that already takes writes (one a new
        agent adopted, or one unfenced): unless a renewal is granted within the deadline, the
        watchdog fences it."""
        if self.needs_lease():
            self._lease = AgentLease(self.clock())
        self._wake.set()

    def run_watchdog(self) -> None:
        """Fence the server the moment the lease's deadline passes, whatever a renewal under
        way is waiting for (on its own thread: a renewal may wait a second for the conductor,
        and reading the position for the server)."""
        while not self._stop.wait(WATCHDOG):
            lease = self._lease
            if lease.sent_at is None or not lease.fenced(self.clock()):
                continue
            if self.needs_lease():
                self._fence("the lease lapsed")

    def wake(self) -> None:
        """Renew now rather than at the next interval (the instance may have just become a
        group's primary)."""
        self._wake.set()

    def start_when_allowed(self, start: Callable[[], None]) -> None:
        """Run ``start`` (the server's start at the agent's start) once the server may take
        writes: at once for a replica or an instance in no group, after the conductor granted
        the lease for a group's primary; never for one whose place was taken (it is fenced
        instead). Blocks until then, asking again while the conductor does not answer."""
        while not self._stop.is_set():
            if not self.needs_lease():
                start()
                return
            grant = self._renew()
            if grant is not None and grant.answer is not LeaseAnswer.REPLICA:
                start()
                return
            if grant is not None:
                return  # fenced by _renew: the server stays stopped
            self._stop.wait(LEASE_RENEW)

    def run(self) -> None:
        """Renew the lease while the agent runs (on its own thread)."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                LOG.exception("the lease check failed")
            self._wake.wait(LEASE_RENEW if self.needs_lease() else IDLE_POLL)
            self._wake.clear()

    def tick(self) -> None:
        """One renewal, and the fence when the lease is lost."""
        manager = self.manager
        if manager.replication is None or not manager.prepared or manager.fenced:
            return
        if manager.is_replica:
            return
        grant = self._renew()
        # Only a lease held in this agent's life can lapse here: a primary that has not had
        # one yet (still waiting to start, or just promoted) takes writes under no lease the
        # coordinator counts on, and a refusal fences it at once anyway (_renew).
        held = self._lease.sent_at is not None
        if held and self.needs_lease() and self._lease.fenced(self.clock()):
            self._fence(
                "the lease lapsed"
                if grant is None
                else f"the lease could not be renewed ({grant.answer.value})"
            )

    def _renew(self) -> LeaseGrant | None:
        """Ask the conductor; None when it did not answer. Fences the server when another
        instance is the primary."""
        position = self._position()
        sent = self.clock()
        try:
            grant = self.conductor.renew_lease(
                RequestContext(), self.instance_id, self._epoch, position
            )
        except CoveError as exc:
            LOG.warning("cannot renew the lease: %s", exc.message)
            return None
        if grant.answer is LeaseAnswer.GRANTED:
            if not self.grouped:
                self._marker.write_text("primary\n")
                LOG.info("the instance is its replication group's primary (epoch %s)", grant.epoch)
            self._lease = AgentLease(sent)
            self._epoch = grant.epoch
            self.auto_failover = grant.auto_failover
        elif grant.answer is LeaseAnswer.STANDALONE:
            if self.grouped:
                LOG.info("the instance is in no replication group any more")
            self._marker.unlink(missing_ok=True)
            self._lease = AgentLease(None)
            self._epoch = None
        elif not self.manager.is_replica and self.manager.replication is not None:
            self._fence("another instance is its group's primary")
        return grant

    def fence_after_crash(self, what: str) -> None:
        """The primary's server exited by itself: keep it down (fenced) and stop renewing."""
        self._fence(f"the server stopped unexpectedly ({what})")

    def _position(self) -> int | None:
        """How far the primary has written, for the record a failover compares replicas
        with; None when it cannot tell (or is no group's primary yet)."""
        engine = self.manager.replication
        if engine is None or not self.needs_lease():
            return None
        try:
            return engine.state().position
        except CoveError:
            return None

    def _fence(self, why: str) -> None:
        if self.manager.fenced:
            return
        LOG.warning("fencing the server: %s", why)
        try:
            self.manager.fence()
        except CoveError as exc:
            LOG.error("could not fence the server: %s", exc.message)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
