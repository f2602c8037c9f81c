"""Configuration groups and parameter catalogues: the API against a real SQLite control
database, the pushes of settings to guests (within the request, then by the task manager until
confirmed), and how registration stores a version's catalogue. The bus and the compute driver
are the shared fakes of tests/fakes.py and the parameter readers stand-ins, all recording what
they are asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.common.errors import GuestError, InvalidArguments, RpcTimeout
from cove.common.ids import new_id, utcnow
from cove.common.settings import Settings, load_settings
from cove.compute import parameters as readers
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_found_versions, register_version, seed_flavors
from cove.db.configurations import catalogue, store_catalogue
from cove.db.engine import Database
from cove.db.instances import mark_settings_pending
from cove.db.models import Datastore, DatastoreVersion, GuestState, Instance
from cove.db.networks import sync_default_network
from cove.domain.datastores import DATASTORES
from cove.domain.parameters import Parameter, ParamType
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.rpc import RequestContext
from cove.taskmanager.configure import FAULT_PREFIX, apply_settings, push_pending, push_settings
from cove.taskmanager.context import PendingPushes, TaskContext
from cove.taskmanager.create import guest_spec
from cove.taskmanager.monitor import check_instances
from fakes import FakeBus, FakeDriver

PG15 = FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin")
PG14 = FoundVersion("postgresql", "14", "14.9", "/usr/lib/postgresql/14/bin")
REDIS = FoundVersion("redis", "7.0", "7.0.15", "/usr/bin")

#: The dispatching reader itself, taken before the unit tests' fixture stands in for it.
DISPATCH = readers.read_parameters

CATALOGUE = [
    Parameter("work_mem", ParamType.INTEGER, False, min=64, max=2147483647),
    Parameter("max_locks_per_transaction", ParamType.INTEGER, True, min=16, max=1073741823),
    Parameter("random_page_cost", ParamType.FLOAT, False, min=0),
    Parameter("jit", ParamType.BOOLEAN, False),
    Parameter("application_name", ParamType.STRING, False),
    Parameter("log_min_messages", ParamType.STRING, False, allowed=("debug1", "info", "warning")),
]


def applied(bus: FakeBus) -> list[str]:
    """The instances whose guest was given settings, in order."""
    return [t.removeprefix("guestagent.") for t, m, _a in bus.calls if m == "apply_configuration"]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _version(db: Database, found: FoundVersion) -> str:
    with db.session() as s:
        ds = s.scalar(select(Datastore).where(Datastore.name == found.datastore))
        assert ds is not None
        return next(v.id for v in ds.versions if v.name == found.name)


USERS = (("p1", "u1", "member"), ("p1", "r1", "reader"), ("p2", "u2", "member"))


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    """What every test starts from: the catalogue (PostgreSQL 15 the default, with the
    parameters of CATALOGUE, and 14; Redis), the default network and the accounts of USERS.
    Returns each user's (project id, password)."""
    with db.session() as s:
        seed_flavors(s)
        for found in (PG15, PG14, REDIS):
            register_version(s, found)
        sync_default_network(s, settings)
        s.flush()
        for found in (PG15, PG14):
            ds = s.scalar(select(Datastore).where(Datastore.name == found.datastore))
            assert ds is not None
            version = next(v for v in ds.versions if v.name == found.name)
            store_catalogue(s, version, CATALOGUE, found.version)
        ds = s.scalar(select(Datastore).where(Datastore.name == "postgresql"))
        assert ds is not None
        ds.default_version_id = next(v.id for v in ds.versions if v.name == "15")
    return {
        user: add_account(db, project, user, role, project_id=project)
        for project, user, role in USERS
    }


@pytest.fixture
def api(tmp_path: Any, seeded_db: Any, api_app: Any) -> Any:
    settings = load_settings(data_dir=tmp_path, page_size=2, rate_limit_per_minute=0)
    accounts = seeded_db(settings, seed)
    db = Database(settings.database_url)
    bus = FakeBus()
    # A guest that takes whatever it is given; tests of other answers replace this.
    bus.answer("apply_configuration", {"restart_required": False})
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    assert context.identity is not None
    tokens = {}
    for user, (pid, password) in accounts.items():
        tokens[user], _ = context.identity.authenticate(password_auth(user, password, pid))
    client.headers["X-Auth-Token"] = tokens["u1"]
    client.tokens = tokens  # type: ignore[attr-defined]
    client.bus = bus  # type: ignore[attr-defined]
    client.db = db  # type: ignore[attr-defined]
    client.settings = settings  # type: ignore[attr-defined]
    yield client
    db.dispose()


def fault(resp: Any, status: int, name: str) -> str:
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert list(data) == [name], data
    return str(data[name]["message"])


def group(api: Any, values: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "tuned",
        "values": {"work_mem": 4096} if values is None else values,
        "datastore": {"type": "postgresql", "version": "15"},
    }
    body.update(extra)
    resp = api.post("/v1.0/p1/configurations", json={"configuration": body})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["configuration"])


