"""Networks against a real SQLite control database: the repository functions, the API, the
task manager's address allocation and ``cove-manage network``."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.cli.manage_network import network as network_group
from cove.common.errors import BadRequest, ConfigurationError, Conflict, NetworkNotFound
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Instance, Network
from cove.db.networks import (
    create_network,
    default_network,
    delete_network,
    find_network,
    list_networks,
    resolve_network,
    set_default_network,
    sync_default_network,
)
from cove.db.sealed import CreateArgs
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from fakes import FakeBus, FakeDriver
from rows import add_instance

POOL = "127.42.0.0/16"


@pytest.fixture
def settings(tmp_path, migrated_db) -> Settings:
    settings = load_settings(data_dir=tmp_path, max_volume_size=10, page_size=2)
    migrated_db(settings.database_url)
    return settings


@pytest.fixture
def db(settings):
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def synced(db, settings) -> Database:
    with db.session() as s:
        sync_default_network(s, settings)
    return db


def networks(db: Database) -> dict[str, tuple[str, bool]]:
    with db.session() as s:
        return {n.name: (n.cidr, n.is_default) for n in list_networks(s)}


# -- sync --------------------------------------------------------------------------------------


def test_sync_creates_the_default_once(db, settings):
    with db.session() as s:
        first = sync_default_network(s, settings)
    with db.session() as s:
        again = sync_default_network(s, settings)
    assert first.id == again.id and first.name == "default"
    assert networks(db) == {"default": (POOL, True)}


def test_sync_makes_the_default_follow_address_pool(db, settings, tmp_path):
    with db.session() as s:
        sync_default_network(s, settings)
    moved = load_settings(data_dir=tmp_path, address_pool="127.77.0.0/24")
    with db.session() as s:
        sync_default_network(s, moved)
    assert networks(db) == {"default": ("127.77.0.0/24", True)}


def test_sync_keeps_another_default_chosen_by_the_operator(synced, settings):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24", default=True)
    with synced.session() as s:
        assert sync_default_network(s, settings).name == "lab"
    assert networks(synced) == {"default": (POOL, False), "lab": ("127.50.0.0/24", True)}


def test_sync_refuses_a_pool_overlapping_another_network(synced, tmp_path):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24")
    clashing = load_settings(data_dir=tmp_path, address_pool="127.50.0.0/16")
    with pytest.raises(ConfigurationError, match="overlaps network 'lab'"), synced.session() as s:
        sync_default_network(s, clashing)
    assert networks(synced)["default"] == (POOL, True)


def test_sync_attaches_instances_recorded_before_networks(db, settings):
    old = add_instance(db)
    with db.session() as s:
        default = sync_default_network(s, settings)
    with db.session() as s:
        inst = s.get(Instance, old)
        assert inst is not None and inst.network_id == default.id


# -- create, default, delete -------------------------------------------------------------------


def test_create_and_find_by_id_or_name(synced):
    with synced.session() as s:
        lab = create_network(s, "lab", "127.50.0.0/24")
    with synced.session() as s:
        assert find_network(s, lab.id).name == "lab"
        assert find_network(s, "lab").cidr == "127.50.0.0/24"
        with pytest.raises(NetworkNotFound, match="Network 'nope' cannot be found"):
            find_network(s, "nope")


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("nonsense", "not a network"),
        ("127.50.0.1/24", "not a network"),  # host bits set
        ("10.0.0.0/8", "IPv4 loopback"),
        ("::1/128", "IPv4 loopback"),
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.50.0.0/31", "too small"),
    ],
)
def test_create_refuses_invalid_cidrs(synced, cidr, message):
    with pytest.raises(BadRequest, match=message), synced.session() as s:
        create_network(s, "lab", cidr)


@pytest.mark.parametrize(
    "name", ["", "-x", "a b", "x" * 65, "5f0c1e2a-1111-2222-3333-444455556666"]
)
def test_create_refuses_invalid_names(synced, name):
    with pytest.raises(BadRequest, match="Invalid network name"), synced.session() as s:
        create_network(s, name, "127.50.0.0/24")


def test_create_refuses_overlaps_and_duplicate_names(synced):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24")
    for name, cidr, message in (
        ("lab", "127.51.0.0/24", "named 'lab' already exists"),
        ("inner", "127.50.0.128/25", "overlaps network 'lab'"),
        ("outer", "127.50.0.0/16", "overlaps network 'lab'"),
        ("same", "127.50.0.0/24", "overlaps network 'lab'"),
        ("big", "127.42.0.0/15", "overlaps network 'default'"),
    ):
        with pytest.raises(Conflict, match=message), synced.session() as s:
            create_network(s, name, cidr)
    assert set(networks(synced)) == {"default", "lab"}


def test_one_default_at_a_time(synced):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24", default=True)
    assert networks(synced) == {"default": (POOL, False), "lab": ("127.50.0.0/24", True)}
    with synced.session() as s:
        set_default_network(s, "default")
    assert networks(synced) == {"default": (POOL, True), "lab": ("127.50.0.0/24", False)}


def test_delete_refuses_the_default_and_networks_in_use(synced):
    with synced.session() as s:
        lab = create_network(s, "lab", "127.50.0.0/24")
    with pytest.raises(Conflict, match="is the default network"), synced.session() as s:
        delete_network(s, "default")
    iid = add_instance(synced)
    with synced.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.network_id = lab.id
    with pytest.raises(Conflict, match="in use by 1 instance"), synced.session() as s:
        delete_network(s, "lab")
    with synced.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.deleted = True  # a deleted instance's row does not keep the network
    with synced.session() as s:
        delete_network(s, lab.id)
    assert set(networks(synced)) == {"default"}
    with pytest.raises(NetworkNotFound), synced.session() as s:
        delete_network(s, "lab")


# -- resolve_network ---------------------------------------------------------------------------


def test_resolve_network_accepts_trove_and_openstack_client_shapes(synced):
    with synced.session() as s:
        lab = create_network(s, "lab", "127.50.0.0/24")
        assert resolve_network(s, []).name == "default"
        assert resolve_network(s, [{"net-id": lab.id}]).id == lab.id  # troveclient
        assert resolve_network(s, [{"network_id": lab.id}]).id == lab.id  # openstack client
        assert resolve_network(s, [{"net-id": "lab"}]).id == lab.id  # by name
        assert resolve_network(s, [{"net-id": "lab", "network_id": "lab"}]).id == lab.id
        assert resolve_network(s, [{"network_id": "lab", "subnet_id": None}]).id == lab.id


@pytest.mark.parametrize(
    ("nics", "message"),
    [
        ([{"net-id": "nope"}], "Network 'nope' cannot be found."),
        ([{"network_id": "nope"}], "Network 'nope' cannot be found."),
        ([{"net-id": "lab"}, {"net-id": "default"}], "one network; 2 NICs"),
        (["lab"], "must be an object"),
        ([None], "must be an object"),
        ([{"port-id": "x"}], "Unknown key"),
        ([{"net-id": "lab", "v4-fixed-ip": "127.50.0.9"}], "Unknown key"),
        ([{"net-id": "lab", "subnet_id": "s"}], "choosing a subnet"),
        ([{"net-id": "lab", "ip_address": "127.50.0.9"}], "choosing a fixed address"),
        ([{}], "must name a network"),
        ([{"net-id": ["lab"]}], "a string"),
        ([{"net-id": ""}], "a string"),
        ([{"net-id": "lab", "network_id": "default"}], "different networks"),
    ],
)
def test_resolve_network_refuses_with_a_clear_400(synced, nics, message):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24")
    with pytest.raises(BadRequest) as caught, synced.session() as s:
        resolve_network(s, nics)
    assert type(caught.value) is BadRequest and caught.value.status == 400
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("nics", "message"),
    [
        ([{"net-id": "lab\ud800"}], "A network id or name must be valid Unicode text."),
        ([{"network_id": "\udcff"}], "A network id or name must be valid Unicode text."),
        ([{"net-id": "lab", "\ud800": "x"}], "A key of 'nics' must be valid Unicode text."),
    ],
)
def test_resolve_network_refuses_lone_surrogates(synced, nics, message):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24")
    with pytest.raises(BadRequest) as caught, synced.session() as s:
        resolve_network(s, nics)
    assert caught.value.message == message
    caught.value.message.encode("utf-8")  # never echoes what cannot be shown


def test_lookups_and_names_refuse_lone_surrogates(synced):
    """cove-manage passes argv, which carries undecodable bytes as lone surrogates."""
    with synced.session() as s:
        with pytest.raises(BadRequest, match="must be valid Unicode text"):
            find_network(s, "\udcff")
        with pytest.raises(BadRequest, match="must be valid Unicode text") as caught:
            create_network(s, "lab\udcff", "127.50.0.0/24")
        caught.value.message.encode("utf-8")


def test_resolve_network_without_a_default(db):
    with pytest.raises(BadRequest, match="No default network"), db.session() as s:
        resolve_network(s, [])


# -- the API -----------------------------------------------------------------------------------


@pytest.fixture
def api(settings, synced, api_app):
    with synced.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        create_network(s, "lab", "127.50.0.0/24")
        create_network(s, "qa", "127.51.0.0/24")
    bus = FakeBus()
    bus.answer("prepare", None)  # placing an instance asks the guest to prepare, nothing more
    context = build_context(settings, synced, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    project_id, password = add_account(synced, "p1", "u1", "reader", project_id="p1")
    reader, _ = context.identity.authenticate(password_auth("u1", password, project_id))
    client.headers["X-Auth-Token"] = reader
    client.member_password = add_account(synced, "p1", "u2", "member")[1]  # type: ignore[attr-defined]
    client.context = context  # type: ignore[attr-defined]
    client.tc = TaskContext(settings, synced, bus, FakeDriver())  # type: ignore[attr-defined,arg-type]
    yield client


def as_member(api) -> dict[str, str]:
    token, _ = api.context.identity.authenticate(password_auth("u2", api.member_password, "p1"))
    return {"X-Auth-Token": token}


def test_a_reader_lists_networks_page_by_page(api):
    first = api.get("/v1.0/p1/networks")
    assert first.status_code == 200, first.text
    body = first.json()
    assert [n["name"] for n in body["networks"]] == ["default", "lab"]
    default = body["networks"][0]
    assert default["cidr"] == POOL and default["is_default"] is True
    assert set(default) == {"id", "name", "cidr", "is_default", "links"}
    assert default["links"][0]["href"].endswith(f"/v1.0/p1/networks/{default['id']}")
    (link,) = body["links"]
    assert link["rel"] == "next" and f"marker={body['networks'][1]['id']}" in link["href"]
    second = api.get("/v1.0/p1/networks", params={"marker": body["networks"][1]["id"]}).json()
    assert [n["name"] for n in second["networks"]] == ["qa"] and "links" not in second
    one = api.get("/v1.0/p1/networks", params={"limit": 1}).json()
    assert len(one["networks"]) == 1 and "limit=1" in one["links"][0]["href"]


def test_show_network_by_id_or_name(api):
    lab = api.get("/v1.0/p1/networks/lab").json()["network"]
    assert lab["cidr"] == "127.50.0.0/24" and lab["is_default"] is False
    assert api.get(f"/v1.0/p1/networks/{lab['id']}").json()["network"]["name"] == "lab"
    resp = api.get("/v1.0/p1/networks/nope")
    assert resp.status_code == 404
    assert resp.json() == {
        "itemNotFound": {"code": 404, "message": "Network 'nope' cannot be found."}
    }


def test_networks_need_a_token_of_the_project(api):
    assert api.get("/v1.0/p1/networks", headers={"X-Auth-Token": ""}).status_code == 401
    assert api.get("/v1.0/p2/networks").status_code == 403


def create_body(**extra: Any) -> dict[str, Any]:
    inst = {"name": "orders", "flavorRef": "2", "volume": {"size": 1}}
    inst.update(extra)
    return {"instance": inst}


def test_create_with_an_unknown_network_is_400(api):
    for nics in ([{"net-id": "5f0c1e2a-1111-2222-3333-444455556666"}], [{"network_id": "nope"}]):
        resp = api.post("/v1.0/p1/instances", json=create_body(nics=nics), headers=as_member(api))
        assert resp.status_code == 400, resp.text
        (fault,) = resp.json().values()
        assert fault["message"].startswith("Network '") and "cannot be found" in fault["message"]
        assert list(resp.json()) == ["badRequest"]
    assert api.tc.bus.casts == []


@pytest.mark.parametrize(
    ("nics", "message"),
    [
        ([{"net-id": "lab"}, {"net-id": "qa"}], "at most 1 item"),
        ([{"net-id": "lab", "subnet_id": "x"}], "choosing a subnet"),
        ([{"net-id": "lab", "port-id": "x"}], "Unknown key"),
        (["lab"], "must be an object"),
    ],
)
def test_create_refuses_nics_cove_cannot_honour(api, nics, message):
    resp = api.post("/v1.0/p1/instances", json=create_body(nics=nics), headers=as_member(api))
    assert resp.status_code == 400 and message in resp.json()["badRequest"]["message"], resp.text


def test_create_naming_a_network_in_invalid_unicode_is_400(api):
    # Escaped in the JSON text: a lone surrogate, which no encoder would send raw.
    for nic in ('{"net-id": "\\ud800"}', '{"net-id": "lab", "\\ud800": 1}'):
        raw = (
            '{"instance": {"name": "orders", "flavorRef": "2", "volume": {"size": 1}, '
            f'"nics": [{nic}]}}}}'
        )
        resp = api.post(
            "/v1.0/p1/instances",
            content=raw,
            headers={**as_member(api), "content-type": "application/json"},
        )
        assert resp.status_code == 400, resp.text
        assert "must be valid Unicode" in resp.json()["badRequest"]["message"]
    assert api.tc.bus.casts == []


def place(api, nics: list[Any] | None = None) -> dict[str, Any]:
    """Create an instance through the API and place it as the task manager does."""
    extra = {"nics": nics} if nics is not None else {}
    resp = api.post("/v1.0/p1/instances", json=create_body(**extra), headers=as_member(api))
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    create_instance(api.tc, RequestContext(), iid, threading.Event())
    return api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]


def test_an_instance_gets_its_address_from_the_network_it_names(api):
    inst = place(api, [{"network_id": "lab"}])  # as the openstack client sends it
    with api.tc.db.session() as s:
        row = s.get(Instance, inst["id"])
        lab = s.scalar(select(Network).where(Network.name == "lab"))
        assert row is not None and lab is not None and row.network_id == lab.id
    (entry,) = inst["addresses"]
    assert entry["network"] == "lab" and entry["type"] == "private"
    assert ipaddress.ip_address(entry["address"]) in ipaddress.ip_network("127.50.0.0/24")
    assert inst["ip"] == [entry["address"]]


def test_an_instance_naming_no_network_gets_the_default(api):
    with api.tc.db.session() as s:
        set_default_network(s, "qa")
    inst = place(api)
    (entry,) = inst["addresses"]
    assert entry["network"] == "qa"
    assert ipaddress.ip_address(entry["address"]) in ipaddress.ip_network("127.51.0.0/24")


def test_a_row_without_a_network_is_placed_in_the_default(settings, synced):
    with synced.session() as s:
        create_network(s, "lab", "127.50.0.0/24", default=True)
    iid = add_instance(synced, Task.BUILDING, ComputeState.BUILD)  # network_id stays NULL
    bus = FakeBus()
    bus.answer("prepare", None)
    tc = TaskContext(settings, synced, bus, FakeDriver())  # type: ignore[arg-type]
    with synced.session() as s:
        s.get(Instance, iid).task_args = tc.sealer.seal(iid, CreateArgs([], []))  # type: ignore[union-attr]
    create_instance(tc, RequestContext(), iid, threading.Event())
    with synced.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None and inst.network_id is None and inst.address is not None
        assert ipaddress.ip_address(inst.address) in ipaddress.ip_network("127.50.0.0/24")
        assert default_network(s) is not None


# -- cove-manage network -----------------------------------------------------------------------


@pytest.fixture
def manage(settings, synced, monkeypatch):
    monkeypatch.setenv("COVE_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(network_group, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    return invoke


def test_manage_network_commands(manage, synced):
    assert "created" in manage("create", "lab", "127.50.0.0/24")
    listing = manage("list")
    assert listing.splitlines()[0].split() == ["Name", "CIDR", "ID", "Instances", "Default"]
    assert any(
        line.split()[:2] == ["default", POOL] and line.endswith("true")
        for line in listing.splitlines()
    )
    assert "lab" in listing and "127.50.0.0/24" in listing
    assert "already exists" in manage("create", "lab", "127.60.0.0/24", ok=False)
    assert "overlaps network 'lab'" in manage("create", "lab2", "127.50.0.0/25", ok=False)
    assert "IPv4 loopback" in manage("create", "wide", "10.0.0.0/8", ok=False)
    assert "is the default" in manage("set-default", "lab")
    assert networks(synced)["lab"] == ("127.50.0.0/24", True)
    assert "is the default network" in manage("delete", "lab", ok=False)
    assert "cannot be found" in manage("set-default", "nope", ok=False)
    manage("set-default", "default")
    assert "deleted" in manage("delete", "lab")
    assert "the default" in manage("create", "qa", "127.51.0.0/24", "--default")
    assert networks(synced) == {"default": (POOL, False), "qa": ("127.51.0.0/24", True)}
