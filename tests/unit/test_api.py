"""The API's validation and Trove envelope, against a real SQLite control database.

The bus is a fake (tests/fakes.py) that records casts and answers no call: these tests
stop before any guest is involved.
"""

import json
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.common.ids import utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Instance
from cove.db.networks import sync_default_network
from cove.db.sealed import CreateArgs
from fakes import FakeBus


def seed(db: Database, settings: Settings) -> tuple[str, str]:
    """What every test starts from: the catalogue, the default network and member u1 of p1.
    Returns (project id, u1's password)."""
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    return add_account(db, "p1", "u1", "member", project_id="p1")


@pytest.fixture
def api(tmp_path, monkeypatch, seeded_db, api_app):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path, max_volume_size=10, page_size=2)
    project_id, password = seeded_db(settings, seed)
    db = Database(settings.database_url)
    bus = FakeBus()  # it answers no call: these tests stop before any guest
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    token, _claims = context.identity.authenticate(password_auth("u1", password, project_id))
    client.headers["X-Auth-Token"] = token
    client.bus = bus  # type: ignore[attr-defined]
    client.context = context  # type: ignore[attr-defined]
    yield client
    db.dispose()


def body(name="orders", **extra):
    inst = {
        "name": name,
        "flavorRef": "2",
        "volume": {"size": 2},
        "datastore": {"type": "postgresql", "version": "15"},
    }
    inst.update(extra)
    return {"instance": inst}


def fault(resp, status, name):
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert list(data) == [name], data
    assert data[name]["code"] == status
    return data[name]["message"]


def test_versions_document(api):
    resp = api.get("/")
    assert resp.status_code == 200
    assert resp.json()["versions"][0]["id"] == "v1.0"