def instance(api: Any, version: str = "15", **extra: Any) -> str:
    body = {
        "name": "db",
        "flavorRef": "1",
        "volume": {"size": 1},
        "datastore": {"type": "postgresql", "version": version},
        **extra,
    }
    resp = api.post("/v1.0/p1/instances", json={"instance": body})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["instance"]["id"])


def make_active(api: Any, instance_id: str) -> None:
    """The instance as a finished build leaves it: placed, its guest reporting HEALTHY."""
    with api.db.session() as s:
        inst = s.get(Instance, instance_id)
        now = utcnow()
        inst.task = Task.NONE.value
        inst.compute_state = ComputeState.ACTIVE.value
        inst.address = "127.42.0.9"
        inst.agent_started_at = now
        s.add(
            GuestState(instance_id=instance_id, status=GuestStatus.HEALTHY.value, heartbeat_at=now)
        )


# -- parameters -------------------------------------------------------------------------------


def test_parameters_by_name_and_by_version_id(api: Any) -> None:
    vid = _version(api.db, PG15)
    listed = api.get("/v1.0/p1/datastores/postgresql/versions/15/parameters").json()
    params = listed["configuration-parameters"]
    assert [p["name"] for p in params] == sorted(p.name for p in CATALOGUE)
    by_id = api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters").json()
    assert by_id == listed
    one = api.get("/v1.0/p1/datastores/postgresql/versions/15/parameters/work_mem").json()
    assert one == {
        "name": "work_mem",
        "datastore_version_id": vid,
        "restart_required": False,
        "type": "integer",
        "min": 64,
        "max": 2147483647,
    }
    assert api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters/work_mem").json() == one
    jit = api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters/jit").json()
    assert "min" not in jit and "max" not in jit and jit["type"] == "boolean"
    level = api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters/log_min_messages").json()
    assert level["allowed"] == ["debug1", "info", "warning"]
    fault(api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters/port"), 404, "itemNotFound")
    fault(api.get("/v1.0/p1/datastores/postgresql/versions/9/parameters"), 404, "itemNotFound")
    fault(api.get("/v1.0/p1/datastores/versions/nope/parameters"), 404, "itemNotFound")
    # A version whose catalogue could not be read has none.
    empty = api.get("/v1.0/p1/datastores/redis/versions/7.0/parameters").json()
    assert empty == {"configuration-parameters": []}
    reader = {"X-Auth-Token": api.tokens["r1"]}
    assert (
        api.get(f"/v1.0/p1/datastores/versions/{vid}/parameters", headers=reader).status_code == 200
    )


# -- groups -----------------------------------------------------------------------------------


def test_create_show_and_list(api: Any) -> None:
    created = group(
        api, {"work_mem": 4096.0, "jit": 0, "log_min_messages": "INFO"}, description="d"
    )
    vid = _version(api.db, PG15)
    assert created["values"] == {"work_mem": 4096, "jit": False, "log_min_messages": "info"}
    assert isinstance(created["values"]["work_mem"], int)
    assert created["instance_count"] == 0
    assert created["datastore_version_id"] == vid
    assert (created["datastore_name"], created["datastore_version_name"]) == ("postgresql", "15")
    assert created["datastore_version_number"] == "15.4"
    assert created["description"] == "d"
    shown = api.get(f"/v1.0/p1/configurations/{created['id']}").json()["configuration"]
    assert shown == created
    listed = api.get("/v1.0/p1/configurations").json()
    assert [g["id"] for g in listed["configurations"]] == [created["id"]]
    summary = listed["configurations"][0]
    assert "values" not in summary and "instance_count" not in summary
    assert summary["datastore_version_number"] == "15.4" and "links" not in listed


def test_the_default_datastore_version_is_used(api: Any) -> None:
    api.settings.default_datastore = "postgresql"
    resp = api.post("/v1.0/p1/configurations", json={"configuration": {"name": "x", "values": {}}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["configuration"]["datastore_version_name"] == "15"
    api.settings.default_datastore = None
    msg = fault(
        api.post("/v1.0/p1/configurations", json={"configuration": {"name": "x", "values": {}}}),
        400,
        "badRequest",
    )
    assert "Please specify datastore" in msg


def test_groups_page_with_limit_and_marker(api: Any) -> None:
    ids = [group(api, name=f"g{n}")["id"] for n in range(3)]
    first = api.get("/v1.0/p1/configurations").json()
    assert [g["id"] for g in first["configurations"]] == ids[:2]
    href = first["links"][0]["href"]
    assert f"marker={ids[1]}" in href and "limit=2" in href
    rest = api.get(f"/v1.0/p1/configurations?marker={ids[1]}").json()
    assert [g["id"] for g in rest["configurations"]] == ids[2:] and "links" not in rest
    one = api.get("/v1.0/p1/configurations?limit=1").json()
    assert len(one["configurations"]) == 1 and "links" in one


@pytest.mark.parametrize(
    ("values", "text"),
    [
        (
            {"port": 5433},
            "The configuration parameter port is not supported for this datastore: postgresql 15.",
        ),
        ({"work_mem": "1"}, "work_mem is not of type integer"),
        ({"work_mem": 1.5}, "work_mem is not of type integer"),
        ({"work_mem": True}, "work_mem is not of type integer"),
        ({"jit": "on"}, "jit is not of type boolean"),
        ({"application_name": 3}, "application_name is not of type string"),
        ({"work_mem": 1}, "less than the minimum allowed: 64"),
        ({"max_locks_per_transaction": 2**40}, "greater than the maximum allowed: 1073741823"),
        ({"log_min_messages": "panic"}, "must be one of: debug1, info, warning"),
        ({"application_name": "a\nb"}, "one line"),
    ],
)
def test_values_are_validated_against_the_catalogue(
    api: Any, values: dict[str, Any], text: str
) -> None:
    body = {"name": "g", "values": values, "datastore": {"type": "postgresql", "version": "15"}}
    msg = fault(
        api.post("/v1.0/p1/configurations", json={"configuration": body}),
        422,
        "unprocessableEntity",
    )
    assert text in msg
    assert api.get("/v1.0/p1/configurations").json() == {"configurations": []}


def test_a_parameter_denied_after_its_catalogue_was_read_is_never_offered(api: Any) -> None:
    # A catalogue stored before shared_buffers was denied (it is read again only when the
    # binaries change) still holds it.
    with api.db.session() as s:
        version = s.get(DatastoreVersion, _version(api.db, PG15))
        stale = [*CATALOGUE, Parameter("shared_buffers", ParamType.INTEGER, True, min=16)]
        store_catalogue(s, version, stale, PG15.version)
    path = "/v1.0/p1/datastores/postgresql/versions/15/parameters"
    names = [p["name"] for p in api.get(path).json()["configuration-parameters"]]
    assert "work_mem" in names and "shared_buffers" not in names
    fault(api.get(f"{path}/shared_buffers"), 404, "itemNotFound")
    body = {"name": "g", "values": {"shared_buffers": 1024}, "datastore": {"type": "postgresql"}}
    msg = fault(
        api.post("/v1.0/p1/configurations", json={"configuration": body}),
        422,
        "unprocessableEntity",
    )
    assert "shared_buffers is not supported" in msg


def test_a_version_without_a_catalogue_does_not_support_groups(api: Any) -> None:
    body = {"name": "g", "values": {}, "datastore": {"type": "redis", "version": "7.0"}}
    msg = fault(
        api.post("/v1.0/p1/configurations", json={"configuration": body}),
        422,
        "unprocessableEntity",
    )
    assert msg == "Configuration groups are not supported for this datastore: redis 7.0."


@pytest.mark.parametrize(
    ("change", "status", "name", "text"),
    [
        ({"name": "   "}, 400, "badRequest", "non-empty"),
        ({"name": "x" * 256}, 400, "badRequest", "255"),
        ({"description": "d" * 256}, 400, "badRequest", "description"),
        ({"values": [1]}, 400, "badRequest", "values"),
        ({"values": None}, 400, "badRequest", "values"),
        ({"datastore": {"type": "mongodb"}}, 404, "itemNotFound", "mongodb"),
        ({"datastore": {"type": "postgresql", "version": "9"}}, 404, "itemNotFound", "9"),
        ({"bogus": 1}, 400, "badRequest", "bogus"),
    ],
)
def test_create_validation(
    api: Any, change: dict[str, Any], status: int, name: str, text: str
) -> None:
    body: dict[str, Any] = {
        "name": "g",
        "values": {},
        "datastore": {"type": "postgresql", "version": "15"},
    }
    body.update(change)
    msg = fault(api.post("/v1.0/p1/configurations", json={"configuration": body}), status, name)
    assert text in msg


def test_patch_merges_and_put_replaces(api: Any) -> None:
    gid = group(api, {"work_mem": 4096, "jit": True})["id"]
    resp = api.patch(
        f"/v1.0/p1/configurations/{gid}",
        json={"configuration": {"values": {"jit": False, "random_page_cost": 1.1}}},
    )
    assert resp.status_code == 200 and resp.content == b""
    shown = api.get(f"/v1.0/p1/configurations/{gid}").json()["configuration"]
    assert shown["values"] == {"work_mem": 4096, "jit": False, "random_page_cost": 1.1}
    fault(
        api.patch(
            f"/v1.0/p1/configurations/{gid}",
            json={"configuration": {"values": {"work_mem": "8MB"}}},
        ),
        422,
        "unprocessableEntity",
    )
    resp = api.put(
        f"/v1.0/p1/configurations/{gid}",
        json={
            "configuration": {
                "values": {"application_name": "shop"},
                "name": "renamed",
                "description": None,
            }
        },
    )
    assert resp.status_code == 202 and resp.content == b""
    shown = api.get(f"/v1.0/p1/configurations/{gid}").json()["configuration"]
    assert shown["values"] == {"application_name": "shop"}
    assert shown["name"] == "renamed" and shown["description"] is None
    fault(
        api.put(f"/v1.0/p1/configurations/{gid}", json={"configuration": {"name": "x"}}),
        400,
        "badRequest",
    )
    # No instance is attached: nothing is pushed.
    assert applied(api.bus) == []


def test_password_values_are_masked(api: Any) -> None:
    with api.db.session() as s:
        version = s.get(DatastoreVersion, _version(api.db, PG15))
        store_catalogue(
            s, version, [*CATALOGUE, Parameter("x_password", ParamType.STRING, False)], "15.4"
        )
    created = group(api, {"x_password": "hunter2", "work_mem": 100})
    assert created["values"] == {"x_password": "***", "work_mem": 100}
    shown = api.get(f"/v1.0/p1/configurations/{created['id']}")
    assert "hunter2" not in shown.text


def test_delete(api: Any) -> None:
    gid = group(api)["id"]
    resp = api.delete(f"/v1.0/p1/configurations/{gid}")
    assert resp.status_code == 202
    fault(api.get(f"/v1.0/p1/configurations/{gid}"), 404, "itemNotFound")
    fault(api.delete(f"/v1.0/p1/configurations/{gid}"), 404, "itemNotFound")
    assert api.get("/v1.0/p1/configurations").json() == {"configurations": []}


def test_another_projects_group_is_not_found(api: Any) -> None:
    gid = group(api)["id"]
    other = {"X-Auth-Token": api.tokens["u2"]}
    values = {"configuration": {"values": {}}}
    for method, path, body in (
        ("GET", f"configurations/{gid}", None),
        ("GET", f"configurations/{gid}/instances", None),
        ("PATCH", f"configurations/{gid}", values),
        ("PUT", f"configurations/{gid}", values),
        ("DELETE", f"configurations/{gid}", None),
    ):
        resp = api.request(method, f"/v1.0/p2/{path}", json=body, headers=other)
        fault(resp, 404, "itemNotFound")
    assert api.get("/v1.0/p2/configurations", headers=other).json() == {"configurations": []}
    # Nor can another project's instance be created with it.
    body = {
        "instance": {
            "name": "x",
            "flavorRef": "1",
            "volume": {"size": 1},
            "datastore": {"type": "postgresql", "version": "15"},
            "configuration": gid,
        }
    }
    fault(api.post("/v1.0/p2/instances", json=body, headers=other), 404, "itemNotFound")
    assert api.get(f"/v1.0/p1/configurations/{gid}").json()["configuration"]["name"] == "tuned"


def test_readers_read_but_do_not_write(api: Any) -> None:
    gid = group(api)["id"]
    reader = {"X-Auth-Token": api.tokens["r1"]}
    assert api.get("/v1.0/p1/configurations", headers=reader).status_code == 200
    assert api.get(f"/v1.0/p1/configurations/{gid}", headers=reader).status_code == 200
    assert api.get(f"/v1.0/p1/configurations/{gid}/instances", headers=reader).status_code == 200
    body = {"configuration": {"name": "g", "values": {}}}
    values = {"configuration": {"values": {}}}
    for resp in (
        api.post("/v1.0/p1/configurations", json=body, headers=reader),
        api.patch(f"/v1.0/p1/configurations/{gid}", json=values, headers=reader),
        api.put(f"/v1.0/p1/configurations/{gid}", json=values, headers=reader),
        api.delete(f"/v1.0/p1/configurations/{gid}", headers=reader),
    ):
        assert "Policy doesn't allow" in fault(resp, 403, "forbidden")


# -- groups and instances ---------------------------------------------------------------------


def test_create_an_instance_with_a_group(api: Any) -> None:
    gid = group(api, {"work_mem": 4096})["id"]
    iid = instance(api, configuration=gid)
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert shown["configuration"]["id"] == gid and shown["configuration"]["name"] == "tuned"
    assert shown["configuration"]["links"][0]["href"].endswith(f"/configurations/{gid}")
    summary = api.get("/v1.0/p1/instances").json()["instances"][0]
    assert "configuration" not in summary
    detail = api.get("/v1.0/p1/instances/detail").json()["instances"][0]
    assert detail["configuration"]["id"] == gid
    # The build gives the guest the group's values.
    driver = FakeDriver()
    tc = TaskContext(api.settings, api.db, api.bus, driver)  # type: ignore[arg-type]
    tc.bus.answers["apply_configuration"] = {"restart_required": False}
    with api.db.session() as s:
        from cove.taskmanager.create import guest_spec

        inst = s.get(Instance, iid)
        inst.address = "127.42.0.9"
        assert guest_spec(tc, inst).overrides == {"work_mem": 4096}
    listed = api.get(f"/v1.0/p1/configurations/{gid}/instances").json()
    assert listed == {"instances": [{"id": iid, "name": "db"}]}
    assert api.get(f"/v1.0/p1/configurations/{gid}").json()["configuration"]["instance_count"] == 1
    msg = fault(api.delete(f"/v1.0/p1/configurations/{gid}"), 400, "badRequest")
    assert "detach" in msg
    assert driver.created == []  # only the settings were read


def test_a_group_may_be_named_by_its_name(api: Any) -> None:
    gid = group(api, name="tuned")["id"]
    iid = instance(api, configuration="tuned")  # what the openstack client sends
    assert api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]["configuration"]["id"] == gid
    other = instance(api)
    make_active(api, other)
    resp = api.put(f"/v1.0/p1/instances/{other}", json={"instance": {"configuration": "tuned"}})
    assert resp.status_code == 202, resp.text
    assert api.get(f"/v1.0/p1/instances/{other}").json()["instance"]["configuration"]["id"] == gid
    group(api, name="tuned")
    msg = fault(
        api.post(
            "/v1.0/p1/instances",
            json={
                "instance": {
                    "name": "x",
                    "flavorRef": "1",
                    "volume": {"size": 1},
                    "configuration": "tuned",
                }
            },
        ),
        400,
        "badRequest",
    )
    assert "Several" in msg
    # The group's own paths take a unique name too; two of a name must be told by id.
    only = group(api, name="only")["id"]
    resp = api.patch("/v1.0/p1/configurations/only", json={"configuration": {"values": {}}})
    assert resp.status_code == 200, resp.text
    assert api.get("/v1.0/p1/configurations/only").json()["configuration"]["id"] == only
    fault(api.get("/v1.0/p1/configurations/tuned"), 400, "badRequest")
    fault(
        api.put(f"/v1.0/p1/instances/{other}", json={"instance": {"configuration": "nope"}}),
        404,
        "itemNotFound",
    )


def test_an_instance_takes_only_a_group_of_its_version(api: Any) -> None:
    gid = group(api)["id"]
    body = {
        "name": "x",
        "flavorRef": "1",
        "volume": {"size": 1},
        "datastore": {"type": "postgresql", "version": "14"},
        "configuration": gid,
    }
    msg = fault(api.post("/v1.0/p1/instances", json={"instance": body}), 400, "badRequest")
    assert "postgresql 15" in msg and "postgresql 14" in msg
    body["configuration"] = new_id()
    fault(api.post("/v1.0/p1/instances", json={"instance": body}), 404, "itemNotFound")
    assert api.bus.casts == []
    other = instance(api, version="14")
    make_active(api, other)
    msg = fault(
        api.put(f"/v1.0/p1/instances/{other}", json={"instance": {"configuration": gid}}),
        400,
        "badRequest",
    )
    assert "own datastore version" in msg
    assert applied(api.bus) == []


def test_attach_and_detach(api: Any) -> None:
    gid = group(api)["id"]
    second = group(api, name="second")["id"]
    iid = instance(api)
    attach = {"instance": {"configuration": gid}}
    # Not while it builds.
    fault(api.put(f"/v1.0/p1/instances/{iid}", json=attach), 422, "unprocessableEntity")
    make_active(api, iid)
    resp = api.put(
        f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": gid, "name": "new"}}
    )
    assert resp.status_code == 202, resp.text
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert shown["configuration"]["id"] == gid and shown["name"] == "new"
    assert applied(api.bus) == [iid]
    msg = fault(
        api.patch(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": second}}),
        400,
        "badRequest",
    )
    assert "detach it first" in msg
    msg = fault(
        api.put(
            f"/v1.0/p1/instances/{iid}",
            json={"instance": {"configuration": None, "datastore_version": "14"}},
        ),
        400,
        "badRequest",
    )
    assert "Only one attribute" in msg
    # Changing the group pushes it to the instance, once per change.
    api.patch(f"/v1.0/p1/configurations/{gid}", json={"configuration": {"values": {"jit": True}}})
    api.put(f"/v1.0/p1/configurations/{gid}", json={"configuration": {"values": {}}})
    assert applied(api.bus) == [iid, iid, iid]
    assert (
        api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": None}}).status_code
        == 202
    )
    assert "configuration" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert applied(api.bus) == [iid] * 4
    # An empty update detaches too (Trove's rule); with nothing attached it changes nothing.
    assert (
        api.patch(
            f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": second}}
        ).status_code
        == 202
    )
    assert api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {}}).status_code == 202
    assert api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {}}).status_code == 202
    assert "configuration" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert applied(api.bus) == [iid] * 6
    assert api.delete(f"/v1.0/p1/configurations/{gid}").status_code == 202
    fault(api.put(f"/v1.0/p1/instances/{iid}", json=attach), 404, "itemNotFound")


