"""``cove flavor``, ``cove datastore``, ``cove limits``, ``cove network`` and ``cove quota``,
against a fake Cove."""

from __future__ import annotations

import json

from fake_cove import PROJECT_ID, FakeCove, reply, run


def test_flavors(cove: FakeCove) -> None:
    flavor = {"id": None, "str_id": "small", "name": "small", "ram": 512, "vcpus": 1, "disk": 2}
    cove.on("GET", "flavors", reply(200, {"flavors": [flavor]}))
    cove.on("GET", "flavors/small", reply(200, {"flavor": flavor}))
    assert run("flavor", "list").stdout.splitlines()[1].split() == [
        "small",
        "small",
        "1",
        "512",
        "2",
    ]
    shown = run("flavor", "show", "small").stdout.splitlines()
    assert "str_id  small" in shown
    assert not any(line.startswith("id ") for line in shown)


def test_datastores(cove: FakeCove) -> None:
    ds = {
        "id": "d-1",
        "name": "postgresql",
        "default_version": "v-16",
        "versions": [{"id": "v-15", "name": "15"}, {"id": "v-16", "name": "16"}],
    }
    versions = [{"id": "v-16", "name": "16", "version": "16.4", "datastore": "d-1"}]
    cove.on("GET", "datastores", reply(200, {"datastores": [ds]}))
    cove.on("GET", "datastores/postgresql", reply(200, {"datastore": ds}))
    cove.on("GET", "datastores/postgresql/versions", reply(200, {"versions": versions}))
    listed = run("datastore", "list").stdout.splitlines()
    assert listed[1].split() == ["postgresql", "d-1", "16", "15,", "16"]
    assert "default_version  16" in run("datastore", "show", "postgresql").stdout
    assert run("datastore", "versions", "postgresql").stdout.splitlines()[1].split() == [
        "16",
        "16.4",
        "v-16",
    ]


def test_limits(cove: FakeCove) -> None:
    body = {
        "limits": [
            {"verb": "ABSOLUTE", "max_instances": 10, "max_volumes": 40},
            {"verb": "POST", "uri": "*", "value": 200, "remaining": 199, "unit": "MINUTE"},
        ]
    }
    cove.on("GET", "limits", reply(200, body))
    out = run("limits").stdout
    assert "max_instances  10" in out
    assert "POST  *    200    199        MINUTE" in out
    shown = json.loads(run("limits", "-f", "json").stdout)
    assert shown["max_instances"] == 10
    assert shown["rate_limits"][0] == {
        "verb": "POST",
        "uri": "*",
        "value": 200,
        "remaining": 199,
        "unit": "MINUTE",
        "nextAvailable": None,
    }
    assert run("limits", "-f", "value", "-c", "max_volumes").stdout == "40\n"


def test_networks(cove: FakeCove) -> None:
    nets = [
        {"id": "n-1", "name": "default", "cidr": "127.42.0.0/16", "is_default": True},
        {"id": "n-2", "name": "lab", "cidr": "127.43.0.0/24", "is_default": False},
    ]
    cove.on("GET", "networks", reply(200, {"networks": nets}))
    result = run("network", "list")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["ID", "Name", "CIDR", "Default"],
        ["n-1", "default", "127.42.0.0/16", "true"],
        ["n-2", "lab", "127.43.0.0/24", "false"],
    ]


def test_quota_show_own_project_and_by_name(cove: FakeCove) -> None:
    quotas = [
        {"resource": "instances", "in_use": 2, "reserved": 0, "limit": 10},
        {"resource": "ram", "in_use": 4096, "reserved": 0, "limit": -1},
    ]
    for project in (PROJECT_ID, "ab" * 16):
        cove.on("GET", f"mgmt/quotas/{project}", reply(200, {"quotas": quotas}))
    mine = run("quota", "show")
    assert mine.exit_code == 0, mine.output
    assert [line.split() for line in mine.stdout.splitlines()] == [
        ["Resource", "In", "use", "Reserved", "Limit"],
        ["instances", "2", "0", "10"],
        ["ram", "4096", "0", "unlimited"],
    ]
    assert run("quota", "show", "-f", "csv", "-c", "resource").stdout == (
        '"Resource"\n"instances"\n"ram"\n'
    )
    assert run("quota", "show", "admin").exit_code == 0
    assert run("quota", "show", "shop").exit_code == 0
    assert run("quota", "show", "cd" * 16).exit_code == 1  # an id is not looked up
    unknown = run("quota", "show", "nope")
    assert unknown.stderr == "Error: no project named 'nope' is visible to you\n"
    paths = [r.url.path.rsplit("/", 1)[-1] for r in cove.requests]
    assert paths == [PROJECT_ID, PROJECT_ID, PROJECT_ID, "ab" * 16, "cd" * 16]
    looked_up = [r.url.params["name"] for r in cove.auth_requests if r.method == "GET"]
    assert looked_up == ["shop", "nope"]


def test_quota_set(cove: FakeCove) -> None:
    cove.on("PUT", f"mgmt/quotas/{'ab' * 16}", reply(200, {"quotas": {"instances": 3}}))
    result = run("quota", "set", "shop", "instances", "3")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [{"quotas": {"instances": 3}}]
    assert result.stdout == "instances  3\n"
    assert run("quota", "set", "shop", "instances", "-2").exit_code == 2
