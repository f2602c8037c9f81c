"""Failover benchmark: how long a replication group takes writes again after its primary's
server is killed, how many acknowledged writes asynchronous replication loses, and how long a
replica takes to make, against floors measured in the same run on the same machine:

* Cove: a private Cove (``cove up``, production heartbeats) runs a group made through its API
  (a primary holding ``--size-mb`` of data, and ``--replicas`` replicas). A writer thread
  inserts numbered rows (Redis: SADD of numbered members) as fast as one connection goes and
  records every acknowledged write. It measures the servers, not HAProxy's hop: on any error the
  writer tries every member's address in turn (tests/e2e write through the endpoint) until
  one takes the write, as a client with a list of
  hosts does. The primary's server is killed with SIGKILL (the pid in its pid file); RTO is the
  time from the kill to the first write acknowledged by another member. The writes the old
  primary acknowledged and the new one lacks are counted as lost. Before the next kill the old
  primary must have rejoined (its failover record ``done``), every member be ACTIVE and every
  replica hold the writer's latest row; the next kill hits the new primary. Detection (kill to
  the failover record's start) and promotion (start to promoted) come from the record's times.
  A datastore whose run fails (a rejoin that never follows, a server that will not start) is
  reported with its error and what it measured so far; the others go on.
* Floor, promotion: a primary and a standby made by hand on private addresses, ports and
  directories, with the same data; the engine's own promotion (PostgreSQL ``pg_promote(wait =>
  true)``, MariaDB ``STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0``, Redis ``REPLICAOF
  NO ONE``) until the same client's write is acknowledged. It has no detection: what Cove adds
  on top is mostly the lease's TTL (1.5 s), by design.
* Replica creation: Cove's (POST with ``replica_of`` until ACTIVE and the data readable on the
  replica, as the tenant) against the same by hand from the hand-made primary: ``pg_basebackup
  -R -X stream``, ``mariadb-backup`` copy, prepare and start with GTID replication,
  ``replicaof`` and a full sync; until the data is readable and replication runs.

Targets (the failover issue): RTO p50 <= 3 s, max <= 5 s; with ``--synchronous`` (PostgreSQL,
MariaDB, two replicas) no acknowledged write lost.

Usage: python bench/failover.py [--datastores postgresql mariadb redis] [--kills 10]
       [--size-mb 64] [--replicas 1] [--floor-rounds 3] [--fast-heartbeats] [--synchronous]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane

from cove.common.procfs import cmdline
from failover_clients import CLIENTS, MB, Client
from failover_cove import Group, Result, Writer, one_failover
from failover_floor import FINDERS, PAIRS, PROMOTION

TARGET_P50, TARGET_MAX = 3.0, 5.0


def cove_side(plane: ControlPlane, client: Client, args: argparse.Namespace, out: Result) -> None:
    group = Group(plane, client)
    writer: Writer | None = None
    try:
        primary = group.create_primary(args.size_mb)
        for number in range(args.replicas):
            out.copy_cove.append(group.add_replica(primary, number + 1))
            print(f"  Cove replica {number + 1}: {out.copy_cove[-1]:.2f} s", flush=True)
        if args.synchronous:
            body = {"instance": {"replication": {"synchronous": True}}}
            resp = plane.http.put(f"/instances/{primary}", json=body)
            if resp.status_code != 202:
                raise RuntimeError(f"synchronous mode refused: {resp.text}")
        writer = Writer(client, group.members)
        writer.start()
        group.settle(writer, primary)
        term_start = 0
        for _ in range(args.kills):
            term_start = one_failover(group, writer, out, term_start)
    finally:
        if writer is not None:
            writer.stop()
            out.acked = len(writer.acks)
        group.delete()


def floor_side(base: Path, client: Client, args: argparse.Namespace, out: Result) -> None:
    pair = PAIRS[client.name](base / client.name, client)
    try:
        pair.start_primary(args.size_mb * MB)
        for number in range(args.floor_rounds):
            out.copy_hand.append(pair.make_standby())
            out.floor.append(pair.promote())
            pair.drop_standby()
            print(
                f"  by hand {number + 1}: standby {out.copy_hand[-1]:.2f} s,"
                f" promotion to a write {out.floor[-1]:.3f} s",
                flush=True,
            )
    finally:
        pair.close()


def measure(plane: ControlPlane, base: Path, name: str, args: argparse.Namespace) -> Result:
    """Both sides for one datastore; an error ends this datastore's run, not the benchmark."""
    out = Result(name)
    print(f"{name}:", flush=True)
    try:
        if not FINDERS[name]():
            raise RuntimeError(f"no {name} server installed")
        floor_side(base, CLIENTS[name], args, out)
        cove_side(plane, CLIENTS[name], args, out)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        print(f"  {name} stopped: {out.error}", flush=True)
        for line in task_errors(plane):
            print(f"    task manager: {line}", flush=True)
    return out