def settings_pending(api: Any, instance_id: str) -> bool:
    with api.db.session() as s:
        return bool(s.get(Instance, instance_id).settings_pending)


def task_context(
    api: Any, *placed: str, clock: Callable[[], float] = time.monotonic
) -> TaskContext:
    """A task manager on the test's database and bus, its driver holding ``placed``."""
    driver = FakeDriver()
    for instance_id in placed:
        driver.place(instance_id)
    pushes = PendingPushes(clock=clock)
    return TaskContext(api.settings, api.db, api.bus, driver, pushes=pushes)  # type: ignore[arg-type]


def test_attaching_gives_the_guest_the_values_before_the_answer(api: Any) -> None:
    gid = group(api, {"work_mem": 4096, "random_page_cost": 1.5})["id"]
    iid = instance(api)
    make_active(api, iid)
    seen: list[tuple[str | None, bool, dict[str, Any]]] = []

    def guest(ctx: Any, **args: Any) -> dict[str, Any]:
        # The attachment is committed, and marked, by the time the guest is asked.
        with api.db.session() as s:
            row = s.get(Instance, iid)
            seen.append((row.configuration_id, row.settings_pending, args))
        return {"restart_required": False}

    api.bus.answer("apply_configuration", guest)
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": gid}})
    assert resp.status_code == 202, resp.text
    sizes = {"ram_mb": 512, "vcpus": 1, "volume_gb": 1}
    values = {"work_mem": 4096, "random_page_cost": 1.5}
    assert seen == [(gid, True, {**sizes, "overrides": values, "revision": 1})]
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert "fault" not in shown and shown["status"] == "ACTIVE"
    # Rewriting the place is the task manager's part: the mark stays until it is done.
    assert settings_pending(api, iid)
    tc = task_context(api, iid)
    check_instances(tc)
    wait_until(lambda: not settings_pending(api, iid), "the task manager's push")
    wait_until(tc.pushes.idle, "the push to end")
    assert tc.driver.updated[-1].overrides == values  # type: ignore[attr-defined]
    check_instances(tc)  # nothing is pending: nothing is pushed again
    assert tc.pushes.idle() and len(tc.driver.updated) == 1  # type: ignore[attr-defined]

    # Detaching gives the guest the defaults back, within the request too.
    seen.clear()
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": None}})
    assert resp.status_code == 202, resp.text
    # Revision 3: the attachment counted one change, and the API's push, marking the row again
    # once the guest answered, another.
    assert seen == [(None, True, {**sizes, "overrides": {}, "revision": 3})]


