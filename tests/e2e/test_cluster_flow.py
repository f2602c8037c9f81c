"""A MariaDB Galera cluster made by the seeds' own python-troveclient call (positional
arguments, the datastore and version by id, ``net-id`` at the top level of each member, one
name for all three), used with PyMySQL: every member in one cluster of three, a row written on
one member read on the others, a killed member rejoining by itself while the others take
writes, its endpoint balancing over the members, grow and shrink, a rolling restart without a
failed write through the endpoint, and a deletion that leaves nothing running; beside it, a
cluster made, listed, shown and deleted with the ``openstack`` command."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from clients import ClientVenv, Cloud, OpenStackCli, TroveDriver
from harness import ControlPlane, delete_clusters, wait_for

from cove.compute.discovery import find_mariadb
from cove.guestagent.datastores.mariadb import conf

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not find_mariadb(), reason="needs mariadbd and mariadb-install-db"),
    pytest.mark.skipif(
        not Path("/usr/lib/galera/libgalera_smm.so").is_file(), reason="needs galera-4"
    ),
]

PROJECT = "clusters"
#: A cluster of three joins one member at a time by a whole copy: tens of seconds here.
READY_TIMEOUT = 300.0


def login(ip: str, password: str) -> Any:
    return pymysql.connect(
        host=ip, port=3306, user="root", password=password, connect_timeout=5, autocommit=True
    )


def status(ip: str, password: str, name: str) -> str | None:
    """A server status variable of the member at ``ip``; None while it does not answer."""
    try:
        with login(ip, password) as conn, conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE %s", (name,))
            row = cur.fetchone()
    except pymysql.MySQLError:
        return None
    return None if row is None else str(row[1])


def execute(ip: str, password: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with login(ip, password) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


#: What Galera answers for a transaction it aborted, uncommitted, while the members' view
#: changed (a member lost, or coming back): "try again", as Galera's clients are told to.
GALERA_RETRY = {1047, 1180, 1213}


def write_retried(ip: str, password: str, sql: str, *args: Any) -> None:
    """One write, asked again while Galera aborts it for a view change (for up to a minute:
    the view settles within its own timeouts, a few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            execute(ip, password, sql, *args)
            return
        except pymysql.MySQLError as exc:
            if not exc.args or exc.args[0] not in GALERA_RETRY or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def mariadbd_of(instance_dir: Path) -> int | None:
    """The pid of the member's server, from its pid file; None when it has none."""
    try:
        return int((instance_dir / "run" / conf.PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_seeds_galera_cluster(
    openstack_clients: ClientVenv, cove_up: ControlPlane, tmp_path: Path
) -> None:
    plane = cove_up
    acct = plane.account(PROJECT, "cluster-user", "member")
    cloud = Cloud(
        auth_url=f"{plane.url}/identity/v3",
        username=acct.user,
        password=acct.password,
        project_name=PROJECT,
    )
    osc = OpenStackCli.with_cloud(openstack_clients, cloud, tmp_path)
    # A second cluster, made with the openstack command, builds beside the seeds' one.
    made = osc.json(
        "database",
        "cluster",
        "create",
        *[arg for _ in range(3) for arg in ("--instance", "flavor=2,volume=1")],
        "osc",
        "mariadb",
        "10.11",
    )
    tc = TroveDriver(openstack_clients, cloud)
    try:
        flow(tc, plane, acct.http, osc)
    except BaseException:
        delete_clusters(acct.http)
        raise
    finally:
        tc.close()
    # The openstack command lists, shows and deletes it.
    wait_for(
        lambda: osc.json("database", "cluster", "show", made["id"])["task_name"] == "NONE",
        READY_TIMEOUT,
        interval=1,
        what="the openstack command's cluster",
    )
    listed = osc.json("database", "cluster", "list")
    assert [(c["ID"], c["Task Name"]) for c in listed] == [(made["id"], "NONE")]
    members = osc.json("database", "cluster", "list", "instances", made["id"])
    assert [m["Status"] for m in members] == ["ACTIVE"] * 3
    osc.ok("database", "cluster", "delete", made["id"])
    wait_for(
        lambda: acct.http.get(f"/clusters/{made['id']}").status_code == 404,
        120,
        what="the openstack command's cluster gone",
    )


def flow(tc: TroveDriver, plane: ControlPlane, api: Any, osc: OpenStackCli) -> None:
    datastore = next(d for d in tc.call("datastores", "list") if d["name"] == "mariadb")
    version = tc.call("datastore_versions", "list", datastore["id"])[0]
    flavor = next(f for f in tc.call("flavors", "list") if f["ram"] >= 512)
    network = api.get("/networks").json()["networks"][0]["id"]
    # The seeds' script, as written: its format string gives every member the same name.
    name = "seeds"
    instances = [
        {
            "name": "{}-member-{}".format(name, "member", str(i + 1)),  # noqa: F523
            "flavorRef": flavor["id"],
            "volume": {"size": 1},
            "net-id": network,
        }
        for i in range(3)
    ]
    made = tc.call(
        "clusters", "create", name, datastore["id"], version["id"], instances, None, None, None
    )
    cid = made["id"]
    assert made["task"]["name"] == "BUILDING"

    def built() -> dict[str, Any] | None:
        shown: dict[str, Any] = tc.call("clusters", "get", cid)
        statuses = {m["status"] for m in shown["instances"]}
        assert not statuses & {"ERROR", "FAILED"}, shown
        return shown if shown["task"]["name"] == "NONE" and statuses == {"ACTIVE"} else None

    cluster = wait_for(built, READY_TIMEOUT, interval=1, what="the cluster to be built")
    members = cluster["instances"]
    assert len(members) == 3 and {m["name"] for m in members} == {"seeds-member-member"}
    ips = [m["ip"][0] for m in members]
    # Members are left out of the instance list, as in Trove.
    assert not {m["id"] for m in members} & {i["id"] for i in tc.call("instances", "list")}
    assert cid in [c["id"] for c in tc.call("clusters", "list")]

    # Each member's agent reports how its server sees the cluster (a Cove extension).
    def healthy() -> bool:
        shown = api.get(f"/clusters/{cid}").json()["cluster"]["instances"]
        return all(
            m.get("health") == {"cluster_size": 3, "state": "Synced", "ready": True} for m in shown
        )

    wait_for(healthy, 30, interval=0.5, what="every member's health in the view")
    # Root of the cluster (troveclient's create_cluster_root): made once, on every member.
    password = tc.call("root", "create_cluster_root", cid)[1]
    # The root account made on one member reaches every member: one cluster of three.
    for ip in ips:
        wait_for(
            lambda ip=ip: status(ip, password, "wsrep_cluster_size") == "3",
            60,
            what=f"{ip} in a cluster of 3",
        )
        assert status(ip, password, "wsrep_local_state_comment") == "Synced"

    # Every member takes writes; a row written on one is read on the others.
    execute(ips[0], password, "CREATE DATABASE shop")
    execute(ips[0], password, "CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
    for ip in ips:
        execute(ip, password, "INSERT INTO shop.t (v) VALUES (%s)", f"written on {ip}")
    for ip in ips:
        written = {row[0] for row in execute(ip, password, "SELECT v FROM shop.t")}
        assert written == {f"written on {other}" for other in ips}

    # A killed member: the others keep taking writes, and it rejoins by itself.
    victim = plane.data_dir / "instances" / members[2]["id"]
    pid = mariadbd_of(victim)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for n in range(20):
        write_retried(ips[n % 2], password, "INSERT INTO shop.t (v) VALUES (%s)", f"meanwhile {n}")
        time.sleep(0.1)
    wait_for(
        lambda: status(ips[2], password, "wsrep_local_state_comment") == "Synced",
        120,
        interval=0.5,
        what="the killed member to rejoin",
    )
    assert mariadbd_of(victim) not in (None, pid)
    meanwhile = execute(
        ips[2], password, "SELECT count(*) FROM shop.t WHERE v LIKE %s", "meanwhile%"
    )
    assert meanwhile == [(20,)]
    assert status(ips[0], password, "wsrep_cluster_size") == "3"

    # The load-balanced endpoint reaches every member, least busy first.
    endpoint = wait_for(lambda: tc.call("clusters", "get", cid).get("ip"), 30, what="endpoint")[0]
    reached = {execute(endpoint, password, "SELECT @@wsrep_node_address")[0][0] for _ in range(9)}
    assert reached <= set(ips) and len(reached) >= 2

    configure(api, cid, ips, password)
    members = grow_and_shrink(tc, osc, cid, flavor["id"], password)
    rolling_restart(plane, api, cid, endpoint, password)

    # Deleting the cluster deletes every member and leaves nothing running.
    servers = [mariadbd_of(plane.data_dir / "instances" / m["id"]) for m in members]
    tc.call("clusters", "delete", cid)
    wait_for(lambda: api.get(f"/clusters/{cid}").status_code == 404, 120, what="the cluster gone")
    for member in members:
        assert api.get(f"/instances/{member['id']}").status_code == 404
        assert not (plane.data_dir / "instances" / member["id"]).exists()
    assert not [p for p in servers if p is not None and running(p)]


def ready(tc: TroveDriver, cid: str, size: int) -> dict[str, Any] | None:
    shown: dict[str, Any] = tc.call("clusters", "get", cid)
    statuses = [m["status"] for m in shown["instances"]]
    if "ERROR" in statuses:
        # What went wrong, as each failed member's own view says it.
        faults = {
            m["id"]: tc.call("instances", "get", m["id"]).get("fault")
            for m in shown["instances"]
            if m["status"] == "ERROR"
        }
        raise AssertionError(f"members in ERROR: {faults}; cluster: {shown}")
    done = shown["task"]["name"] == "NONE" and statuses == ["ACTIVE"] * size
    return shown if done else None


def grow_and_shrink(
    tc: TroveDriver, osc: OpenStackCli, cid: str, flavor: str, password: str
) -> list[dict[str, Any]]:
    """Grow to 4 with the openstack command (the new member joins and holds the data), then
    shrink back to 3 with it; below 3 is refused. Returns the members left."""
    osc.ok("database", "cluster", "grow", cid, "--instance", f"flavor={flavor},volume=1")
    assert tc.call("clusters", "get", cid)["task"]["name"] == "GROWING_CLUSTER"
    grown = wait_for(lambda: ready(tc, cid, 4), READY_TIMEOUT, interval=1, what="the grow")
    newcomer = grown["instances"][-1]
    ip = newcomer["ip"][0]
    assert status(ip, password, "wsrep_cluster_size") == "4"
    assert execute(ip, password, "SELECT count(*) FROM shop.t")[0][0] >= 23
    osc.ok("database", "cluster", "shrink", cid, grown["instances"][0]["id"])
    shrunk = wait_for(lambda: ready(tc, cid, 3), 120, interval=1, what="the shrink")
    # The member's deletion ends once its server is gone; the others count it out soon after.
    wait_for(
        lambda: status(ip, password, "wsrep_cluster_size") == "3",
        30,
        interval=0.2,
        what="the cluster counting 3 members",
    )
    refused = tc.request("clusters", "shrink", cid, [{"id": shrunk["instances"][0]["id"]}])
    assert refused.get("code") == 400, refused
    assert "at least 3" in refused["message"]
    members: list[dict[str, Any]] = shrunk["instances"]
    return members


def rolling_restart(plane: ControlPlane, api: Any, cid: str, endpoint: str, password: str) -> None:
    """Restart every member, one at a time, while a client writes through the endpoint (a
    new connection per write, as a pool reconnecting would): no write fails."""
    ids = [m["id"] for m in api.get(f"/clusters/{cid}").json()["cluster"]["instances"]]
    before = {iid: mariadbd_of(plane.data_dir / "instances" / iid) for iid in ids}
    resp = api.post(f"/clusters/{cid}", json={"restart": {}})
    assert resp.status_code == 202, resp.text
    assert resp.json()["cluster"]["task"]["name"] == "RESTARTING_CLUSTER"
    failures: list[str] = []
    written = 0
    deadline = time.monotonic() + READY_TIMEOUT
    while api.get(f"/clusters/{cid}").json()["cluster"]["task"]["name"] != "NONE":
        assert time.monotonic() < deadline, "the rolling restart did not end"
        try:
            execute(endpoint, password, "INSERT INTO shop.t (v) VALUES ('rolling')")
            written += 1
        except pymysql.MySQLError as exc:
            failures.append(str(exc))
    assert failures == [] and written > 0
    after = {iid: mariadbd_of(plane.data_dir / "instances" / iid) for iid in ids}
    assert all(after[iid] not in (None, before[iid]) for iid in ids), (before, after)
    counted = execute(endpoint, password, "SELECT count(*) FROM shop.t WHERE v = 'rolling'")
    assert counted == [(written,)]


def configure(api: Any, cid: str, ips: list[str], password: str) -> None:
    """A configuration group attached to the cluster reaches every member; detached, the
    members go back to their defaults."""
    group = {"name": "wide", "values": {"max_connections": 345}, "datastore": {"type": "mariadb"}}
    made = api.post("/configurations", json={"configuration": group})
    assert made.status_code == 200, made.text
    gid = made.json()["configuration"]["id"]
    attach = api.post(f"/clusters/{cid}", json={"configuration_attach": {"configuration_id": gid}})
    assert attach.status_code == 202, attach.text
    assert attach.json()["cluster"]["configuration"] == gid
    for ip in ips:
        assert execute(ip, password, "SELECT @@max_connections") == [(345,)]
    detach = api.post(f"/clusters/{cid}", json={"configuration_detach": {}})
    assert detach.status_code == 202, detach.text
    assert "configuration" not in detach.json()["cluster"]
    for ip in ips:
        assert execute(ip, password, "SELECT @@max_connections") != [(345,)]
    assert api.delete(f"/configurations/{gid}").status_code == 202