def task_errors(plane: ControlPlane, count: int = 4) -> list[str]:
    """The task manager's last errors, shortened: why a failover or a rejoin went wrong."""
    try:
        lines = (plane.data_dir / "log" / "taskmanager.log").read_text(errors="replace")
    except OSError:
        return []
    errors = [line for line in lines.splitlines() if " ERROR " in line]
    return [line[:400] for line in errors[-count:]]


# -- the report and the run ----------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report_one(r: Result, synchronous: bool) -> None:
    median = statistics.median
    print(f"\n{r.name}" + (f"  (stopped: {r.error.strip()})" if r.error else ""))
    print(f"  {'':34} {'cove':>9} {'floor':>9} {'ratio':>7}  target")
    floor = median(r.floor) if r.floor else None
    if r.rto:
        p50, worst = median(r.rto), max(r.rto)
        floor_s, ratio = (f"{floor:8.3f}s", f"{p50 / floor:7.1f}") if floor else ("", "")
        print(
            f"  {'RTO p50':34} {p50:8.2f}s {floor_s:>9} {ratio:>7}  <= {TARGET_P50:.0f} s: "
            + verdict(p50 <= TARGET_P50)
        )
        print(
            f"  {'RTO max':34} {worst:8.2f}s {'':9} {'':7}  <= {TARGET_MAX:.0f} s: "
            + verdict(worst <= TARGET_MAX)
        )
        print(f"  {'  detection p50 (kill to record)':34} {median(r.detect):8.2f}s")
        print(f"  {'  promotion p50 (record)':34} {median(r.promote):8.2f}s")
        if r.rejoin:
            print(f"  {'rejoin p50 (kill to following)':34} {median(r.rejoin):8.1f}s")
        print(f"  {'writes acknowledged':34} {r.acked:9d}")
        lost_line = f"  {'writes lost, total':34} {sum(r.lost):9d}"
        if synchronous:
            lost_line += f"  {'':19}== 0: " + verdict(sum(r.lost) == 0)
        print(lost_line)
        print(f"  {'writes lost per failover':34} {' '.join(map(str, r.lost))}")
        recorded = " ".join("-" if b is None else str(b) for b in r.lost_bytes)
        print(f"  {'lost_bytes recorded by Cove':34} {recorded}")
    elif floor is not None:
        print(f"  {'promotion floor p50':34} {'':9} {floor:8.3f}s")
    if r.copy_hand:
        hand = median(r.copy_hand)
        cove = median(r.copy_cove) if r.copy_cove else None
        cove_s = f"{cove:8.2f}s" if cove is not None else ""
        ratio = f"{cove / hand:7.2f}" if cove is not None else ""
        print(f"  {'replica creation p50':34} {cove_s:>9} {hand:8.2f}s {ratio:>7}")
    print(f"  {'floor: promotion by hand':34} {PROMOTION[r.name]}")
    for what, values in (
        ("RTO", r.rto),
        ("floor", r.floor),
        ("replica Cove", r.copy_cove),
        ("replica by hand", r.copy_hand),
    ):
        if values:
            print(f"    {what}: {' '.join(f'{v:.3f}' for v in values)}")


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nkill -9 of the primary's server, {args.kills} time(s) per datastore; primary + "
        f"{args.replicas} replica(s) holding {args.size_mb} MB"
        + (", synchronous" if args.synchronous else ", asynchronous")
        + f"; floors: {args.floor_rounds} "
        "round(s) by hand; ratio: cove / floor"
    )
    for r in results:
        report_one(r, args.synchronous)


def leftovers(paths: list[str]) -> list[int]:
    """Processes working in, or naming, one of ``paths`` (a removed directory included)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            cwd = ""
        argv = " ".join(cmdline(int(entry.name)))
        if any(cwd.startswith(p) or p in argv for p in paths):
            found.append(int(entry.name))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datastores", nargs="+", choices=sorted(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--kills", type=int, default=10, help="failovers per datastore")
    parser.add_argument("--size-mb", type=int, default=64, help="data in the group (MiB)")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2))
    parser.add_argument("--floor-rounds", type=int, default=3, help="standbys made by hand")
    parser.add_argument(
        "--fast-heartbeats",
        action="store_true",
        help="1 s heartbeats as the e2e tests run (default: the production interval)",
    )
    parser.add_argument(
        "--synchronous",
        action="store_true",
        help="the group in synchronous mode (needs --replicas 2; not Redis, whose closest "
        "setting does not promise it)",
    )
    args = parser.parse_args()
    if args.synchronous and (args.replicas < 2 or "redis" in args.datastores):
        parser.error("--synchronous needs --replicas 2 and --datastores postgresql mariadb")
    began = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="cove-bench-failover-"))
    base.chmod(0o755)
    plane = ControlPlane(fast_heartbeats=args.fast_heartbeats)
    results = []
    try:
        plane.start()
        for name in args.datastores:
            results.append(measure(plane, base, name, args))
    finally:
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
        left = leftovers([str(base), str(plane.base)])
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"left running after clean-up: {len(left)} process(es) (killed)", flush=True)
    report(results, args)
    print(f"wall time {time.perf_counter() - began:.0f} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
