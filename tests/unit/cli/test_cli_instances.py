"""``cove instance``: create bodies, waiting, listing and showing, against a fake Cove."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fake_cove import PROJECT_ID, FakeCove, create_body, instance, reply, run

from cove.cli.user import client as cli_client

# -- instance create --------------------------------------------------------------------------


def test_create_minimal_body(cove: FakeCove) -> None:
    body = create_body(cove)
    assert body == {
        "name": "shop",
        "flavorRef": "small",
        "volume": {"size": 2},
        "databases": [],
        "users": [],
    }


def test_create_full_body(cove: FakeCove) -> None:
    body = create_body(
        cove,
        *("--datastore", "postgresql", "--datastore-version", "16"),
        *("--database", "orders", "--database", "audit"),
        *("--user", "app:secret", "--user", "ro:pa:ss@audit"),
    )
    assert body["datastore"] == {"type": "postgresql", "version": "16"}
    assert body["databases"] == [{"name": "orders"}, {"name": "audit"}]
    assert body["users"] == [
        {"name": "app", "password": "secret", "databases": [{"name": "orders"}, {"name": "audit"}]},
        {"name": "ro", "password": "pa:ss", "databases": [{"name": "audit"}]},
    ]


def test_create_datastore_version_alone(cove: FakeCove) -> None:
    assert create_body(cove, "--datastore-version", "16")["datastore"] == {"version": "16"}


@pytest.mark.parametrize(
    ("spec", "password", "dbs"),
    [
        ("app:secret", "secret", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:a:b:c", "a:b:c", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@ss@orders", "p@ss", [{"name": "orders"}]),
        ("app:x@orders,a$b", "x", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@ss!", "p@ss!", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@", "p@", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@orders,", "p@orders,", [{"name": "orders"}, {"name": "a$b"}]),
    ],
)
def test_create_user_spec(cove: FakeCove, spec: str, password: str, dbs: list[Any]) -> None:
    body = create_body(cove, "--database", "orders", "--database", "a$b", "--user", spec)
    assert body["users"] == [{"name": "app", "password": password, "databases": dbs}]


def test_create_user_prompts_for_password(cove: FakeCove, terminal: None) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--database", "audit", "--user", "app@audit"),
        stdin="hunter2-x\nhunter2-x\n",
    )
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST")[0]["instance"]["users"] == [
        {"name": "app", "password": "hunter2-x", "databases": [{"name": "audit"}]}
    ]
    assert "Password for user app" in result.output
    assert "hunter2-x" not in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("app:", "password after ':' is empty"),
        (":pw", "needs a user name"),
        ("app:p@ss", "database ss is not created by this command"),
        ("app:pw@nosuch", "database nosuch is not created"),
    ],
)
def test_create_bad_user_spec(cove: FakeCove, spec: str, message: str) -> None:
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--user", spec),
    )
    assert result.exit_code == 2
    assert message in result.output
    assert cove.requests == []


def test_create_never_prints_passwords(cove: FakeCove) -> None:
    leaky = instance(password="root-secret")
    cove.on("POST", "instances", reply(200, {"instance": leaky}))
    args = ("instance", "create", "shop", "--flavor", "small", "--size", "2")
    for extra in ((), ("--json",)):
        result = run(*extra, *args, "--database", "d", "--user", "app:s3cr3t-pw")
        assert result.exit_code == 0, result.output
        assert "s3cr3t-pw" not in result.output
        assert "root-secret" not in result.output


# -- waiting ----------------------------------------------------------------------------------


def test_create_wait_until_active(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    active = instance("ACTIVE", port=5433)
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance()}),
        reply(200, {"instance": instance()}),
        reply(200, {"instance": active}),
    )
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--user", "app:pw-123", "--wait"),
    )
    assert result.exit_code == 0, result.output
    assert 'psql "host=127.42.0.5 port=5433 dbname=orders user=app"' in result.stdout
    assert "BUILD (" in result.stderr
    assert "ACTIVE/HEALTHY (" in result.stderr
    assert result.stderr.count("BUILD (") == 1  # not a terminal: one line per status change
    assert "pw-123" not in result.output
    assert len([r for r in cove.requests if r.method == "GET"]) == 3


def test_create_wait_default_port(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance("ACTIVE")}))
    result = run("instance", "create", "shop", "--flavor", "s", "--size", "1", "--wait")
    assert result.exit_code == 0, result.output
    assert 'psql "host=127.42.0.5 port=5432 dbname=postgres"' in result.stdout


def test_create_wait_until_error(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    failed = instance("ERROR", fault={"message": "initdb failed: disk full"})
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance()}),
        reply(200, {"instance": failed}),
    )
    result = run("instance", "create", "shop", "--flavor", "s", "--size", "1", "--wait")
    assert result.exit_code == 1
    assert "initdb failed: disk full" in result.stderr
    assert "Traceback" not in result.output


def test_create_wait_timeout(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance()}))
    result = run(
        *("instance", "create", "shop", "--flavor", "s", "--size", "1"),
        *("--wait", "--wait-timeout", "0"),
    )
    assert result.exit_code == 1
    assert "gave up waiting after 0 s: instance i-1 is BUILD" in result.stderr


def test_delete_wait_until_gone(cove: FakeCove) -> None:
    cove.on("DELETE", "instances/i-1", reply(202))
    gone = reply(404, {"itemNotFound": {"code": 404, "message": "gone"}})
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance("SHUTDOWN")}), gone)
    result = run("instance", "delete", "i-1", "--wait")
    assert result.exit_code == 0, result.output
    assert "Instance i-1 deleted." in result.stdout
    assert "SHUTDOWN (" in result.stderr


def test_restart_wait(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance("REBOOT")}),
        reply(200, {"instance": instance("ACTIVE")}),
    )
    result = run("instance", "restart", "i-1", "--wait")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [{"restart": {}}]
    assert "REBOOT (" in result.stderr


def test_resize_flavor_wait(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance("RESIZE")}),
        reply(200, {"instance": instance("ACTIVE")}),
    )
    result = run("instance", "resize", "i-1", "--flavor", "small", "--wait")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [{"resize": {"flavorRef": "small"}}]
    assert "RESIZE (" in result.stderr and "resized and ACTIVE" in result.stdout


def test_resize_volume_and_a_failed_resize(cove: FakeCove) -> None:
    failed = instance("ACTIVE")
    failed["fault"] = {"message": "Resize failed: no answer", "code": 500, "created": "x"}
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on("GET", "instances/i-1", reply(200, {"instance": failed}))
    result = run("instance", "resize", "i-1", "--volume", "5", "--wait")
    assert result.exit_code == 1
    assert cove.bodies("POST") == [{"resize": {"volume": {"size": 5}}}]
    assert "Resize failed: no answer" in result.stderr


def test_resize_needs_one_target(cove: FakeCove) -> None:
    assert run("instance", "resize", "i-1").exit_code == 2
    assert run("instance", "resize", "i-1", "--flavor", "2", "--volume", "3").exit_code == 2
    assert run("instance", "resize", "i-1", "--volume", "0").exit_code == 2
    assert cove.bodies("POST") == []


# -- other instance commands ------------------------------------------------------------------


def test_rename(cove: FakeCove) -> None:
    cove.on("PUT", "instances/i-1", reply(202))
    result = run("instance", "rename", "i-1", "shop2")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [{"instance": {"name": "shop2"}}]


def test_show(cove: FakeCove) -> None:
    inst = instance("ACTIVE", port=5433, fault=None)
    inst["configuration"] = {"id": "c-1", "name": "tuned", "links": []}
    cove.on("GET", "instances/i-1", reply(200, {"instance": inst}))
    result = run("instance", "show", "i-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "status            ACTIVE" in lines
    assert "configuration     tuned (c-1)" in lines
    assert "addresses         127.42.0.5 (private)" in lines
    assert "port              5433" in lines
    assert not any(line.startswith("fault") for line in lines)


def test_list_follows_next_links(cove: FakeCove) -> None:
    page1 = {
        "instances": [instance(id="a", name="one")],
        "links": [
            {"rel": "next", "href": "https://elsewhere/v1.0/default/instances?limit=1&marker=a"}
        ],
    }
    page2 = {"instances": [instance(id="b", name="two")]}
    cove.on("GET", "instances", reply(200, page1), reply(200, page2))
    result = run("instance", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "Name", "Datastore", "Status", "Flavor", "Size", "Address"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "one"], ["b", "two"]]
    second = cove.requests[1].url
    assert second.host == "public.cove.test"
    assert dict(second.params) == {"limit": "1", "marker": "a"}


def test_list_stops_on_a_repeated_next_link(cove: FakeCove) -> None:
    page = {
        "instances": [instance()],
        "links": [{"rel": "next", "href": "http://x/instances?marker=i-1"}],
    }
    cove.on("GET", "instances", reply(200, page))
    result = run("--json", "instance", "list")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["instances"]) == 2
    assert len(cove.requests) == 2


def test_list_cap(cove: FakeCove, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "MAX_ITEMS", 3)
    counter = iter(range(100))

    def page(request: httpx.Request) -> httpx.Response:
        n = next(counter)
        body = {
            "instances": [instance(id=f"{n}-{k}") for k in range(2)],
            "links": [{"rel": "next", "href": f"http://x/instances?marker={n}"}],
        }
        return reply(200, body)

    cove.on("GET", "instances", page)
    result = run("--json", "instance", "list")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["instances"]) == 3
    assert "first 3 items" in result.stderr


def test_json_output(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": [instance()]}))
    result = run("--json", "instance", "list")
    assert json.loads(result.stdout) == {"instances": [instance()]}


@pytest.mark.parametrize("network", ["n-2", "lab"])
def test_create_on_a_network(cove: FakeCove, network: str) -> None:
    assert create_body(cove, "--network", network)["nics"] == [{"net-id": network}]


def test_all_projects(cove: FakeCove) -> None:
    items = [instance(tenant_id="ab" * 16), instance(id="i-2", tenant_id=PROJECT_ID)]
    cove.on("GET", "mgmt/instances", reply(200, {"instances": items}))
    result = run("instance", "list", "--all-projects")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[-1] == "Project"
    assert [line.split()[-1] for line in lines[1:]] == ["ab" * 16, PROJECT_ID]
    denied = {"unauthorized": {"code": 401, "message": "User does not have admin privileges."}}
    cove.on("GET", "mgmt/instances", reply(401, denied))
    refused = run("instance", "list", "--all-projects")
    assert refused.exit_code == 1
    assert refused.stderr == "Error (401 unauthorized): User does not have admin privileges.\n"


def test_create_from_a_backup_and_to_a_moment(cove: FakeCove) -> None:
    assert create_body(cove, "--backup", "b-1")["restorePoint"] == {"backupRef": "b-1"}
    cove.requests.clear()
    body = create_body(cove, "--backup", "b-1", "--restore-time", "2026-12-05T10:30:00Z")
    assert body["restorePoint"] == {"backupRef": "b-1", "restore_time": "2026-12-05T10:30:00Z"}


def test_restore_time_needs_a_backup(cove: FakeCove) -> None:
    result = run("instance", "create", "x", "--flavor", "1", "--size", "1", "--restore-time", "t")
    assert result.exit_code == 2 and "--restore-time needs --backup" in result.output
    assert cove.bodies("POST") == []


def test_restore_window_is_shown(cove: FakeCove) -> None:
    window = {"instance_id": "i-1", "earliest": "2026-12-05T10:00:04Z", "latest": None}
    cove.on("GET", "instances/i-1/restore_window", reply(200, {"restore_window": window}))
    result = run("instance", "restore-window", "i-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["earliest", "2026-12-05T10:00:04Z"]
    window["earliest"] = None
    cove.on("GET", "instances/i-1/restore_window", reply(200, {"restore_window": window}))
    empty = run("instance", "restore-window", "i-1")
    assert "no moments to restore to yet" in empty.stdout
    as_json = run("--json", "instance", "restore-window", "i-1")
    assert json.loads(as_json.stdout) == {"restore_window": window}


def test_create_replicas_sends_only_the_name_and_the_count(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance(replica_of={"id": "i-0"})}))
    result = run("instance", "create", "ro", "--replica-of", "i-0", "--replica-count", "2")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [
        {"instance": {"name": "ro", "replica_of": "i-0", "replica_count": 2}}
    ]
    assert "replica_of  i-0" in result.stdout.splitlines()


def test_create_needs_flavor_and_size_but_for_a_replica(cove: FakeCove) -> None:
    missing = run("instance", "create", "x", "--size", "1")
    assert missing.exit_code == 2 and "--flavor and --size are required" in missing.output
    count = run("instance", "create", "x", "--flavor", "1", "--size", "1", "--replica-count", "2")
    assert count.exit_code == 2 and "--replica-count needs --replica-of" in count.output
    assert cove.bodies("POST") == []


def test_detach_replica_clears_replica_of(cove: FakeCove) -> None:
    cove.on("PUT", "instances/i-1", reply(202))
    result = run("instance", "detach-replica", "i-1")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [{"instance": {"replica_of": None}}]
    assert "being detached" in result.stdout


def test_a_replica_refuses_what_it_takes_from_its_source(cove: FakeCove) -> None:
    result = run(
        "instance", "create", "ro", "--replica-of", "i-0", "--flavor", "1", "--user", "a:b"
    )
    assert result.exit_code == 2 and "takes --flavor, --user from its source" in result.output
    assert cove.bodies("POST") == []


def test_detach_replica_wait_fails_when_it_stays_a_replica(cove: FakeCove) -> None:
    cove.on("PUT", "instances/i-1", reply(202))
    still = instance("ACTIVE", replica_of={"id": "i-0"}, fault={"message": "promote failed"})
    cove.on("GET", "instances/i-1", reply(200, {"instance": still}))
    result = run("instance", "detach-replica", "i-1", "--wait")
    assert result.exit_code == 1 and "still a replica: promote failed" in result.output


# -- who may connect ----------------------------------------------------------------------------


def test_create_with_access(cove: FakeCove) -> None:
    body = create_body(cove, "--public", "--allowed-cidr", "10.0.0.0/8", "--allowed-cidr", "::1")
    # The API checks the networks: the CLI sends what it was given.
    assert body["access"] == {"is_public": True, "allowed_cidrs": ["10.0.0.0/8", "::1"]}
    create_body(cove)
    assert "access" not in cove.bodies("POST")[1]["instance"]


def test_access_changes_what_is_given_and_shows_the_result(cove: FakeCove) -> None:
    published = instance(
        "ACTIVE",
        access={"is_public": True, "allowed_cidrs": ["10.0.0.0/8"]},
        addresses=[
            {"address": "127.42.0.5", "type": "private"},
            {"address": "203.0.113.5", "type": "public", "port": 20001},
        ],
    )
    cove.on("PUT", "instances/i-1", reply(202))
    cove.on("GET", "instances/i-1", reply(200, {"instance": published}))
    result = run("instance", "access", "i-1", "--public", "--allowed-cidr", "10.0.0.0/8")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [
        {"instance": {"access": {"is_public": True, "allowed_cidrs": ["10.0.0.0/8"]}}}
    ]
    lines = result.stdout.splitlines()
    assert "published      203.0.113.5:20001 (public)" in lines, lines
    # Without options it only shows; `show` has it in one line.
    assert run("instance", "access", "i-1").exit_code == 0
    assert len(cove.bodies("PUT")) == 1
    shown = run("instance", "show", "i-1").stdout.splitlines()
    assert "access            public, from 10.0.0.0/8" in shown
    assert "addresses         127.42.0.5 (private), 203.0.113.5:20001 (public)" in shown
