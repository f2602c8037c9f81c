"""What the control plane and guest agents tell each other about replication, as typed values.

A replica is made from its source (its primary) over the network: the source's guest agent
answers a ``ReplicaSource`` (``replication_source``: where to connect and with which account,
kept the same across calls), and the task manager hands it to the new replica's ``prepare``.
The password travels only inside RPC messages and ends up in files of mode 0600 (the source's
record of it, and the replica's passfile, which its ``primary_conninfo`` names); it never
appears in argv, logs, server settings or API answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ReplicaSource:
    """Where a replica copies and then streams its data from."""

    #: The source (primary) instance.
    instance_id: str
    host: str
    port: int
    #: The account the source keeps for its replicas (replication only: no database login,
    #: though a replication connection streams every byte of the server).
    user: str
    password: str = field(repr=False)
    #: Where the source offers one copy of its data, for datastores whose copying tool must
    #: run beside the source's server (MariaDB's ``mariadb-backup``): a port on ``host`` that
    #: streams the copy to the first connection presenting ``copy_token``. None where the
    #: replica copies over the replication connection itself (PostgreSQL, Redis).
    copy_port: int | None = None
    copy_token: str = field(default="", repr=False)


class Role(StrEnum):
    """A server's place in replication: it takes writes (and may have replicas), or it is a
    read-only standby of another. Whether a writable server is a standalone instance is the
    control plane's to say (it has no replicas)."""

    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(frozen=True)
class ReplicationState:
    """What a guest says of its server's place in replication (``replication_state``)."""

    role: Role
    #: How far the server has written (a primary) or replayed (a replica), in the datastore's
    #: own unit (PostgreSQL: the LSN as a byte position); None when it cannot tell.
    position: int | None = None
    #: Whether a replica receives from its source right now.
    streaming: bool = False