def test_framework_errors_use_the_trove_envelope(api):
    fault(api.get("/v1.0/p1/nothing-here"), 404, "itemNotFound")
    fault(api.delete("/v1.0/p1/flavors"), 405, "badMethod")
    msg = fault(
        api.post(
            "/v1.0/p1/instances", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        "badRequest",
    )
    assert "not valid JSON" in msg
    msg = fault(api.post("/v1.0/p1/instances", content=b"{bad"), 400, "badRequest")
    assert "JSON object" in msg
    msg = fault(api.post("/v1.0/p1/instances", json=[1]), 400, "badRequest")
    assert "JSON object" in msg
    msg = fault(api.post("/v1.0/p1/instances", json={"instance": {}}), 400, "badRequest")
    assert "instance.name" in msg
    fault(
        api.post("/v1.0/p1/instances", json={"instance": {"name": "x", "bogus": 1}}),
        400,
        "badRequest",
    )


def test_flavors_have_trove_ids(api):
    flavors = api.get("/v1.0/p1/flavors").json()["flavors"]
    small = next(f for f in flavors if f["name"] == "small")
    assert small["id"] == 2 and small["str_id"] == "2" and small["ram"] == 2048
    assert api.get("/v1.0/p1/flavors/small").json()["flavor"]["str_id"] == "2"
    fault(api.get("/v1.0/p1/flavors/99"), 404, "itemNotFound")


def test_datastores_by_name_or_id(api):
    ds = api.get("/v1.0/p1/datastores").json()["datastores"][0]
    assert ds["name"] == "postgresql" and ds["default_version"] == ds["versions"][0]["id"]
    by_id = api.get(f"/v1.0/p1/datastores/{ds['id']}/versions/15").json()["version"]
    assert by_id["version"] == "15.4"
    fault(api.get("/v1.0/p1/datastores/mongodb"), 404, "itemNotFound")


def test_create_records_and_casts(api):
    resp = api.post(
        "/v1.0/p1/instances",
        json=body(
            databases=[{"name": "orders"}, {"name": "other"}],
            users=[{"name": "app", "password": "s3cret", "databases": [{"name": "orders"}]}],
        ),
    )
    assert resp.status_code == 200, resp.text
    inst = resp.json()["instance"]
    assert inst["status"] == "BUILD" and inst["operating_status"] == ""
    assert inst["datastore"] == {"type": "postgresql", "version": "15", "version_number": "15.4"}
    assert "s3cret" not in resp.text
    topic, method, args = api.bus.casts[-1]
    # Only the id travels: the passwords wait sealed on the row for whichever task manager
    # runs (or takes over) the build.
    assert (topic, method, args) == ("taskmanager", "create_instance", {"instance_id": inst["id"]})
    c = api.context
    with c.db.session() as s:
        sealed = s.get(Instance, inst["id"]).task_args
    assert "s3cret" not in sealed and "orders" not in sealed
    opened = c.sealer.open(inst["id"], sealed, CreateArgs)
    assert [u.name for u in opened.users] == ["app"] and opened.users[0].password == "s3cret"
    assert list(opened.users[0].databases) == ["orders"]
    assert [d.name for d in opened.databases] == ["orders", "other"]
    assert api.get(f"/v1.0/p1/instances/{inst['id']}").json()["instance"]["id"] == inst["id"]
    # A token of p1 reaches nothing under another project's path.
    fault(api.get(f"/v1.0/p2/instances/{inst['id']}"), 403, "forbidden")
    fault(api.get("/v1.0/p2/instances"), 403, "forbidden")


#: Keys Trove sends only when they hold something; Cove has no replication nor host names, and
#: shows project, server and volume ids to cloud administrators only.
CONDITIONAL = ("replicas", "replica_of", "hostname", "ip", "addresses", "fault", "configuration")
ADMIN_ONLY = ("tenant_id", "server_id", "volume_id", "encrypted_rpc_messaging")


def test_keys_that_would_be_empty_are_left_out(api):
    created = api.post("/v1.0/p1/instances", json=body()).json()["instance"]
    iid = created["id"]
    views = [
        created,
        api.get(f"/v1.0/p1/instances/{iid}").json()["instance"],
        api.get("/v1.0/p1/instances").json()["instances"][0],
        api.get("/v1.0/p1/instances/detail").json()["instances"][0],
    ]
    for view in views:
        assert not set(CONDITIONAL + ADMIN_ONLY) & view.keys(), view
        # Always there, as in Trove: who may connect, every address unless told otherwise.
        assert view["access"] == {"is_public": False, "allowed_cidrs": ["0.0.0.0/0"]}
    with api.context.db.session() as s:
        s.execute(update(Instance).where(Instance.id == iid).values(address="127.42.0.7"))
    shown = api.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    listed = api.get("/v1.0/p1/instances").json()["instances"][0]
    for view in (shown, listed):
        assert view["ip"] == ["127.42.0.7"]
        assert view["addresses"] == [
            {"address": "127.42.0.7", "type": "private", "network": "default"}
        ]
        assert view["access"] == {"is_public": False, "allowed_cidrs": ["0.0.0.0/0"]}
        assert not {"replicas", "replica_of", "hostname", *ADMIN_ONLY} & view.keys()


def test_default_datastore_is_used(api):
    resp = api.post(
        "/v1.0/p1/instances",
        json={"instance": {"name": "x", "flavorRef": 2, "volume": {"size": "1"}}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["instance"]["datastore"]["type"] == "postgresql"


@pytest.mark.parametrize(
    ("change", "status", "name", "text"),
    [
        ({"volume": {"size": 11}}, 413, "overLimit", "cannot exceed maximum of 10 GB"),
        ({"volume": {"size": 0}}, 400, "badRequest", "positive"),
        ({"volume": {"size": "ten"}}, 400, "badRequest", "volume"),
        ({"volume": {"size": "²"}}, 400, "badRequest", "volume"),
        ({"volume": {"size": True}}, 400, "badRequest", "volume"),
        (
            {"databases": [{"name": "d", "character_set": "x'; drop"}]},
            400,
            "badRequest",
            "character set",
        ),
        ({"volume": None}, 400, "badRequest", "Volume size was not specified"),
        ({"flavorRef": "nope"}, 404, "itemNotFound", "Flavor 'nope'"),
        ({"datastore": {"type": "mysql"}}, 404, "itemNotFound", "Datastore 'mysql'"),
        ({"datastore": {"type": "postgresql", "version": "9"}}, 404, "itemNotFound", "version"),
        ({"name": "   "}, 400, "badRequest", "non-empty"),
        ({"databases": [{"name": "bad name"}]}, 400, "badRequest", "database name"),
        ({"databases": [{"name": "a"}, {"name": "a"}]}, 400, "badRequest", "twice"),
        ({"users": [{"name": "root", "password": "x"}]}, 400, "badRequest", "reserved"),
        ({"users": [{"name": "u", "password": ""}]}, 400, "badRequest", "password"),
        (
            {"users": [{"name": "u", "password": "p", "databases": [{"name": "zz"}]}]},
            400,
            "badRequest",
            "not included in the initial databases list",
        ),
        ({"restorePoint": {"backupRef": "x"}}, 400, "badRequest", "backup"),
        ({"nics": [{"net-id": "a"}, {"net-id": "b"}]}, 400, "badRequest", "nics"),
    ],
)
def test_create_validation(api, change, status, name, text):
    msg = fault(api.post("/v1.0/p1/instances", json=body(**change)), status, name)
    assert text in msg
    assert api.bus.casts == []


def test_actions_on_a_building_instance_are_refused(api):
    iid = api.post("/v1.0/p1/instances", json=body()).json()["instance"]["id"]
    msg = fault(
        api.post(f"/v1.0/p1/instances/{iid}/action", json={"restart": {}}),
        422,
        "unprocessableEntity",
    )
    assert "not ready" in msg
    fault(api.delete(f"/v1.0/p1/instances/{iid}"), 422, "unprocessableEntity")
    fault(api.get(f"/v1.0/p1/instances/{iid}/databases"), 422, "unprocessableEntity")
    fault(api.post(f"/v1.0/p1/instances/{iid}/action", json={"dance": {}}), 400, "badRequest")
    for resize in ({"flavorRef": "3"}, {"volume": {"size": 3}}):
        fault(
            api.post(f"/v1.0/p1/instances/{iid}/action", json={"resize": resize}),
            422,
            "unprocessableEntity",
        )


def test_rename_and_update_rules(api):
    iid = api.post("/v1.0/p1/instances", json=body()).json()["instance"]["id"]
    url = f"/v1.0/p1/instances/{iid}"
    # A rename is a change like any other: refused while the instance is being built, alone or
    # beside a detach that would change nothing.
    for change in ({"name": "new"}, {"name": "new", "configuration": None}):
        for send in (api.put, api.patch):
            msg = fault(send(url, json={"instance": change}), 422, "unprocessableEntity")
            assert msg == f"Instance {iid} is not ready. (Status is BUILD)."
    assert api.get(url).json()["instance"]["name"] == "orders"
    with api.context.db.session() as s:
        s.execute(
            update(Instance).where(Instance.id == iid).values(task="NONE", compute_state="ACTIVE")
        )
    assert api.put(url, json={"instance": {"name": "new"}}).status_code == 202
    assert api.get(url).json()["instance"]["name"] == "new"
    renamed = api.patch(url, json={"instance": {"name": "newer", "configuration": None}})
    assert renamed.status_code == 202, renamed.text
    assert api.get(url).json()["instance"]["name"] == "newer"
    msg = fault(
        api.put(
            f"/v1.0/p1/instances/{iid}",
            json={"instance": {"configuration": "a", "datastore_version": "b"}},
        ),
        400,
        "badRequest",
    )
    assert "Only one attribute" in msg


def test_pagination_links(api):
    ids = [
        api.post("/v1.0/p1/instances", json=body(f"i{n}")).json()["instance"]["id"]
        for n in range(3)
    ]
    first = api.get("/v1.0/p1/instances").json()
    assert len(first["instances"]) == 2
    next_href = first["links"][0]["href"]
    assert "marker=" in next_href
    marker = next_href.split("marker=")[1].split("&")[0]
    rest = api.get(f"/v1.0/p1/instances?marker={marker}").json()
    assert "links" not in rest
    seen = [i["id"] for i in first["instances"] + rest["instances"]]
    assert sorted(seen) == sorted(ids)


def test_another_or_malformed_project_id_is_forbidden(api):
    msg = fault(api.get("/v1.0/bad%20project/instances"), 403, "forbidden")
    assert "bad project" not in msg


def test_json_suffix_is_tolerated(api):
    assert api.get("/v1.0/p1/flavors.json").status_code == 200


def test_limits(api):
    limits = api.get("/v1.0/p1/limits").json()["limits"]
    assert limits[0]["verb"] == "ABSOLUTE" and limits[0]["max_instances"] == 10


def test_initial_users_have_no_host(api):
    msg = fault(
        api.post(
            "/v1.0/p1/instances",
            json=body(users=[{"name": "u", "password": "p", "host": "10.0.0.1"}]),
        ),
        400,
        "badRequest",
    )
    assert "no host" in msg


def test_mariadb_users_have_hosts(api):
    with api.context.db.session() as s:
        register_version(s, FoundVersion("mariadb", "10.11", "10.11.9", "/usr/sbin"))
    users = [
        {"name": "u", "password": "p", "host": "10.0.0.%"},
        {"name": "u", "password": "p", "host": "192.168.1.1"},
    ]
    spec = body(users=users, datastore={"type": "mariadb", "version": "10.11"})
    resp = api.post("/v1.0/p1/instances", json=spec)
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    with api.context.db.session() as s:
        sealed = s.get(Instance, iid).task_args
    users_sealed = api.context.sealer.open(iid, sealed, CreateArgs).users
    assert [(u.name, u.host) for u in users_sealed] == [("u", "10.0.0.%"), ("u", "192.168.1.1")]
    twice = body(users=[users[0], users[0]], datastore={"type": "mariadb"})
    assert "twice" in fault(api.post("/v1.0/p1/instances", json=twice), 400, "badRequest")
    odd = body(users=[{"name": "u", "password": "p", "host": "a b"}], datastore={"type": "mariadb"})
    fault(api.post("/v1.0/p1/instances", json=odd), 400, "badRequest")


def test_invalid_unicode_is_a_400_not_a_500(api):
    raw = b'{"instance": {"name": "x\\ud800", "flavorRef": "2", "volume": {"size": 1}}}'
    msg = fault(
        api.post("/v1.0/p1/instances", content=raw, headers={"content-type": "application/json"}),
        400,
        "badRequest",
    )
    assert "Unicode" in msg


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ('"flavorRef": "\\ud800"', "flavorRef must be valid Unicode text"),
        ('"flavorRef": "2", "datastore": {"type": "pg\\udcff"}', "datastore type"),
        (
            '"flavorRef": "2", "datastore": {"type": "postgresql", "version": "\\ud800"}',
            "datastore version",
        ),
    ],
)
def test_references_in_invalid_unicode_are_a_400(api, instance, message):
    """A lone surrogate (escaped in the JSON text) can be neither looked up nor shown."""
    raw = '{"instance": {"name": "x", "volume": {"size": 1}, ' + instance + "}}"
    msg = fault(
        api.post("/v1.0/p1/instances", content=raw, headers={"content-type": "application/json"}),
        400,
        "badRequest",
    )
    # Refused before any route looks at it; ``message`` names what the route would refuse.
    assert "must be valid Unicode" in msg, message
    assert api.bus.casts == []


def test_an_action_in_invalid_unicode_is_a_400(api):
    iid = api.post("/v1.0/p1/instances", json=body()).json()["instance"]["id"]
    msg = fault(
        api.post(
            f"/v1.0/p1/instances/{iid}/action",
            content='{"\\ud800": {}}',
            headers={"content-type": "application/json"},
        ),
        400,
        "badRequest",
    )
    assert "must be valid Unicode" in msg


def test_nul_characters_are_refused_before_any_route(api):
    raw = '{"instance": {"name": "a\\u0000b", "flavorRef": "1", "volume": {"size": 1}}}'
    assert "\\u0000" in raw
    headers = {"content-type": "application/json"}
    msg = fault(api.post("/v1.0/p1/instances", content=raw, headers=headers), 400, "badRequest")
    assert "NUL" in msg
    fault(api.get("/v1.0/p1/instances?marker=%00"), 400, "badRequest")
    fault(api.get("/v1.0/p1/instances/a%00b"), 400, "badRequest")
    assert api.bus.casts == []


def test_bodies_are_capped(api):
    big = b'{"instance": {"name": "' + b"x" * (1024 * 1024) + b'"}}'
    resp = api.post("/v1.0/p1/instances", content=big, headers={"content-type": "application/json"})
    fault(resp, 413, "overLimit")


def test_pages_of_instances_created_at_the_same_moment(api):
    """Paging is keyed on (created, id), both descending: instances sharing a timestamp come
    highest id first, neither repeated nor skipped, and a marker the list would not show gives
    an empty page."""
    ids = [
        api.post("/v1.0/p1/instances", json=body(f"i{n}")).json()["instance"]["id"]
        for n in range(5)
    ]
    moment = utcnow()
    with api.context.db.session() as s:
        s.execute(update(Instance).values(created=moment))
    seen: list[str] = []
    url = "/v1.0/p1/instances/detail?limit=2"
    while url:
        data = api.get(url).json()
        seen += [i["id"] for i in data["instances"]]
        url = (
            "{0.path}?{0.query}".format(urlsplit(data["links"][0]["href"]))
            if "links" in data
            else ""
        )
    assert seen == sorted(ids, reverse=True)
    with api.context.db.session() as s:
        s.execute(update(Instance).where(Instance.id == ids[0]).values(deleted=True))
    assert api.get(f"/v1.0/p1/instances?marker={ids[0]}").json() == {"instances": []}


def test_every_list_pages_with_limit_and_marker(api):
    first = api.get("/v1.0/p1/flavors?limit=2").json()
    assert [f["str_id"] for f in first["flavors"]] == ["1", "2"]
    href = first["links"][0]["href"]
    assert "marker=2" in href and "limit=2" in href
    rest = api.get("/v1.0/p1/flavors?marker=2").json()
    assert [f["str_id"] for f in rest["flavors"]] == ["3", "4"] and "links" not in rest
    stores = api.get("/v1.0/p1/datastores?limit=1").json()
    assert len(stores["datastores"]) == 1 and "links" not in stores
    ds = stores["datastores"][0]["id"]
    assert len(api.get(f"/v1.0/p1/datastores/{ds}/versions").json()["versions"]) == 1


def test_lone_surrogates_in_names_are_refused_cleanly(api):
    headers = {"Content-Type": "application/json"}
    for spec in (
        {"databases": [{"name": "\\ud800"}]},
        {"users": [{"name": "\\ud800", "password": "pw"}]},
        {"users": [{"name": "u", "password": "pw", "host": "\\ud800"}]},
        {"databases": [{"name": "d", "character_set": "\\ud800"}]},
    ):
        raw = json.dumps(body(**spec)).replace("\\\\ud800", "\\ud800")
        resp = api.post("/v1.0/p1/instances", content=raw.encode(), headers=headers)
        assert resp.status_code == 400, (spec, resp.text)


def test_redis_refuses_databases_up_front(api):
    from cove.db.engine import Database

    db = Database(api.context.settings.database_url)
    with db.session() as s:
        register_version(s, FoundVersion("redis", "7.0", "7.0.15", "/usr/bin"))
    db.dispose()
    redis = {"datastore": {"type": "redis", "version": "7.0"}}
    msg = fault(
        api.post("/v1.0/p1/instances", json=body(databases=[{"name": "d"}], **redis)),
        501,
        "notImplemented",
    )
    assert "databases" in msg and "redis" in msg
    user = {"name": "u", "password": "pw", "databases": [{"name": "d"}]}
    fault(
        api.post("/v1.0/p1/instances", json=body(databases=[{"name": "d"}], users=[user], **redis)),
        501,
        "notImplemented",
    )
    resp = api.post(
        "/v1.0/p1/instances", json=body(users=[{"name": "u", "password": "pw"}], **redis)
    )
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    assert resp.json()["instance"]["datastore"]["type"] == "redis"
    for method, path in (
        ("GET", "databases"),
        ("POST", "databases"),
        ("DELETE", "databases/d"),
        ("GET", "users/u/databases"),
        ("PUT", "users/u/databases"),
        ("DELETE", "users/u/databases/d"),
    ):
        payload = {"databases": [{"name": "d"}]} if method in ("POST", "PUT") else None
        resp = api.request(method, f"/v1.0/p1/instances/{iid}/{path}", json=payload)
        fault(resp, 501, "notImplemented")
    assert [m for _t, m, _a in api.bus.casts] == ["create_instance"]
