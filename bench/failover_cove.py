"""Cove's side of the failover benchmark: a replication group made through the API of a
running Cove, a steady writer, and one kill of the primary's server.

The writer inserts numbered rows (Redis: SADD of numbered members) as fast as one connection
goes and records every acknowledged write. It measures the servers, not HAProxy's hop: on any
error it tries every member's address in turn until one takes the write, as a client with a
list of hosts does. RTO is the time from the SIGKILL to the first write acknowledged by another
member; the writes the old primary acknowledged and the new one lacks are counted as lost.
Detection (kill to the failover record's start) and promotion (start to promoted) come from the
record's times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane

from cove.common.procfs import cmdline
from cove.domain.datastores import datastore as descriptor
from failover_clients import ERRORS, MB, PASSWORD, RETRY, Client, close, wait_for

# -- the writer --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ack:
    n: int
    at: float  # time.monotonic()
    member: str  # the instance id that acknowledged


class Writer(threading.Thread):
    """Numbered writes as fast as one connection goes; on any error, the members' addresses are
    tried in turn (the next one first) until one takes a write. Every acknowledged write is kept in
    ``acks`` (appended only: readers index it while it grows)."""

    def __init__(self, client: Client, members: dict[str, str]) -> None:
        super().__init__(name=f"writer-{client.name}", daemon=True)
        self.client, self.members = client, members
        self.acks: list[Ack] = []
        self.failed = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        ids = list(self.members)
        conn, turn, misses, n = None, 0, 0, 0
        while not self._halt.is_set():
            member = ids[turn % len(ids)]
            if conn is None:
                with contextlib.suppress(*ERRORS):
                    conn = self.client.connect(self.members[member], self.client.port)
            if conn is not None:
                n += 1
                try:
                    self.client.insert(conn, n)
                    self.acks.append(Ack(n, time.monotonic(), member))
                    misses = 0
                    continue
                except ERRORS:
                    self.failed += 1
                    close(conn)
                    conn = None
            # This member failed: the next one, and a pause after each full round.
            turn, misses = turn + 1, misses + 1
            if misses % len(ids) == 0:
                time.sleep(RETRY)
        if conn is not None:
            close(conn)

    def first_ack(self, since: int, other_than: str, timeout: float) -> tuple[int, Ack]:
        """The first acknowledgement from index ``since`` on by a member other than
        ``other_than``, and its index."""
        seen = since

        def found() -> tuple[int, Ack] | None:
            nonlocal seen
            acks = self.acks
            for index in range(seen, len(acks)):
                if acks[index].member != other_than:
                    return index, acks[index]
            seen = len(acks)
            if not self.is_alive():
                raise RuntimeError("the writer stopped")
            return None

        return wait_for(found, timeout, "a write acknowledged by another member", RETRY)  # type: ignore[no-any-return]


# -- the group and one failover ---------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One datastore's measurements (seconds, writes); ``error`` when it stopped short."""

    name: str
    rto: list[float] = dataclasses.field(default_factory=list)
    detect: list[float] = dataclasses.field(default_factory=list)
    promote: list[float] = dataclasses.field(default_factory=list)
    rejoin: list[float] = dataclasses.field(default_factory=list)
    lost: list[int] = dataclasses.field(default_factory=list)
    lost_bytes: list[int | None] = dataclasses.field(default_factory=list)
    acked: int = 0
    floor: list[float] = dataclasses.field(default_factory=list)
    copy_cove: list[float] = dataclasses.field(default_factory=list)
    copy_hand: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None