def test_a_group_change_reaches_every_attached_instance_at_once(api: Any) -> None:
    gid = group(api, {"work_mem": 4096})["id"]
    first, second, building = (instance(api, configuration=gid) for _ in range(3))
    make_active(api, first)
    make_active(api, second)
    other = instance(api)
    make_active(api, other)
    both = threading.Barrier(2)

    def guest(ctx: Any, **args: Any) -> dict[str, Any]:
        # Each guest waits for the other: only pushes sent side by side get through.
        try:
            both.wait(timeout=10)
        except threading.BrokenBarrierError:
            raise GuestError("the pushes were not sent side by side") from None
        return {"restart_required": False}

    api.bus.answer("apply_configuration", guest)
    resp = api.patch(
        f"/v1.0/p1/configurations/{gid}", json={"configuration": {"values": {"jit": True}}}
    )
    assert resp.status_code == 200 and resp.content == b""
    assert sorted(applied(api.bus)) == sorted([first, second])
    for _topic, method, args in api.bus.calls:
        if method == "apply_configuration":
            assert args["overrides"] == {"work_mem": 4096, "jit": True}
    for iid in (first, second):
        assert "fault" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    # The instance still building is not asked, but marked: the task manager pushes to it
    # once it can. An instance without the group is left alone.
    marks = [settings_pending(api, i) for i in (first, second, building, other)]
    assert marks == [True, True, True, False]

    both.reset()
    resp = api.put(
        f"/v1.0/p1/configurations/{gid}", json={"configuration": {"values": {"work_mem": 64}}}
    )
    assert resp.status_code == 202, resp.text
    assert len(applied(api.bus)) == 4
    assert api.bus.calls[-1].args["overrides"] == {"work_mem": 64}


def test_a_guest_that_does_not_answer_leaves_the_push_to_the_task_manager(api: Any) -> None:
    gid = group(api, {"work_mem": 4096})["id"]
    iid = instance(api)
    make_active(api, iid)
    api.bus.answer("apply_configuration", RpcTimeout("the guest did not answer"))
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": gid}})
    assert resp.status_code == 202, resp.text
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    # The change is kept and shown; the fault says it is not in effect yet.
    assert shown["configuration"]["id"] == gid and shown["status"] == "ACTIVE"
    assert shown["fault"]["message"].startswith(FAULT_PREFIX)
    assert "did not answer" in shown["fault"]["message"]
    assert settings_pending(api, iid)

    # The task manager tries again, waiting longer after each failure.
    now = [1000.0]
    tc = task_context(api, iid, clock=lambda: now[0])
    assert push_pending(tc) == [iid]
    wait_until(tc.pushes.idle, "the first retry")
    assert settings_pending(api, iid) and applied(api.bus) == [iid, iid]
    assert push_pending(tc) == []
    now[0] += PendingPushes.FIRST_WAIT
    assert push_pending(tc) == [iid]
    wait_until(tc.pushes.idle, "the second retry")
    now[0] += PendingPushes.FIRST_WAIT
    assert push_pending(tc) == []
    now[0] += PendingPushes.FIRST_WAIT
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert "did not answer" in shown["fault"]["message"]

    # The guest is back: the monitor's next pass gets the values through.
    api.bus.answer("apply_configuration", {"restart_required": False})
    check_instances(tc)
    wait_until(lambda: not settings_pending(api, iid), "the mark cleared")
    wait_until(tc.pushes.idle, "the push to end")
    assert applied(api.bus) == [iid] * 4
    assert tc.driver.updated[-1].overrides == {"work_mem": 4096}  # type: ignore[attr-defined]
    assert "fault" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]


def test_a_change_made_while_a_push_is_under_way_stays_pending(api: Any) -> None:
    gid = group(api, {"work_mem": 4096})["id"]
    iid = instance(api, configuration=gid)
    make_active(api, iid)
    with api.db.session() as s:
        assert mark_settings_pending(s, iid)  # as a resize marks it
    tc = task_context(api, iid)
    pushed: list[Any] = []
    revisions: list[int] = []

    def guest(ctx: Any, **args: Any) -> dict[str, Any]:
        pushed.append(args["overrides"])
        revisions.append(args["revision"])
        if len(pushed) == 1:
            # While the task manager's push is under way, the group changes (and the API
            # pushes the new values itself).
            resp = api.patch(
                f"/v1.0/p1/configurations/{gid}",
                json={"configuration": {"values": {"work_mem": 8192}}},
            )
            assert resp.status_code == 200, resp.text
        return {"restart_required": False}

    api.bus.answer("apply_configuration", guest)
    assert apply_settings(tc, RequestContext(), iid) is True
    assert pushed == [{"work_mem": 4096}, {"work_mem": 8192}]
    # Each push carries the revision it read, the API's a later one than the task manager's,
    # so a guest that took the API's refuses the task manager's should it arrive last.
    assert revisions[1] > revisions[0]
    # The task manager's push carried the old values: the mark stays, and the next push
    # gives the place the new ones.
    assert settings_pending(api, iid)
    assert tc.driver.updated[-1].overrides == {"work_mem": 4096}  # type: ignore[attr-defined]
    assert apply_settings(tc, RequestContext(), iid) is True
    assert tc.driver.updated[-1].overrides == {"work_mem": 8192}  # type: ignore[attr-defined]
    assert revisions[2] >= revisions[1]
    assert not settings_pending(api, iid)


def test_the_effective_configuration_comes_from_the_guest(api: Any) -> None:
    iid = instance(api)
    fault(api.get(f"/v1.0/p1/instances/{iid}/configuration"), 422, "unprocessableEntity")
    make_active(api, iid)
    api.bus.answers["get_configuration"] = {"work_mem": "4MB", "masterauth": "s3cret"}
    body = api.get(f"/v1.0/p1/instances/{iid}/configuration").json()
    assert body == {"instance": {"configuration": {"work_mem": "4MB", "masterauth": "***"}}}
    assert api.bus.calls[-1][:2] == (f"guestagent.{iid}", "get_configuration")
    api.bus.answers["get_configuration"] = RpcTimeout("no answer")
    msg = fault(api.get(f"/v1.0/p1/instances/{iid}/configuration"), 503, "serviceUnavailable")
    assert "did not answer" in msg
    reader = {"X-Auth-Token": api.tokens["r1"]}
    api.bus.answers["get_configuration"] = {}
    assert api.get(f"/v1.0/p1/instances/{iid}/configuration", headers=reader).status_code == 200


# -- the task manager -------------------------------------------------------------------------


def test_applying_settings_updates_the_place_then_the_guest(api: Any) -> None:
    gid = group(api, {"max_locks_per_transaction": 1024, "jit": True})["id"]
    iid = instance(api, configuration=gid)
    make_active(api, iid)
    driver = FakeDriver()
    driver.place(iid)
    tc = TaskContext(api.settings, api.db, api.bus, driver)  # type: ignore[arg-type]
    api.bus.answers["apply_configuration"] = {"restart_required": True}
    assert push_settings(tc, RequestContext(), iid) is True
    (spec,) = driver.updated
    assert spec.overrides == {"max_locks_per_transaction": 1024, "jit": True} and spec.ram_mb == 512
    topic, method, args = api.bus.calls[-1]
    assert (topic, method) == (f"guestagent.{iid}", "apply_configuration")
    assert args == {
        "ram_mb": 512,
        "vcpus": 1,
        "volume_gb": 1,
        "overrides": {"max_locks_per_transaction": 1024, "jit": True},
        "revision": 0,  # created with its group: no change since
    }
    # Again, as the task manager's retry runs it.
    assert apply_settings(tc, RequestContext(), iid) is True
    assert len(driver.updated) == 2


def test_a_failed_apply_is_recorded_and_cleared_by_the_next_success(api: Any) -> None:
    iid = instance(api)
    make_active(api, iid)
    driver = FakeDriver()
    tc = TaskContext(api.settings, api.db, api.bus, driver)  # type: ignore[arg-type]
    api.bus.answers["apply_configuration"] = RpcTimeout("the guest did not answer")
    with api.db.session() as s:
        before = guest_spec(tc, s.get(Instance, iid))
    driver.place(iid, before)
    gid = group(api, {"work_mem": 4096})["id"]
    with api.db.session() as s:
        s.get(Instance, iid).configuration_id = gid
    apply_settings(tc, RequestContext(), iid)
    # The guest kept its settings, and so does the place: its next start takes the old ones.
    assert driver.updated[-2].overrides == {"work_mem": 4096}
    assert driver.updated[-1] == before
    fault_view = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]["fault"]
    assert (
        fault_view["message"].startswith(FAULT_PREFIX) and "did not answer" in fault_view["message"]
    )
    api.bus.answers["apply_configuration"] = {"restart_required": False}
    apply_settings(tc, RequestContext(), iid)
    assert "fault" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    # A driver failure is a Cove error too, and the instance stays as it was.
    broken_driver = FakeDriver()
    broken_driver.fail("update", OSError("disk full"))
    broken = TaskContext(api.settings, api.db, api.bus, broken_driver)  # type: ignore[arg-type]
    apply_settings(broken, RequestContext(), iid)
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert "disk full" in shown["fault"]["message"] and shown["status"] == "ACTIVE"
    # An instance not placed yet is given its settings when it is placed.
    building = instance(api)
    assert push_settings(tc, RequestContext(), building) is False


# -- registration -----------------------------------------------------------------------------


def test_registration_reads_a_catalogue_once_per_binary_version(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, migrated_db: Any
) -> None:
    url = f"sqlite:///{tmp_path}/cove.sqlite"
    migrated_db(url)
    db = Database(url)
    found = [PG15]
    for name, finder in (("postgresql", lambda: list(found)), ("mariadb", list), ("redis", list)):
        monkeypatch.setitem(DATASTORES, name, replace(DATASTORES[name], find_versions=finder))
    read: list[FoundVersion] = []

    def reader(item: FoundVersion) -> list[Parameter]:
        read.append(item)
        return CATALOGUE[:2]

    try:
        with db.session() as s:
            register_found_versions(s, reader)
        with db.session() as s:
            register_found_versions(s, reader)
            assert list(catalogue(s, _version(db, PG15))) == [
                "max_locks_per_transaction",
                "work_mem",
            ]
        assert read == [PG15]
        found[0] = FoundVersion("postgresql", "15", "15.5", PG15.bin_dir)
        with db.session() as s:
            register_found_versions(s, reader)
            version = s.get(DatastoreVersion, _version(db, PG15))
            assert version is not None and version.parameters_version == "15.5"
        assert len(read) == 2

        def failing(item: FoundVersion) -> list[Parameter]:
            raise OSError("cannot run postgres")

        found[0] = FoundVersion("postgresql", "15", "15.6", PG15.bin_dir)
        with db.session() as s:
            register_found_versions(s, failing)
        with db.session() as s:
            version = s.get(DatastoreVersion, _version(db, PG15))
            assert version is not None and version.parameters_version is None
            assert catalogue(s, version.id) == {}
        with db.session() as s:
            register_found_versions(s, reader)  # tried again, and read this time
            assert len(catalogue(s, _version(db, PG15))) == 2
    finally:
        db.dispose()


def test_the_reader_of_a_datastore_is_chosen_by_name_and_denied_parameters_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def read_parameters(bin_dir: str) -> list[Parameter]:
        seen.append(bin_dir)
        return [
            Parameter("work_mem", ParamType.INTEGER, False),
            Parameter("data_directory", ParamType.STRING, True),
            Parameter("port", ParamType.INTEGER, True),
            Parameter("ssl_ciphers", ParamType.STRING, True),
        ]

    postgresql = replace(DATASTORES["postgresql"], read_parameters=read_parameters)
    monkeypatch.setitem(DATASTORES, "postgresql", postgresql)
    monkeypatch.setattr(readers, "read_parameters", DISPATCH)  # not the unit tests' stand-in
    assert [p.name for p in readers.read_parameters(PG15)] == ["work_mem"]
    assert seen == [PG15.bin_dir]
    with pytest.raises(LookupError, match="known: "):
        readers.read_parameters(FoundVersion("mongodb", "7", "7.0", "/x"))


def test_an_agent_of_an_older_cove_is_asked_without_a_revision(api: Any) -> None:
    gid = group(api, {"work_mem": 4096})["id"]
    iid = instance(api)
    make_active(api, iid)
    asked: list[dict[str, Any]] = []

    def older_guest(ctx: Any, **args: Any) -> dict[str, Any]:
        asked.append(args)
        if "revision" in args:
            raise InvalidArguments("apply_configuration: unknown argument(s): revision")
        return {"restart_required": False}

    api.bus.answer("apply_configuration", older_guest)
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"configuration": gid}})
    assert resp.status_code == 202, resp.text
    assert ["revision" in a for a in asked] == [True, False]
    assert "fault" not in api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
