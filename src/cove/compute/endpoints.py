"""Stable endpoints of replication groups and clusters, and the published ports of public
instances, served by one HAProxy per host.

Each group has two addresses of its own, on its datastore's port: the read-write endpoint
forwards to the group's primary, the read-only one balances (round robin, health-checked)
over its replicas. A cluster has one address, balanced (least connections, health-checked)
over its members. A public instance has a port of its own on the host's public address,
forwarding to it. The data path stays in HAProxy: a proxy written in Python measured at
about 60 % of direct throughput here.

:meth:`HAProxy.apply` is given the whole wanted state every time (the task manager's
coordinator calls it every 0.2 s) and is cheap when nothing changed. A new primary is only a
new address for a server that exists: it goes through the runtime API socket, which takes
effect at once and drops no other connection. A group, a replica or an address added or
removed is a reload (``-sf`` with the listeners handed over through the socket: about
0.08 s, no connection refused, measured). HAProxy runs daemonized, so it outlives a task
manager's restart (and ``cove up``'s stop, as instances do); it is stopped when nothing is
left to serve. Several task managers of one host take turns through a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cove.common import procfs

LOG = logging.getLogger(__name__)

#: Where Debian's package puts the binary.
HAPROXY = Path("/usr/sbin/haproxy")
#: How long a start or reload may take.
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Backend:
    instance_id: str
    address: str
    port: int


@dataclass(frozen=True)
class GroupEndpoint:
    """What one group's endpoints should forward to."""

    group_id: str
    port: int
    rw_address: str
    ro_address: str
    #: None while the group has no primary that takes writes (the server is set to maint).
    primary: Backend | None
    replicas: tuple[Backend, ...] = ()

    @property
    def key(self) -> str:
        """The group's name in HAProxy's configuration."""
        return self.group_id.replace("-", "")


@dataclass(frozen=True)
class ClusterEndpoint:
    """What one cluster's load-balanced endpoint should forward to: every member that takes
    connections, the least busy first (active-active)."""

    cluster_id: str
    port: int
    address: str
    members: tuple[Backend, ...] = ()
    #: Members kept out of the rotation (being restarted, deleted or built): they take no
    #: new connection.
    out: frozenset[str] = frozenset()
    #: Where each member answers an HTTP check (200: it takes queries); None: a TCP check.
    check_port: int | None = None

    @property
    def key(self) -> str:
        return self.cluster_id.replace("-", "")


@dataclass(frozen=True)
class PublishedEndpoint:
    """An instance published on the host's public address (``access.is_public``): a port
    there forwards to the instance's own address and port."""

    address: str
    port: int
    instance: Backend

    @property
    def key(self) -> str:
        return self.instance.instance_id.replace("-", "")


def max_connections() -> int:
    """As many connections as the process's file limit allows (two descriptors each), at
    most 20,000: HAProxy refuses to start with a ``maxconn`` it cannot hold."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return max(100, min(20000, (limit - 200) // 2))


def render(
    groups: Sequence[GroupEndpoint],
    socket_path: Path,
    user: str | None,
    maxconn: int,
    clusters: Sequence[ClusterEndpoint] = (),
    published: Sequence[PublishedEndpoint] = (),
) -> str:
    """HAProxy's whole configuration for ``groups``, ``clusters`` and ``published``."""
    lines = [
        "# Written by Cove's task manager; rewritten whenever a group changes.",
        "global",
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners",
        f"    maxconn {maxconn}",
    ]
    if user is not None:
        lines.append(f"    user {user}")
    lines += [
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    option tcpka",
    ]
    for group in sorted(groups, key=lambda g: g.group_id):
        key = group.key
        primary = group.primary
        where = f"{primary.address}:{primary.port}" if primary else f"127.0.0.1:{group.port}"
        lines += [
            f"frontend rw_{key}",
            f"    bind {group.rw_address}:{group.port}",
            f"    default_backend rw_{key}",
            f"backend rw_{key}",
            f"    server primary {where}{'' if primary else ' disabled'}"
            " on-marked-down shutdown-sessions",
            f"frontend ro_{key}",
            f"    bind {group.ro_address}:{group.port}",
            f"    default_backend ro_{key}",
            f"backend ro_{key}",
            "    balance roundrobin",
            "    default-server inter 1s fall 2 rise 1",
        ]
        lines += [
            f"    server r_{r.instance_id.replace('-', '')} {r.address}:{r.port} check"
            for r in sorted(group.replicas, key=lambda r: r.instance_id)
        ]
    for cluster in sorted(clusters, key=lambda c: c.cluster_id):
        key = cluster.key
        lines += [
            f"frontend lb_{key}",
            f"    bind {cluster.address}:{cluster.port}",
            f"    default_backend lb_{key}",
            f"backend lb_{key}",
            "    balance leastconn",
            # A member that fails one check (every half second) leaves the rotation, and its
            # clients are cut off rather than left hanging; until then a connection it refuses
            # is tried on another member instead of failing. Two good checks bring it back.
            "    default-server inter 500ms fall 1 rise 2 on-marked-down shutdown-sessions",
            "    timeout check 2s",
            "    option redispatch",
            "    retries 2",
        ]
        check = " check"
        if cluster.check_port is not None:
            # Asked of the member's agent: an open port alone does not take queries.
            lines += ["    option httpchk GET /", "    http-check expect status 200"]
            check = f" check port {cluster.check_port}"
        lines += [
            f"    server m_{m.instance_id.replace('-', '')} {m.address}:{m.port}{check}"
            + (" disabled" if m.instance_id in cluster.out else "")
            for m in sorted(cluster.members, key=lambda m: m.instance_id)
        ]
    for pub in sorted(published, key=lambda p: p.instance.instance_id):
        lines += [
            f"frontend pub_{pub.key}",
            f"    bind {pub.address}:{pub.port}",
            f"    default_backend pub_{pub.key}",
            f"backend pub_{pub.key}",
            f"    server instance {pub.instance.address}:{pub.instance.port}",
        ]
    return "\n".join(lines) + "\n"