def epoch_of(stamp: str) -> float:
    """A failover record's time (UTC, as the API shows it) as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


class Group:
    """A replication group made through the API of a running Cove, and its members'
    addresses (instance id to address; the first is the first primary)."""

    def __init__(self, plane: ControlPlane, client: Client) -> None:
        self.plane, self.client = plane, client
        self.members: dict[str, str] = {}

    def view(self, iid: str) -> dict[str, Any]:
        resp = self.plane.http.get(f"/instances/{iid}")
        resp.raise_for_status()
        return resp.json()["instance"]  # type: ignore[no-any-return]

    def active(self, iid: str, timeout: float = 300) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            inst = self.view(iid)
            if inst["status"] == "ERROR":
                raise RuntimeError(f"instance {iid} went to ERROR: {inst.get('fault')}")
            return inst if inst["status"] == "ACTIVE" else None

        return wait_for(check, timeout, f"instance {iid} ACTIVE")  # type: ignore[no-any-return]

    def failovers(self, iid: str) -> list[dict[str, Any]]:
        resp = self.plane.http.get(f"/instances/{iid}/failovers")
        resp.raise_for_status()
        return resp.json()["failovers"]  # type: ignore[no-any-return]

    def primary(self) -> str:
        """The member the API names as primary (no ``replica_of``)."""
        found = [i for i in self.members if "replica_of" not in self.view(i)]
        if len(found) != 1:
            raise RuntimeError(f"the API names {len(found)} primaries: {found}")
        return found[0]

    def create_primary(self, size_mb: int) -> str:
        name = self.client.name
        spec: dict[str, Any] = {
            "name": f"fo-{name}",
            "flavorRef": "1",
            "volume": {"size": max(1, -(-size_mb * 4 // 1024))},
            "datastore": {"type": name},
            "users": [{"name": "app", "password": PASSWORD}],
        }
        if name != "redis":
            spec["databases"] = [{"name": "app"}]
            spec["users"][0]["databases"] = [{"name": "app"}]
        resp = self.plane.http.post("/instances", json={"instance": spec})
        resp.raise_for_status()
        iid: str = resp.json()["instance"]["id"]
        self.members[iid] = self.active(iid)["ip"][0]
        conn = self.client.connect(self.members[iid], self.client.port)
        try:
            self.client.setup(conn)
            self.client.load(conn, size_mb * MB)
        finally:
            close(conn)
        return iid

    def add_replica(self, source: str, number: int) -> float:
        """A replica of ``source`` through the API, until ACTIVE and the data readable on it as
        the tenant: the seconds."""
        start = time.perf_counter()
        body = {"name": f"fo-{self.client.name}-r{number}", "replica_of": source}
        resp = self.plane.http.post("/instances", json={"instance": body})
        resp.raise_for_status()
        new = [r["id"] for r in self.view(source)["replicas"] if r["id"] not in self.members]
        if len(new) != 1:
            raise RuntimeError(f"expected one new replica, the source lists {new}")
        address = self.active(new[0])["ip"][0]
        reads = lambda: self.client.answers(address, self.client.port, self.client.marked)  # noqa: E731
        wait_for(reads, 120, "the data on the replica", 0.01)
        took = time.perf_counter() - start
        self.members[new[0]] = address
        return took

    def settle(self, writer: Writer, primary: str) -> None:
        """Every member ACTIVE, the writer's writes reaching the primary, and every replica
        holding the latest of them."""
        for iid in self.members:
            self.active(iid)

        def on_primary() -> Ack | None:
            last = writer.acks[-1] if writer.acks else None
            return last if last is not None and last.member == primary else None

        latest: Ack = wait_for(on_primary, 60, "a write on the primary")

        def holds(conn: Any) -> bool:
            return latest.n in self.client.present(conn, [latest.n])

        for iid, address in self.members.items():
            if iid != primary:
                reads = lambda a=address: self.client.answers(a, self.client.port, holds)  # noqa: E731
                wait_for(reads, 60, f"the latest write on replica {iid}")

    def delete(self) -> None:
        """Replicas first (a source with replicas cannot be deleted), then the primary."""
        if not self.members:
            return
        try:
            primary = self.primary()
        except Exception:  # the plane's own clean-up deletes in any order
            primary = next(iter(self.members))
        for iid in [*[i for i in self.members if i != primary], primary]:
            self.plane.http.delete(f"/instances/{iid}")
            gone = lambda i=iid: self.plane.http.get(f"/instances/{i}").status_code == 404  # noqa: E731
            wait_for(gone, 180, f"instance {iid} deleted", 0.2)
        self.members.clear()


def server_pid(plane: ControlPlane, iid: str, name: str) -> int | None:
    """The pid in the instance's server's pid file, if that process runs the server."""
    path = (plane.data_dir / "instances" / iid).joinpath(*descriptor(name).stray.pid_file)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    program = {"postgresql": "postgres", "mariadb": "mariadbd", "redis": "redis-server"}[name]
    return pid if program in " ".join(cmdline(pid)) else None


def one_failover(group: Group, writer: Writer, result: Result, term_start: int) -> int:
    """Kill the primary's server, measure until another member takes a write, count the
    writes lost, wait for the rejoin; the index of the new primary's first write."""
    plane, client = group.plane, group.client
    old = group.primary()
    known = {r["id"] for r in group.failovers(old)}
    pid = wait_for(lambda: server_pid(plane, old, client.name), 30, "the primary's server pid")
    since = len(writer.acks)
    os.kill(pid, signal.SIGKILL)
    killed, killed_wall = time.monotonic(), time.time()
    index, first = writer.first_ack(since, old, 60)
    result.rto.append(first.at - killed)
    new = first.member
    term = [a.n for a in writer.acks[term_start:index] if a.member == old]
    conn = client.connect(group.members[new], client.port)
    try:
        result.lost.append(len(set(term) - client.present(conn, term)) if term else 0)
    finally:
        close(conn)

    def record() -> dict[str, Any] | None:
        fresh = [r for r in group.failovers(new) if r["id"] not in known]
        return fresh[0] if fresh and fresh[0]["promoted"] else None

    rec = wait_for(record, 30, "the failover record")
    if (rec["old_primary"], rec["new_primary"]) != (old, new):
        raise RuntimeError(f"the record names another change: {rec}")
    result.detect.append(epoch_of(rec["started"]) - killed_wall)
    result.promote.append(epoch_of(rec["promoted"]) - epoch_of(rec["started"]))
    result.lost_bytes.append(rec["lost_bytes"])
    print(
        f"  kill {len(result.rto)}: RTO {result.rto[-1]:.2f} s (detect {result.detect[-1]:.2f},"
        f" promote {result.promote[-1]:.2f}), lost {result.lost[-1]} of {len(term)}",
        flush=True,
    )

    def rejoined() -> bool:
        state = next(r for r in group.failovers(new) if r["id"] == rec["id"])
        if state["state"] == "failed":
            raise RuntimeError(f"the failover failed: {state['message']}")
        return bool(state["state"] == "done")

    wait_for(rejoined, 300, "the old primary's rejoin", 0.2)
    group.settle(writer, new)
    result.rejoin.append(time.monotonic() - killed)
    print(f"    the old primary rejoined and follows, {result.rejoin[-1]:.1f} s after the kill")
    return index
