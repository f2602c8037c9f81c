"""The decisions of a replication group's failover, as pure functions (see "Replication and
failover" in docs/architecture.md).

``choose`` picks the replica to promote from frozen facts about the group; ``AgentLease``
says, from the agent's own monotonic clock, when a primary's agent must fence itself. Nothing
here reads a clock, a database or a server: callers pass what they observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: How long a renewed lease lasts in the control database (seconds).
LEASE_TTL = 1.5
#: How often a primary's agent renews its lease (seconds).
LEASE_RENEW = 0.3
#: How much earlier than the lease's end the agent fences itself (seconds): room for the
#: time a stop of the server takes.
FENCE_MARGIN = 0.3


@dataclass(frozen=True)
class ReplicaFact:
    """One replica of the group, as the coordinator last saw it."""

    instance_id: str
    #: Its agent reports (a fresh heartbeat) and its server replicates.
    reporting: bool
    #: How far it replayed, in the datastore's unit (comparable within the group); None when
    #: it could not tell.
    position: int | None
    weight: int = 100


@dataclass(frozen=True)
class GroupFacts:
    """The group at the moment of the decision."""

    replicas: tuple[ReplicaFact, ...]
    #: The primary's last known written position; None when never reported.
    primary_position: int | None
    #: The most a promoted replica may be behind ``primary_position``.
    max_lag: int
    #: In synchronous mode, the position of the last acknowledged commit when known: a
    #: replica short of it would lose an acknowledged write.
    acknowledged: int | None = None
    #: Synchronous mode: every acknowledged commit is on at least one replica, so the most
    #: advanced replica has them all, but only if every replica can be asked.
    synchronous: bool = False


@dataclass(frozen=True)
class Choice:
    """The replica to promote (None: none may be) and why; ``behind`` is how far the chosen
    one is behind the primary's last known position (what asynchronous mode may lose)."""

    promote: str | None
    reason: str
    behind: int | None = None


def choose(group: GroupFacts) -> Choice:
    """The replica to promote: among those that report and know their position, the most
    advanced, then the highest weight, then the smallest id (so every coordinator decides
    alike). One further behind the primary than ``max_lag``, or (synchronous mode) short of
    the last acknowledged commit, is never chosen; in synchronous mode none is while a
    replica does not report."""
    silent = sorted(r.instance_id for r in group.replicas if not r.reporting or r.position is None)
    if group.synchronous and silent:
        return Choice(
            None,
            "synchronous mode: " + ", ".join(silent) + " does not report, and may hold "
            "acknowledged writes the others lack",
        )
    candidates = [(r, r.position) for r in group.replicas if r.reporting and r.position is not None]
    if not candidates:
        return Choice(None, "no replica reports its position")
    refused: list[str] = []
    eligible: list[tuple[ReplicaFact, int]] = []
    for replica, position in candidates:
        if group.acknowledged is not None and position < group.acknowledged:
            refused.append(f"{replica.instance_id} misses acknowledged commits")
        elif (
            group.primary_position is not None and group.primary_position - position > group.max_lag
        ):
            refused.append(f"{replica.instance_id} lags beyond the bound")
        else:
            eligible.append((replica, position))
    if not eligible:
        return Choice(None, "no replica may be promoted: " + "; ".join(sorted(refused)))
    best, position = min(eligible, key=lambda e: (-e[1], -e[0].weight, e[0].instance_id))
    behind = None if group.primary_position is None else max(0, group.primary_position - position)
    return Choice(best.instance_id, "the most advanced replica, then the heaviest", behind)


@dataclass(frozen=True)
class AgentLease:
    """A primary agent's view of its lease, on its own monotonic clock.

    ``sent_at`` is when the agent sent the last renewal the control plane accepted: the
    control database's lease ends ``ttl`` after it committed that renewal, which came later,
    so a deadline counted from ``sent_at`` always ends first, whatever the two clocks read.
    """

    sent_at: float | None
    ttl: float = LEASE_TTL
    margin: float = FENCE_MARGIN

    @property
    def deadline(self) -> float | None:
        """When the agent must have stopped taking writes; None before any renewal."""
        return None if self.sent_at is None else self.sent_at + self.ttl - self.margin

    def fenced(self, now: float) -> bool:
        """Whether the agent must stop its server now: it never held the lease, or its
        deadline passed."""
        deadline = self.deadline
        return deadline is None or now >= deadline


class LeaseAnswer(StrEnum):
    """What the conductor answers a guest agent's ``renew_lease``."""

    #: The instance is its group's primary: the lease is extended by ``LEASE_TTL``.
    GRANTED = "granted"
    #: The instance is recorded as a replica: a server of its that takes writes is an old
    #: primary whose place was taken, and must be fenced.
    REPLICA = "replica"
    #: The instance belongs to no replication group: it needs no lease.
    STANDALONE = "standalone"


@dataclass(frozen=True)
class LeaseGrant:
    """The answer to ``renew_lease``; ``epoch`` is the group's (None when standalone)."""

    answer: LeaseAnswer
    epoch: int | None = None
    #: Whether the group fails over by itself (a crashed primary is then not started again
    #: in place: its lease lapses and a replica takes over).
    auto_failover: bool = True
