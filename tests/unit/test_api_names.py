"""What the API refuses before a request reaches a guest: the user and database names each
datastore keeps, volume sizes in any form but a plain integer, and client values quoted whole
in error messages.

Against a real SQLite control database; the bus is a fake (tests/fakes.py) that fails the test
at any guest call it was not told to answer, so a refusal is shown to happen before the guest.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.common.ids import utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import GuestState, Instance
from cove.db.networks import sync_default_network
from cove.domain.status import ComputeState, GuestStatus, Task
from fakes import FakeBus

VERSIONS = {"postgresql": "15", "mariadb": "10.11", "redis": "7.0"}


def seed(db: Database, settings: Settings) -> tuple[str, str]:
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        register_version(s, FoundVersion("mariadb", "10.11", "10.11.9", "/usr/sbin"))
        register_version(s, FoundVersion("redis", "7.0", "7.0.15", "/usr/bin"))
        sync_default_network(s, settings)
    return add_account(db, "p1", "u1", "member", project_id="p1")


@pytest.fixture
def api(tmp_path, seeded_db, api_app):
    settings = load_settings(data_dir=tmp_path, max_volume_size=10)
    project_id, password = seeded_db(settings, seed)
    db = Database(settings.database_url)
    bus = FakeBus()
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    token, _claims = context.identity.authenticate(password_auth("u1", password, project_id))
    client.headers["X-Auth-Token"] = token
    client.bus = bus  # type: ignore[attr-defined]
    client.db = db  # type: ignore[attr-defined]
    yield client
    db.dispose()


def body(kind: str = "postgresql", **extra: Any) -> dict[str, Any]:
    inst = {
        "name": "db",
        "flavorRef": "1",
        "volume": {"size": 1},
        "datastore": {"type": kind, "version": VERSIONS[kind]},
        **extra,
    }
    return {"instance": inst}


def fault(resp: Any, status: int, name: str) -> str:
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert list(data) == [name] and data[name]["code"] == status, data
    return str(data[name]["message"])


def ready(api: Any, datastore: str) -> str:
    """A new instance of ``datastore`` as a finished build leaves it: placed, its guest
    reporting HEALTHY."""
    resp = api.post("/v1.0/p1/instances", json=body(datastore))
    assert resp.status_code == 200, resp.text
    instance_id = str(resp.json()["instance"]["id"])
    now = utcnow()
    with api.db.session() as s:
        inst = s.get(Instance, instance_id)
        inst.task = Task.NONE.value
        inst.compute_state = ComputeState.ACTIVE.value
        inst.address = "127.42.0.9"
        inst.agent_started_at = now
        s.add(
            GuestState(instance_id=instance_id, status=GuestStatus.HEALTHY.value, heartbeat_at=now)
        )
    return instance_id


def guest_calls(api: Any) -> list[str]:
    return [method for _topic, method, _args in api.bus.calls]


# -- user names ----------------------------------------------------------------------------------

#: Per datastore, names the server reserves or reads specially, and the server's and Cove's own
#: accounts: none may be given to a new account or taken by a rename.
REFUSED_USERS = {
    "postgresql": [
        "public",
        "PUBLIC",
        "none",
        "current_user",
        "session_user",
        "current_role",
        "user",
        "select",
        "postgres",
        "os_admin",
        "root",
        "cove_orphans",
        "pg_monitor",
        "pg_anything",
    ],
    "mariadb": [
        "PUBLIC",
        "public",
        "CURRENT_USER",
        "current_role",
        "none",
        "mariadb.sys",
        "mysql.sys",
        "mysql",
        "root",
        "cove_admin",
    ],
    "redis": ["default", "cove_admin"],
}


@pytest.mark.parametrize("datastore", sorted(REFUSED_USERS))
def test_reserved_user_names_are_refused_at_instance_creation(api, datastore):
    for name in REFUSED_USERS[datastore]:
        spec = body(datastore, users=[{"name": name, "password": "pw-1"}])
        message = fault(api.post("/v1.0/p1/instances", json=spec), 400, "badRequest")
        assert "reserved on" in message and (name in message or "starting with" in message)
    assert api.bus.casts == []


@pytest.mark.parametrize("datastore", sorted(REFUSED_USERS))
def test_reserved_user_names_are_refused_on_a_running_instance(api, datastore):
    iid = ready(api, datastore)
    users = f"/v1.0/p1/instances/{iid}/users"
    for name in REFUSED_USERS[datastore]:
        new = {"users": [{"name": name, "password": "pw-1"}]}
        assert "reserved on" in fault(api.post(users, json=new), 400, "badRequest"), name
        # Nor may an account be renamed to it.
        rename = api.put(f"{users}/app", json={"user": {"name": name}})
        assert "reserved on" in fault(rename, 400, "badRequest"), name
    assert guest_calls(api) == []


@pytest.mark.parametrize("datastore", sorted(REFUSED_USERS))
def test_names_next_to_reserved_ones_reach_the_guest(api, datastore):
    iid = ready(api, datastore)
    api.bus.answer("create_users", None)
    api.bus.answer("update_user", None)
    users = f"/v1.0/p1/instances/{iid}/users"
    for name in ("public1", "none_", "Current_Users", "app.2", "_x", "u" * 63):
        resp = api.post(users, json={"users": [{"name": name, "password": "pw-1"}]})
        assert resp.status_code == 202, (name, resp.text)
    resp = api.put(f"{users}/app", json={"user": {"name": "app2"}})
    assert resp.status_code == 202, resp.text
    assert guest_calls(api) == ["create_users"] * 6 + ["update_user"]
    assert api.bus.calls[-1].args["new_name"] == "app2"


def test_an_account_under_a_special_name_can_still_be_shown_renamed_and_deleted(api):
    """An account that has a name refused today (made before the rule) stays reachable; the
    server's and Cove's own accounts never are."""
    iid = ready(api, "mariadb")
    api.bus.answer("get_user", {"name": "PUBLIC", "host": "%", "databases": []})
    api.bus.answer("update_user", None)
    api.bus.answer("delete_user", None)
    users = f"/v1.0/p1/instances/{iid}/users"
    assert api.get(f"{users}/PUBLIC").json()["user"]["name"] == "PUBLIC"
    assert api.put(f"{users}/PUBLIC", json={"user": {"name": "pub"}}).status_code == 202
    assert api.delete(f"{users}/PUBLIC").status_code == 202
    assert guest_calls(api) == ["get_user", "update_user", "delete_user"]
    for own in ("root", "cove_admin", "mariadb.sys"):
        fault(api.get(f"{users}/{own}"), 400, "badRequest")
        fault(api.delete(f"{users}/{own}"), 400, "badRequest")
        fault(api.put(f"{users}/{own}", json={"user": {"password": "x"}}), 400, "badRequest")
    assert guest_calls(api) == ["get_user", "update_user", "delete_user"]


def test_the_same_name_is_free_where_the_datastore_does_not_keep_it(api):
    """Rules are the datastore's own: Redis keeps 'default', PostgreSQL reads 'select' as a
    keyword, MariaDB neither."""
    api.bus.answer("create_users", None)
    for datastore, name in (("mariadb", "default"), ("mariadb", "select"), ("redis", "public")):
        iid = ready(api, datastore)
        resp = api.post(
            f"/v1.0/p1/instances/{iid}/users", json={"users": [{"name": name, "password": "p"}]}
        )
        assert resp.status_code == 202, (datastore, name, resp.text)


# -- database names ------------------------------------------------------------------------------

REFUSED_DATABASES = [
    ("postgresql", "postgres"),
    ("postgresql", "template0"),
    ("postgresql", "Template1"),
    ("postgresql", "pg_stuff"),
    ("mariadb", "mysql"),
    ("mariadb", "information_schema"),
    ("mariadb", "PERFORMANCE_SCHEMA"),
    ("mariadb", "sys"),
]


@pytest.mark.parametrize("datastore", ["postgresql", "mariadb"])
def test_reserved_database_names_are_refused(api, datastore):
    iid = ready(api, datastore)
    base = f"/v1.0/p1/instances/{iid}"
    for kind, name in REFUSED_DATABASES:
        if kind != datastore:
            continue
        spec = body(datastore, databases=[{"name": name}])
        message = fault(api.post("/v1.0/p1/instances", json=spec), 400, "badRequest")
        assert "reserved on" in message
        new = {"databases": [{"name": name}]}
        fault(api.post(f"{base}/databases", json=new), 400, "badRequest")
        fault(api.delete(f"{base}/databases/{name}"), 400, "badRequest")
        fault(api.put(f"{base}/users/app/databases", json=new), 400, "badRequest")
        fault(api.delete(f"{base}/users/app/databases/{name}"), 400, "badRequest")
        users = {"users": [{"name": "app", "password": "p", "databases": [{"name": name}]}]}
        fault(api.post(f"{base}/users", json=users), 400, "badRequest")
    assert guest_calls(api) == []


def test_another_datastores_system_database_is_an_ordinary_name(api):
    api.bus.answer("create_databases", None)
    iid = ready(api, "postgresql")
    resp = api.post(f"/v1.0/p1/instances/{iid}/databases", json={"databases": [{"name": "mysql"}]})
    assert resp.status_code == 202, resp.text
    assert guest_calls(api) == ["create_databases"]


# -- volume sizes --------------------------------------------------------------------------------

BAD_SIZES: list[Any] = [
    "1 ",
    " 1",
    "01",
    "+1",
    "-1",
    "1.0",
    "",
    "0",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not a size
    "\u00b2",
    "1_0",
    "9" * 41,
    0,
    -3,
    1.5,
    True,
    None,
    [1],
]


def test_a_volume_size_is_a_plain_integer_at_creation(api):
    for size in BAD_SIZES:
        resp = api.post("/v1.0/p1/instances", json=body(volume={"size": size}))
        assert "instance.volume.size" in fault(resp, 400, "badRequest"), size
    assert api.bus.casts == []


def test_a_volume_size_is_a_plain_integer_at_resize(api):
    iid = ready(api, "postgresql")
    for size in BAD_SIZES:
        resize = {"resize": {"volume": {"size": size}}}
        resp = api.post(f"/v1.0/p1/instances/{iid}/action", json=resize)
        assert "resize.volume.size" in fault(resp, 400, "badRequest"), size
    assert [m for _t, m, _a in api.bus.casts] == ["create_instance"]
    resp = api.post(f"/v1.0/p1/instances/{iid}/action", json={"resize": {"volume": {"size": "3"}}})
    assert resp.status_code == 202, resp.text
    assert api.bus.casts[-1].method == "resize_instance"


@pytest.mark.parametrize("size", [3, "3", "10"])
def test_integer_sizes_and_their_digits_are_taken(api, size):
    resp = api.post("/v1.0/p1/instances", json=body(volume={"size": size}))
    assert resp.status_code == 200, resp.text
    assert resp.json()["instance"]["volume"]["size"] == int(size)


def test_a_size_over_the_maximum_is_413_and_quoted_short(api):
    message = fault(
        api.post("/v1.0/p1/instances", json=body(volume={"size": "9" * 40})), 413, "overLimit"
    )
    assert (
        message == f"Volume 'size' cannot exceed maximum of 10 GB, {'9' * 40} cannot be accepted."
    )
    huge = 10**200
    message = fault(
        api.post("/v1.0/p1/instances", json=body(volume={"size": huge})), 413, "overLimit"
    )
    assert message == (
        f"Volume 'size' cannot exceed maximum of 10 GB, {str(huge)[:64]}… cannot be accepted."
    )


# -- echoed values -------------------------------------------------------------------------------

LONG = "f" * 5000
SHOWN = "f" * 64 + "…"


@pytest.mark.parametrize(
    ("change", "status", "name"),
    [
        ({"flavorRef": LONG}, 404, "itemNotFound"),
        ({"datastore": {"type": LONG}}, 404, "itemNotFound"),
        ({"datastore": {"type": "postgresql", "version": LONG}}, 404, "itemNotFound"),
        ({LONG: 1}, 400, "badRequest"),
        ({"databases": [{"name": "d", "character_set": LONG}]}, 400, "badRequest"),
        ({"users": [{"name": LONG, "password": "p"}]}, 400, "badRequest"),
        ({"users": [{"name": "u", "password": "p", "host": LONG}]}, 400, "badRequest"),
        ({"databases": [{"name": LONG}]}, 400, "badRequest"),
    ],
)
def test_error_messages_quote_a_long_value_cut_short(api, change, status, name):
    message = fault(api.post("/v1.0/p1/instances", json=body(**change)), status, name)
    assert SHOWN in message and "f" * 65 not in message


def test_paths_and_actions_are_quoted_cut_short(api):
    for path in (
        f"/v1.0/p1/instances/{LONG[:3000]}",
        f"/v1.0/p1/datastores/{LONG[:3000]}",
        f"/v1.0/p1/datastores/postgresql/versions/{LONG[:3000]}",
        f"/v1.0/p1/flavors/{LONG[:3000]}",
    ):
        message = fault(api.get(path), 404, "itemNotFound")
        assert SHOWN in message and "f" * 65 not in message, path
    iid = ready(api, "postgresql")
    action = f"/v1.0/p1/instances/{iid}/action"
    for payload in ({LONG: {}}, {"resize": {LONG: 1}}, {"resize": {"flavorRef": LONG}}):
        resp = api.post(action, json=payload)
        assert resp.status_code in (400, 404), resp.text
        message = next(iter(resp.json().values()))["message"]
        assert SHOWN in message and "f" * 65 not in message, payload
