"""A Redis server as a member of a Redis Cluster ("Clusters" in docs/architecture.md): its
recorded membership, the settings it runs with, and the commands that place it in its
cluster (meeting the other members, serving slots, replicating a master).

Every member keeps the replication account with the cluster's one password (a replica
authenticates to whichever master it follows, and masters change with failovers), and
announces its own address: on loopback aliases the bring-up hangs without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from cove.common.errors import GuestError
from cove.domain.guest import ClusterHealth, ClusterMember, GuestSettings
from cove.guestagent.datastores import membership
from cove.guestagent.datastores.redis import conf

#: How long a member may be unreachable before the others fail it over (milliseconds).
NODE_TIMEOUT_MS = 3000
#: How long a member waits to learn of a master it is told to follow.
LEARN_TIMEOUT = 30.0


def _run(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def record(conf_dir: Path, member: ClusterMember) -> None:
    """Keep ``member``'s membership, and its shared replication password (the file the
    replication account is made from). Raises GuestError."""
    membership.record(conf_dir, member)
    if member.secret:
        conf.write_private(conf_dir / conf.REPLICATION_PASSWORD, member.secret + "\n")


def conf_lines(config: GuestSettings, password: str) -> list[str]:
    """The redis.conf lines of a member: cluster mode, its node file beside the data, its
    own address announced, and how it signs in to a master it replicates."""
    return [
        "cluster-enabled yes\n",
        "cluster-config-file nodes.conf\n",
        f"cluster-announce-ip {config.address}\n",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}\n",
        f"masteruser {conf.REPLICATION_USER}\n",
        f"masterauth {conf.quote(password)}\n",
    ]


def meet(client: redis.Redis, config: GuestSettings, peers: list[str]) -> None:
    """Introduce the server to every other member (gossip does the rest)."""
    for peer in peers:
        if peer != config.address:
            _run(client, "CLUSTER", "MEET", peer, config.port)


def serve_slots(client: redis.Redis, first: int, last: int) -> None:
    """Serve the slots ``first`` to ``last``; those it serves already are left alone."""
    mine = _run(client, "CLUSTER", "MYID")
    owned: set[int] = set()
    for start, end, master, *_ in _run(client, "CLUSTER", "SLOTS"):
        if master[2] == mine:
            owned.update(range(int(start), int(end) + 1))
    wanted = [slot for slot in range(first, last + 1) if slot not in owned]
    if wanted:
        _run(client, "CLUSTER", "ADDSLOTSRANGE", wanted[0], wanted[-1])


def replicate(client: redis.Redis, master: str, port: int) -> None:
    """Replicate the member at ``master``:``port`` once gossip has made it known. Raises
    GuestError when it does not become known in time."""
    deadline = time.monotonic() + LEARN_TIMEOUT
    while True:
        nodes = str(_run(client, "CLUSTER", "NODES"))
        target = node_at(nodes, master, port)
        if target is not None:
            if following(nodes) != target:
                _run(client, "CLUSTER", "REPLICATE", target)
            return
        if time.monotonic() > deadline:
            raise GuestError(f"the cluster member at {master}:{port} did not become known in time")
        _run(client, "CLUSTER", "MEET", master, port)
        time.sleep(0.2)


def node_at(nodes: str, address: str, port: int) -> str | None:
    """The id of the node ``CLUSTER NODES`` lists at ``address``:``port``; None when it is
    not listed."""
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].split("@")[0] == f"{address}:{port}":
            return fields[0]
    return None


def following(nodes: str) -> str | None:
    """The id of the master this server replicates; None when it replicates none."""
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) >= 4 and "myself" in fields[2].split(","):
            return None if fields[3] == "-" else fields[3]
    return None


def health(client: redis.Redis) -> ClusterHealth:
    """How the server sees its cluster: how many members it knows, ``ok`` or ``fail``."""
    info = _run(client, "CLUSTER", "INFO")
    fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
    state = fields.get("cluster_state", "unknown").strip()
    try:
        size = int(fields.get("cluster_known_nodes", "0"))
    except ValueError:
        size = 0
    return ClusterHealth(size=size, state=state, ready=state == "ok")