def skeleton(
    groups: Sequence[GroupEndpoint],
    clusters: Sequence[ClusterEndpoint] = (),
    published: Sequence[PublishedEndpoint] = (),
) -> tuple[object, ...]:
    """What only a reload can change: everything but the primaries' addresses."""
    return (
        tuple(
            (g.group_id, g.port, g.rw_address, g.ro_address, g.replicas)
            for g in sorted(groups, key=lambda g: g.group_id)
        )
        + tuple(sorted(clusters, key=lambda c: c.cluster_id))
        + tuple(sorted(published, key=lambda p: p.instance.instance_id))
    )


class HAProxy:
    def __init__(self, run_dir: Path, user: str | None = None, binary: Path = HAPROXY) -> None:
        self.run_dir = run_dir
        self.user = user
        self.binary = binary
        self.config = run_dir / "haproxy.cfg"
        self.socket = run_dir / "haproxy.sock"
        self.pid_file = run_dir / "haproxy.pid"
        self._lock = threading.Lock()
        self._applied: tuple[object, ...] | None = None
        self._primaries: dict[str, Backend | None] = {}

    @property
    def available(self) -> bool:
        return self.binary.is_file()

    def apply(
        self,
        groups: Sequence[GroupEndpoint],
        clusters: Sequence[ClusterEndpoint] = (),
        published: Sequence[PublishedEndpoint] = (),
    ) -> None:
        """Serve exactly ``groups``, ``clusters`` and ``published``. Raises OSError or
        subprocess.SubprocessError when HAProxy cannot be started or reloaded (the next call
        tries again)."""
        with self._lock, self._host_lock():
            frame = skeleton(groups, clusters, published)
            primaries = {g.group_id: g.primary for g in groups}
            if frame == self._applied and primaries == self._primaries and self.pid():
                return
            if not groups and not clusters and not published:
                self.stop()
                return
            text = render(groups, self.socket, self.user, max_connections(), clusters, published)
            self.config.write_text(text)
            if frame == self._applied and self.pid():
                for group in groups:
                    if self._primaries.get(group.group_id) != group.primary:
                        self._point(group)
            else:
                self._reload()
            self._applied, self._primaries = frame, primaries

    def _point(self, group: GroupEndpoint) -> None:
        """Give the group's read-write server its new primary through the runtime API."""
        server = f"rw_{group.key}/primary"
        if group.primary is None:
            self._command(f"set server {server} state maint")
        else:
            self._command(
                f"set server {server} addr {group.primary.address} port {group.primary.port}"
            )
            self._command(f"set server {server} state ready")
        # A new address takes new connections only: the old primary's clients are cut off,
        # so none goes on writing to a server that is being replaced.
        self._command(f"shutdown sessions server {server}")
        LOG.info("the read-write endpoint of group %s reaches %s", group.group_id, group.primary)

    def _command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(self.socket))
            conn.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace").strip()
        if answer and not answer.startswith(("IP changed", "no need to change")):
            # Not recorded as applied: the next call tries again.
            raise OSError(f"HAProxy answered {answer!r} to {line!r}")
        return answer

    def _reload(self) -> None:
        old = self.pid()
        argv = [str(self.binary), "-f", str(self.config), "-p", str(self.pid_file), "-D"]
        if old is not None:
            argv += ["-x", str(self.socket), "-sf", str(old)]
        done = subprocess.run(argv, capture_output=True, timeout=START_TIMEOUT, check=False)
        if done.returncode != 0:
            raise subprocess.SubprocessError(
                f"HAProxy did not start: {done.stderr.decode(errors='replace').strip()[-500:]}"
            )
        LOG.info("HAProxy %s (pid %s)", "reloaded" if old else "started", self.pid())

    def pid(self) -> int | None:
        """The running HAProxy's pid (one this host's Cove started), or None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.config) in " ".join(procfs.cmdline(pid)) else None

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            LOG.info("HAProxy stopped: no replication group, cluster or public instance left")
        self.pid_file.unlink(missing_ok=True)
        self._applied, self._primaries = None, {}

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.run_dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield
