"""Unmodified OpenStack clients from PyPI drive a running Cove through a user's whole flow:
python-troveclient's ``Client('1.0', session=...)`` over a keystoneauth1 password session, and
the ``openstack database ...`` commands of python-openstackclient. Every instance they make is
also reached with a real PostgreSQL client."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from clients import ClientVenv, Cloud, OpenStackCli, TroveDriver
from harness import ControlPlane, wait_for

pytestmark = pytest.mark.e2e

PROJECT = "osc"
BUILD_TIMEOUT = 180.0


@dataclass(frozen=True)
class OscAccount:
    cloud: Cloud
    project_id: str


@pytest.fixture(scope="module")
def osc_account(cove_up: ControlPlane) -> OscAccount:
    """A member of a project of its own: nothing here disturbs the other end-to-end tests."""
    acct = cove_up.account(PROJECT, "osc-user", "member")
    cloud = Cloud(
        auth_url=f"{cove_up.url}/identity/v3",
        username=acct.user,
        password=acct.password,
        project_name=PROJECT,
    )
    return OscAccount(cloud, acct.project_id)


def address_of(inst: dict[str, Any]) -> tuple[str, int]:
    """Where a client reaches the instance: its address (``ip`` and ``addresses`` agree) and
    its port (shown only when it is not the standard 5432)."""
    assert inst["ip"], inst
    assert inst["addresses"][0]["address"] == inst["ip"][0]
    return inst["ip"][0], int(inst.get("port", 5432))


def connect(inst: dict[str, Any], user: str, password: str, dbname: str) -> psycopg.Connection:
    host, port = address_of(inst)
    return psycopg.connect(
        host=host,
        port=port,
        user=user,
        password=password,
        dbname=dbname,
        connect_timeout=5,
        autocommit=True,
    )


def started_at(inst: dict[str, Any], password: str) -> datetime | None:
    """When the instance's server started, asked as root; None while it does not answer."""
    try:
        with connect(inst, "root", password, "postgres") as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    except psycopg.OperationalError:
        return None
    assert row is not None
    started: datetime = row[0]
    return started


def password() -> str:
    # A password given as a positional argument must not look like an option to argparse.
    return "p" + secrets.token_urlsafe(12)


# -- python-troveclient ---------------------------------------------------------------------------


def sdk_wait_active(tc: TroveDriver, iid: str, plane: ControlPlane) -> dict[str, Any]:
    def active() -> dict[str, Any] | None:
        inst: dict[str, Any] = tc.call("instances", "get", iid)
        if inst["status"] == "ERROR":
            raise AssertionError(f"instance went to ERROR: {inst}\n{plane.logs()}")
        return inst if inst["status"] == "ACTIVE" else None

    inst: dict[str, Any] = wait_for(active, BUILD_TIMEOUT, 0.3, f"instance {iid} to be ACTIVE")
    return inst


def names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["name"] for item in items)


def test_troveclient_session_flow(
    openstack_clients: ClientVenv, cove_up: ControlPlane, osc_account: OscAccount
) -> None:
    tc = TroveDriver(openstack_clients, osc_account.cloud)
    try:
        sdk_flow(tc, cove_up, osc_account)
    finally:
        tc.close()


@dataclass(frozen=True)
class SdkInstance:
    """The instance the troveclient flow made, and what its later steps need to reach it."""

    tc: TroveDriver
    plane: ControlPlane
    iid: str
    inst: dict[str, Any]
    app_pw: str


def sdk_flow(tc: TroveDriver, plane: ControlPlane, account: OscAccount) -> None:
    """One instance's life through python-troveclient, each step building on the one before."""
    tiny = sdk_catalog(tc, plane, account)
    run = sdk_create_and_wait(tc, plane, tiny)
    sdk_databases(run)
    sdk_users_and_access(run)
    root_pw = sdk_root(run)
    sdk_restart(run, root_pw)
    sdk_backups(run, tiny)
    replica = sdk_replicas(run)
    sdk_delete(run)
    tc.call("instances", "delete", replica)


def sdk_catalog(tc: TroveDriver, plane: ControlPlane, account: OscAccount) -> dict[str, Any]:
    """The endpoint, flavors and datastores the client sees; returns the ``tiny`` flavor."""
    # The catalog the token carries points the client at this project's endpoint.
    assert tc.hello["troveclient"] == "8.11.0"
    assert tc.hello["endpoint"].rstrip("/") == f"{plane.url}/v1.0/{account.project_id}"

    flavors = {f["name"]: f for f in tc.call("flavors", "list")}
    assert {"tiny", "small"} <= flavors.keys()
    tiny: dict[str, Any] = flavors["tiny"]
    assert tiny["str_id"] == str(tiny["id"]) and tiny["ram"] == 512
    assert tc.call("flavors", "get", tiny["str_id"])["name"] == "tiny"

    datastores = {d["name"]: d for d in tc.call("datastores", "list")}
    assert "postgresql" in datastores
    versions = tc.call("datastore_versions", "list", "postgresql")
    assert versions
    assert datastores["postgresql"]["default_version"] in [v["id"] for v in versions]
    version = tc.call("datastore_versions", "get", "postgresql", versions[0]["name"])
    assert version["id"] == versions[0]["id"]
    return tiny


def sdk_create_and_wait(tc: TroveDriver, plane: ControlPlane, tiny: dict[str, Any]) -> SdkInstance:
    """Creates an instance with a database and a user, waits for it, and writes a row as the
    user over a real PostgreSQL connection."""
    app_pw = password()
    create = tc.request(
        "instances",
        "create",
        "sdk-orders",
        flavor_id=tiny["id"],
        volume={"size": 1},
        datastore="postgresql",
        databases=[{"name": "orders"}],
        users=[{"name": "app", "password": app_pw, "databases": [{"name": "orders"}]}],
        attrs=["id", "status", "name"],
    )
    assert "error" not in create, create
    iid = create["attrs"]["id"]
    assert create["attrs"]["status"] == "BUILD" and create["attrs"]["name"] == "sdk-orders"
    listed = tc.call("instances", "list")
    assert iid in [i["id"] for i in listed]

    inst = sdk_wait_active(tc, iid, plane)
    assert inst["operating_status"] == "HEALTHY"
    # As from Trove: keys that would be empty are absent, so no client takes it for a replica
    # source (or a replica).
    assert not {"replicas", "replica_of", "hostname", "fault"} & inst.keys()
    assert inst["access"] == {"is_public": False, "allowed_cidrs": ["0.0.0.0/0"]}
    assert inst["datastore"]["type"] == "postgresql" and inst["volume"]["size"] == 1
    assert str(inst["flavor"]["id"]) == tiny["str_id"]
    with connect(inst, "app", app_pw, "orders") as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items VALUES (1)")
    return SdkInstance(tc, plane, iid, inst, app_pw)


def sdk_databases(run: SdkInstance) -> None:
    tc, iid = run.tc, run.iid
    assert names(tc.call("databases", "list", iid)) == ["orders"]
    tc.call("databases", "create", iid, [{"name": "audit"}, {"name": "scratch"}])
    assert names(tc.call("databases", "list", iid)) == ["audit", "orders", "scratch"]
    tc.call("databases", "delete", iid, "scratch")
    assert names(tc.call("databases", "list", iid)) == ["audit", "orders"]
    missing = tc.call_error("databases", "delete", iid, "scratch")
    assert (missing["error"], missing["code"]) == ("NotFound", 404), missing


def sdk_users_and_access(run: SdkInstance) -> None:
    """A new user reaches a database only once granted it, and no longer once deleted."""
    tc, iid, inst = run.tc, run.iid, run.inst
    users = tc.call("users", "list", iid)
    assert [(u["name"], names(u["databases"])) for u in users] == [("app", ["orders"])]
    auditor_pw = password()
    tc.call("users", "create", iid, [{"name": "auditor", "password": auditor_pw}])
    assert names(tc.call("users", "list", iid)) == ["app", "auditor"]
    assert tc.call("users", "list_access", iid, "auditor") == []
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect(inst, "auditor", auditor_pw, "audit")
    tc.call("users", "grant", iid, "auditor", ["audit"])
    assert names(tc.call("users", "list_access", iid, "auditor")) == ["audit"]
    assert names(tc.call("users", "get", iid, "auditor")["databases"]) == ["audit"]
    with connect(inst, "auditor", auditor_pw, "audit") as conn:
        conn.execute("CREATE TABLE trail (x int)")
    tc.call("users", "delete", iid, "auditor")
    assert names(tc.call("users", "list", iid)) == ["app"]
    gone = tc.call_error("users", "get", iid, "auditor")
    assert (gone["error"], gone["code"]) == ("NotFound", 404), gone
    with pytest.raises(psycopg.OperationalError):
        connect(inst, "auditor", auditor_pw, "audit")


def sdk_root(run: SdkInstance) -> str:
    """Enables root and reads the user's data as root; returns the root password."""
    tc, iid = run.tc, run.iid
    assert tc.call("root", "is_root_enabled", iid)["rootEnabled"] is False
    root_name, root_pw = tc.call("root", "create", iid)
    assert root_name == "root" and len(root_pw) >= 20
    assert tc.call("root", "is_root_enabled", iid)["rootEnabled"] is True
    with connect(run.inst, "root", root_pw, "orders") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    root: str = root_pw
    return root


def sdk_restart(run: SdkInstance, root_pw: str) -> None:
    """The server really restarts, the instance comes back ACTIVE, the data stays."""
    tc, iid, inst = run.tc, run.iid, run.inst
    before = started_at(inst, root_pw)
    assert before is not None
    tc.call("instances", "restart", iid)
    wait_for(
        lambda: (
            tc.call("instances", "get", iid)["status"] == "ACTIVE"
            and started_at(inst, root_pw) not in (None, before)
        ),
        BUILD_TIMEOUT,
        0.3,
        "the restarted server",
    )
    with connect(inst, "app", run.app_pw, "orders") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(1,)]


def sdk_backups(run: SdkInstance, tiny: dict[str, Any]) -> None:
    """A backup made, listed and shown through troveclient, a new instance restored from it
    (``restorePoint``) holding the row, then the backup deleted."""
    tc, iid = run.tc, run.iid
    created = tc.request(
        "backups", "create", "sdk-backup", iid, description="from troveclient", attrs=["id"]
    )
    assert "error" not in created, created
    backup_id = created["attrs"]["id"]
    assert created["result"]["status"] == "NEW"
    assert backup_id in [b["id"] for b in tc.call("backups", "list")]
    assert backup_id in [b["id"] for b in tc.call("instances", "backups", iid)]
    wait_for(
        lambda: tc.call("backups", "get", backup_id)["status"] == "COMPLETED",
        BUILD_TIMEOUT,
        0.3,
        "the backup",
    )
    shown = tc.call("backups", "get", backup_id)
    assert shown["datastore"]["type"] == "postgresql" and shown["size"] > 0
    restored = tc.request(
        "instances",
        "create",
        "sdk-restored",
        flavor_id=tiny["id"],
        volume={"size": 1},
        restorePoint={"backupRef": backup_id},
        attrs=["id"],
    )
    assert "error" not in restored, restored
    rid = restored["attrs"]["id"]
    copy = sdk_wait_active(tc, rid, run.plane)
    with connect(copy, "app", run.app_pw, "orders") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(1,)]
    tc.call("backups", "delete", backup_id)
    assert backup_id not in [b["id"] for b in tc.call("backups", "list")]
    tc.call("instances", "delete", rid)


def sdk_replicas(run: SdkInstance) -> str:
    """A replica made with ``replica_of``, ``instances.promote_to_replica_source`` of it (the
    source becomes its replica), and ``instances.eject_replica_source`` of the new source,
    which reports, refused as a ``BadRequest`` in the API's words. Returns the new source,
    which the flow's instance now follows (and may be deleted before it)."""
    tc, iid = run.tc, run.iid
    created = tc.request("instances", "create", "sdk-replica", replica_of=iid, attrs=["id"])
    assert "error" not in created, created
    rid = created["attrs"]["id"]
    replica = sdk_wait_active(tc, rid, run.plane)
    assert replica["replica_of"]["id"] == iid
    tc.call("instances", "promote_to_replica_source", rid)

    def promoted() -> dict[str, Any] | None:
        inst: dict[str, Any] = tc.call("instances", "get", rid)
        if inst["status"] == "ERROR":
            raise AssertionError(f"instance went to ERROR: {inst}\n{run.plane.logs()}")
        return inst if inst["status"] == "ACTIVE" else None

    source = wait_for(promoted, BUILD_TIMEOUT, 0.3, f"instance {rid} to be the source")
    assert not {"replica_of", "fault"} & source.keys(), source
    assert [r["id"] for r in source["replicas"]] == [iid]
    old = sdk_wait_active(tc, iid, run.plane)
    assert old["replica_of"]["id"] == rid and "replicas" not in old, old
    with connect(source, "app", run.app_pw, "orders") as conn:
        conn.execute("INSERT INTO items VALUES (2)")
    refused = tc.call_error("instances", "eject_replica_source", rid)
    assert (refused["error"], refused["code"]) == ("BadRequest", 400), refused
    assert "cannot be ejected as it has a current heartbeat" in refused["message"], refused
    return str(rid)


def sdk_delete(run: SdkInstance) -> None:
    """The deleted instance is gone from the API and its server no longer answers."""
    tc, iid = run.tc, run.iid
    tc.call("instances", "delete", iid)
    wait_for(
        lambda: "error" in tc.request("instances", "get", iid),
        BUILD_TIMEOUT,
        0.3,
        "the instance to go",
    )
    final = tc.call_error("instances", "get", iid)
    assert (final["error"], final["code"]) == ("NotFound", 404), final
    assert iid not in [i["id"] for i in tc.call("instances", "list")]
    with pytest.raises(psycopg.OperationalError):
        connect(run.inst, "app", run.app_pw, "orders")


# -- openstack database ... ---------------------------------------------------------------------


def cli_wait_active(cli: OpenStackCli, ref: str, plane: ControlPlane) -> dict[str, Any]:
    """Raises AssertionError, with the last view and the logs, on ERROR or a timeout."""
    last: list[dict[str, Any]] = []

    def active() -> dict[str, Any] | None:
        shown: dict[str, Any] = cli.json("database", "instance", "show", ref)
        last[:] = [shown]
        if shown["status"] == "ERROR":
            raise AssertionError(f"instance went to ERROR: {shown}\n{plane.logs()}")
        return shown if shown["status"] == "ACTIVE" else None

    try:
        shown: dict[str, Any] = wait_for(active, BUILD_TIMEOUT, 0.3, f"instance {ref} to be ACTIVE")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {last}\n{plane.logs()}") from None
    return shown


def column(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return sorted(row[name] for row in rows)


@dataclass(frozen=True)
class CliInstance:
    """The instance the ``openstack`` flow made, and what its later steps need to reach it."""

    cli: OpenStackCli
    iid: str
    name: str
    inst: dict[str, Any]
    app_pw: str


def test_openstack_database_commands(
    openstack_clients: ClientVenv, cove_up: ControlPlane, osc_account: OscAccount, tmp_path: Path
) -> None:
    cli = OpenStackCli.with_cloud(openstack_clients, osc_account.cloud, tmp_path)
    cli_catalog(cli)
    run = cli_create_and_wait(cli, cove_up)
    cli_databases(run)
    cli_users_and_access(run)
    cli_logs(run, tmp_path)
    root_pw = cli_root(run)
    cli_restart(run, root_pw)
    cli_backups(run, cove_up)
    cli_replicas(run, cove_up)
    cli_configuration_and_resize(run, root_pw, cove_up)
    cli_network_access(run)
    cli_delete(run)


def cli_catalog(cli: OpenStackCli) -> None:
    flavors = cli.json("database", "flavor", "list")
    assert {"tiny", "small"} <= {f["Name"] for f in flavors}
    datastores = cli.json("datastore", "list")
    assert "postgresql" in [d["Name"] for d in datastores]
    versions = cli.json("datastore", "version", "list", "postgresql")
    assert versions
    # `datastore show` prints the default version by name, found among the versions.
    default = cli.json("datastore", "show", "postgresql")["default_version"]
    assert default in [v["Name"] for v in versions]


def cli_create_and_wait(cli: OpenStackCli, plane: ControlPlane) -> CliInstance:
    """Creates an instance with a database and a user, waits for it, and writes a row as the
    user over a real PostgreSQL connection."""
    # Create by names: the flavor, datastore and (below) the instance are looked up as OSC does.
    app_pw = password()
    created = cli.json(
        "database",
        "instance",
        "create",
        "cli-orders",
        "--flavor",
        "tiny",
        "--size",
        "1",
        "--datastore",
        "postgresql",
        "--databases",
        "orders",
        "--users",
        f"app:{app_pw}",
    )
    iid = created["id"]
    assert created["name"] == "cli-orders" and created["status"] == "BUILD"
    listed = cli.json("database", "instance", "list")
    assert iid in [row["ID"] for row in listed]

    shown = cli_wait_active(cli, iid, plane)
    assert shown["datastore"] == "postgresql" and shown["volume"] == 1
    assert shown["operating_status"] == "HEALTHY" and shown["flavor"] == "1"
    # A plain instance is neither a replica source nor a replica: OSC prints no role for it
    # (it says "primary" for any instance whose answer has a `replicas` key, even empty).
    assert not {"replicas", "replica_of"} & shown.keys()
    (row,) = [row for row in cli.json("database", "instance", "list") if row["ID"] == iid]
    assert row["Role"] == "" and row["Public"] is False
    assert [a["address"] for a in row["Addresses"]] == shown["ip"].split(",")
    # OSC prints `ip` joined with commas and `addresses` as the API gave them.
    inst = {"ip": shown["ip"].split(","), "addresses": shown["addresses"]}
    with connect(inst, "app", app_pw, "orders") as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items VALUES (7)")
    return CliInstance(cli, iid, "cli-orders", inst, app_pw)


def cli_databases(run: CliInstance) -> None:
    """Databases, by instance name."""
    cli, name = run.cli, run.name
    assert column(cli.json("database", "db", "list", name), "Name") == ["orders"]
    cli.ok("database", "db", "create", name, "audit")
    assert column(cli.json("database", "db", "list", name), "Name") == ["audit", "orders"]
    cli.ok("database", "db", "delete", name, "audit")
    assert column(cli.json("database", "db", "list", name), "Name") == ["orders"]


def cli_users_and_access(run: CliInstance) -> None:
    """`user create` takes the password as a positional argument."""
    cli, name = run.cli, run.name
    auditor_pw = password()
    cli.ok("database", "db", "create", name, "ledger")
    cli.ok("database", "user", "create", name, "auditor", auditor_pw)
    assert column(cli.json("database", "user", "list", name), "Name") == ["app", "auditor"]
    assert cli.json("database", "user", "show", "access", name, "auditor") == []
    cli.ok("database", "user", "grant", "access", name, "auditor", "ledger")
    access = cli.json("database", "user", "show", "access", name, "auditor")
    assert column(access, "Name") == ["ledger"]
    with connect(run.inst, "auditor", auditor_pw, "ledger") as conn:
        conn.execute("CREATE TABLE entries (x int)")
    cli.ok("database", "user", "delete", name, "auditor")
    assert column(cli.json("database", "user", "list", name), "Name") == ["app"]


def cli_logs(run: CliInstance, workdir: Path) -> None:
    """The guest log commands: a USER log enabled, a statement logged, published, read back
    by `tail` and `save` (swiftclient, through the catalogue's object-store), discarded."""
    cli, name = run.cli, run.name
    logs = {row["Name"]: row for row in cli.json("database", "log", "list", name)}
    assert logs.keys() == {"general", "slow_query", "error"}
    assert logs["general"]["Status"] == "Disabled" and logs["error"]["Type"] == "SYS"
    assert cli.json("database", "log", "set", name, "general", "--enable")["status"] in (
        "Enabled",
        "Ready",
    )
    with connect(run.inst, "app", run.app_pw, "orders") as conn:
        conn.execute("SELECT 'osc-log-marker'")

    def published() -> dict[str, Any] | None:
        # The server writes the record once the statement ended.
        shown = cli.json("database", "log", "set", name, "general", "--publish")
        return shown if shown["published"] > 0 else None

    shown = wait_for(published, 60, 0.5, "the general log published")
    assert shown["status"] == "Published", shown
    tail = cli.ok("database", "log", "tail", name, "general", "--lines", "5").stdout
    assert "osc-log-marker" in tail, tail
    saved = workdir / "general.log"
    cli.ok("database", "log", "save", name, "general", "--file", str(saved))
    assert "statement: SELECT 'osc-log-marker'" in saved.read_text()
    refused = cli.run("database", "log", "set", name, "error", "--disable")
    assert refused.returncode != 0 and "system log" in refused.stderr
    assert cli.json("database", "log", "set", name, "general", "--discard")["published"] == 0
    gone = cli.ok("database", "log", "tail", name, "general").stdout
    assert "No published 'general' log" in gone, gone
    assert cli.json("database", "log", "set", name, "general", "--disable")["status"] == "Disabled"


def cli_root(run: CliInstance) -> str:
    """Enables root; returns the root password."""
    cli, name = run.cli, run.name
    assert cli.json("database", "root", "show", name) == {"is_root_enabled": False}
    root = cli.json("database", "root", "enable", name)
    assert root["name"] == "root" and len(root["password"]) >= 20
    assert cli.json("database", "root", "show", name) == {"is_root_enabled": True}
    root_pw: str = root["password"]
    return root_pw


def cli_restart(run: CliInstance, root_pw: str) -> None:
    """The server really restarts, the instance comes back ACTIVE, the data stays."""
    cli, iid, inst = run.cli, run.iid, run.inst
    before = started_at(inst, root_pw)
    assert before is not None
    cli.ok("database", "instance", "restart", run.name)
    wait_for(
        lambda: (
            cli.json("database", "instance", "show", iid)["status"] == "ACTIVE"
            and started_at(inst, root_pw) not in (None, before)
        ),
        BUILD_TIMEOUT,
        0.3,
        "the restarted server",
    )
    with connect(inst, "app", run.app_pw, "orders") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(7,)]


def cli_backups(run: CliInstance, plane: ControlPlane) -> None:
    """`openstack database backup create/list/show/delete` and `instance create --backup`."""
    cli = run.cli
    created = cli.json("database", "backup", "create", "cli-backup", "-i", run.name)
    backup_id = created["id"]
    assert created["status"] == "NEW" and created["instance_id"] == run.iid
    assert backup_id in column(cli.json("database", "backup", "list"), "ID")
    wait_for(
        lambda: cli.json("database", "backup", "show", backup_id)["status"] == "COMPLETED",
        BUILD_TIMEOUT,
        0.3,
        "the backup",
    )
    cli_wait_active(cli, run.iid, plane)
    restored = cli.json(
        "database",
        "instance",
        "create",
        "cli-restored",
        "--flavor",
        "tiny",
        "--size",
        "1",
        "--backup",
        backup_id,
    )
    copy = cli_wait_active(cli, restored["id"], plane)
    assert copy["datastore"] == "postgresql"
    inst = {"ip": copy["ip"].split(","), "addresses": copy["addresses"]}
    with connect(inst, "app", run.app_pw, "orders") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(7,)]
    cli.ok("database", "backup", "delete", backup_id)
    assert backup_id not in column(cli.json("database", "backup", "list"), "ID")
    cli.ok("database", "instance", "delete", restored["id"])


def cli_replicas(run: CliInstance, plane: ControlPlane) -> None:
    """`openstack database instance create --replica-of` (by the source's name, as users type
    it), the replica read with the source's user; `instance promote` makes it the
    source (and the source its replica), `instance eject` of a source that reports is
    refused in the API's words, a second switchover gives the source its place back, then
    `instance detach`."""
    cli = run.cli
    created = cli.json("database", "instance", "create", "cli-replica", "--replica-of", run.name)
    replica = cli_wait_active(cli, created["id"], plane)
    assert replica["replica_of"] == run.iid
    inst = {"ip": replica["ip"].split(","), "addresses": replica["addresses"]}
    with connect(inst, "app", run.app_pw, "orders") as conn:
        assert conn.execute("SELECT id FROM items").fetchall() == [(7,)]
    source = cli.json("database", "instance", "show", run.iid)
    assert created["id"] in str(source["replicas"])

    cli_switchover(cli, plane, "cli-replica", created["id"], run.iid)
    with connect(inst, "app", run.app_pw, "orders") as conn:
        conn.execute("INSERT INTO items VALUES (8)")
    wait_for(
        lambda: rows_of(run.inst, run.app_pw) == [(7,), (8,)],
        60,
        0.3,
        "the new source's write on the old one",
    )
    refused = cli.run("database", "instance", "eject", created["id"])
    assert refused.returncode == 1, refused
    assert (
        f"Replica source {created['id']} cannot be ejected as it has a current heartbeat; "
        "promote one of its replicas instead. (HTTP 400)"
    ) in refused.stderr, refused.stderr
    cli_switchover(cli, plane, run.name, run.iid, created["id"])

    cli.ok("database", "instance", "detach", created["id"])
    wait_for(
        lambda: "replica_of" not in cli.json("database", "instance", "show", created["id"]),
        BUILD_TIMEOUT,
        0.3,
        "the replica detached",
    )
    cli_wait_active(cli, created["id"], plane)
    cli.ok("database", "instance", "delete", created["id"])


def rows_of(inst: dict[str, Any], app_pw: str) -> list[tuple[Any, ...]] | None:
    """The rows of ``items`` as ``app`` reads them; None while the server does not answer."""
    try:
        with connect(inst, "app", app_pw, "orders") as conn:
            return conn.execute("SELECT id FROM items ORDER BY id").fetchall()
    except psycopg.OperationalError:
        return None


def cli_switchover(
    cli: OpenStackCli, plane: ControlPlane, ref: str, replica: str, source: str
) -> None:
    """`instance promote <ref>` (a name or an id) as OSC users type it: the replica
    ``replica`` becomes the source of ``source``, as `instance show` tells."""
    cli.ok("database", "instance", "promote", ref)

    def promoted() -> dict[str, Any] | None:
        shown: dict[str, Any] = cli.json("database", "instance", "show", replica)
        if shown["status"] == "ERROR":
            raise AssertionError(f"instance went to ERROR: {shown}\n{plane.logs()}")
        if shown["status"] != "ACTIVE":
            return None
        assert "replica_of" not in shown, shown  # ACTIVE again: the switchover ended
        return shown

    shown = wait_for(promoted, BUILD_TIMEOUT, 0.3, f"instance {replica} to be the source")
    assert "fault" not in shown, shown
    assert source in str(shown["replicas"])
    old = cli_wait_active(cli, source, plane)
    assert old["replica_of"] == replica and "replicas" not in old, old


def cli_configuration_and_resize(run: CliInstance, root_pw: str, plane: ControlPlane) -> None:
    """A configuration group made, attached and detached, and a resize, all by names as OSC
    users type them; each read back from the server."""
    cli, iid, inst = run.cli, run.iid, run.inst

    def setting(name: str) -> str:
        with connect(inst, "root", root_pw, "orders") as conn:
            return str(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])

    params = cli.json(
        "database", "configuration", "parameter", "list", "--datastore", "postgresql", "15"
    )
    assert "work_mem" in column(params, "Name")
    cli.ok(
        "database",
        "configuration",
        "create",
        "cli-tuned",
        '{"work_mem": 7168}',
        "--datastore",
        "postgresql",
        "--datastore-version",
        "15",
    )
    assert "cli-tuned" in column(cli.json("database", "configuration", "list"), "Name")
    cli.ok("database", "instance", "update", run.name, "--configuration", "cli-tuned")
    wait_for(lambda: setting("work_mem") == "7MB", 60, 0.3, "work_mem from the group")
    cli.ok("database", "configuration", "parameter", "set", "cli-tuned", '{"work_mem": 9216}')
    wait_for(lambda: setting("work_mem") == "9MB", 60, 0.3, "work_mem from the changed group")
    cli.ok("database", "instance", "update", run.name, "--remove-configuration")
    wait_for(lambda: setting("work_mem") != "9MB", 60, 0.3, "work_mem back to the flavor's")
    cli.ok("database", "configuration", "delete", "cli-tuned")

    cli.ok("database", "instance", "resize", "flavor", run.name, "small")
    wait_for(
        lambda: cli.json("database", "instance", "show", iid)["flavor"] == "2",
        BUILD_TIMEOUT,
        0.3,
        "the new flavor",
    )
    cli_wait_active(cli, iid, plane)
    assert setting("shared_buffers") == "512MB"
    cli.ok("database", "instance", "resize", "volume", run.name, "2")
    wait_for(
        lambda: cli.json("database", "instance", "show", iid)["volume"] == 2,
        BUILD_TIMEOUT,
        0.3,
        "the larger volume",
    )


def cli_network_access(run: CliInstance) -> None:
    """`instance update --is-public/--is-private --allowed-cidr` change who may connect, and
    `show` prints what the API keeps (the host's filter itself: test_access_flow.py)."""
    cli, name = run.cli, run.name
    shown = cli.json("database", "instance", "show", name)
    assert shown["public"] is False and shown["allowed_cidrs"] == ["0.0.0.0/0"]
    cidrs = ["192.0.2.0/24", "198.51.100.0/24"]
    cli.ok(
        "database", "instance", "update", name, "--is-public",
        "--allowed-cidr", cidrs[0], "--allowed-cidr", cidrs[1],
    )  # fmt: skip
    shown = cli.json("database", "instance", "show", name)
    assert shown["public"] is True and shown["allowed_cidrs"] == cidrs
    bad = cli.run("database", "instance", "update", name, "--allowed-cidr", "10.0.0.0/40")
    assert bad.returncode != 0 and "10.0.0.0/40" in bad.stderr
    cli.ok("database", "instance", "update", name, "--is-private", "--allowed-cidr", "0.0.0.0/0")
    shown = cli.json("database", "instance", "show", name)
    assert shown["public"] is False and shown["allowed_cidrs"] == ["0.0.0.0/0"]


def cli_delete(run: CliInstance) -> None:
    """The deleted instance leaves the list, `show` fails, and its server no longer answers."""
    cli, iid = run.cli, run.iid
    cli.ok("database", "instance", "delete", run.name)
    wait_for(
        lambda: iid not in [row["ID"] for row in cli.json("database", "instance", "list")],
        BUILD_TIMEOUT,
        0.3,
        "the instance to go",
    )
    gone = cli.run("database", "instance", "show", iid)
    assert gone.returncode != 0
    with pytest.raises(psycopg.OperationalError):
        connect(run.inst, "app", run.app_pw, "orders")


def test_openstack_uses_the_cloud_cove_up_wrote(
    openstack_clients: ClientVenv, cove_up: ControlPlane, tmp_path: Path
) -> None:
    """`cove up` leaves a clouds.yaml with a cloud named ``cove`` in its data directory: with
    only OS_CLIENT_CONFIG_FILE and OS_CLOUD set, the openstack command reaches Cove."""
    config = cove_up.data_dir / "clouds.yaml"
    assert config.is_file()
    cli = OpenStackCli(openstack_clients, config, "cove", tmp_path)
    assert isinstance(cli.json("database", "instance", "list"), list)
    assert "tiny" in [f["Name"] for f in cli.json("database", "flavor", "list")]


def test_openstack_admin_resets_and_deletes_instances(
    openstack_clients: ClientVenv, cove_up: ControlPlane, osc_account: OscAccount, tmp_path: Path
) -> None:
    """`database instance reset status` is for cloud administrators, who reach the member's
    instances by id through their own project; a reset instance can be deleted, and
    `delete --force` resets and deletes in one go. The resets land while the instances are
    being built, with the task manager at work on them."""
    member = OpenStackCli.with_cloud(openstack_clients, osc_account.cloud, mkdir(tmp_path, "m"))
    admin_acct = cove_up.account("admin", "osc-admin", "admin")
    admin_cloud = Cloud(
        auth_url=osc_account.cloud.auth_url,
        username=admin_acct.user,
        password=admin_acct.password,
        project_name="admin",
    )
    admin = OpenStackCli.with_cloud(openstack_clients, admin_cloud, mkdir(tmp_path, "a"))

    def create(name: str) -> str:
        created = member.json(
            "database", "instance", "create", name, "--flavor", "tiny", "--size", "1",
            "--datastore", "postgresql",
        )  # fmt: skip
        iid: str = created["id"]
        return iid

    def wait_gone(iid: str) -> None:
        wait_for(
            lambda: iid not in [r["ID"] for r in member.json("database", "instance", "list")],
            BUILD_TIMEOUT,
            0.3,
            f"instance {iid} to go",
        )

    iid = create("cli-stuck")
    (row,) = [r for r in member.json("database", "instance", "list") if r["ID"] == iid]
    assert row["Role"] == "" and row["Public"] is False
    refused = member.run("database", "instance", "reset", "status", iid)
    assert refused.returncode != 0
    assert "Policy doesn't allow instance:reset_status" in refused.stderr + refused.stdout
    admin.ok("database", "instance", "reset", "status", iid)
    shown = admin.json("database", "instance", "show", iid)
    assert "reset by an administrator" in shown["fault"], shown
    assert shown["tenant_id"] == osc_account.project_id
    assert iid not in [r["ID"] for r in admin.json("database", "instance", "list")]
    member.ok("database", "instance", "delete", iid)
    wait_gone(iid)

    forced = create("cli-forced")
    admin.ok("database", "instance", "delete", "--force", forced)
    wait_gone(forced)
    gone = admin.run("database", "instance", "show", forced)
    assert gone.returncode != 0


def mkdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path
