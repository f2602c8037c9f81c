"""Quotas, /limits with rate limits, and the management endpoints, through the API against a real
SQLite control database and real tokens of the embedded identity service."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from accounts import add_account, password_auth
from cove.api.auth import KeystoneAuthenticator
from cove.api.context import build_context
from cove.common.ids import new_id, utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Instance, Quota
from cove.db.networks import sync_default_network
from fakes import FakeBus

USERS = (("p1", "u1", "member"), ("p1", "r1", "reader"), ("ops", "boss", "admin"))


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    """What every Cove starts from: the catalogue, the default network and the accounts of
    USERS. Returns each user's (project id, password)."""
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    return {
        user: add_account(db, project, user, role, project_id=project)
        for project, user, role in USERS
    }


class Cove:
    """One API with three callers: a member and a reader of p1, an admin of project ops (the
    administrative project)."""

    def __init__(
        self,
        tmp_path,
        seeded_db: Callable[[Settings, Callable[..., Any]], Any],
        api_app: Callable[[Any], Any],
        **overrides: Any,
    ) -> None:
        overrides = {"admin_project": "ops", **overrides}
        settings = load_settings(data_dir=tmp_path, max_volume_size=10, page_size=2, **overrides)
        self.accounts = seeded_db(settings, seed)
        self.db = Database(settings.database_url)
        self.bus = FakeBus()  # it answers no call: nothing here reaches a guest
        self.context = build_context(settings, self.db, self.bus)  # type: ignore[arg-type]
        app = api_app(self.context)
        self.member = self._client(app, "u1")
        self.reader = self._client(app, "r1")
        self.admin = self._client(app, "boss")

    def _client(self, app: Any, user: str) -> TestClient:
        project_id, password = self.accounts[user]
        assert self.context.identity is not None
        token, _claims = self.context.identity.authenticate(
            password_auth(user, password, project_id)
        )
        client = TestClient(app)
        client.headers["X-Auth-Token"] = token
        return client

    def rows(self, project: str) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count(Instance.id)).where(
                        Instance.project_id == project, Instance.deleted.is_(False)
                    )
                )
                or 0
            )


@pytest.fixture
def make(tmp_path, seeded_db, api_app) -> Iterator[Any]:
    made: list[Cove] = []

    def factory(**overrides: Any) -> Cove:
        cove = Cove(tmp_path / str(len(made)), seeded_db, api_app, **overrides)
        made.append(cove)
        return cove

    yield factory
    for cove in made:
        cove.db.dispose()


def body(name: str = "orders", flavor: str = "2", size: int = 2) -> dict[str, Any]:
    return {
        "instance": {
            "name": name,
            "flavorRef": flavor,
            "volume": {"size": size},
            "datastore": {"type": "postgresql", "version": "15"},
        }
    }


def fault(resp: Any, status: int, name: str) -> str:
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert list(data) == [name], data
    assert data[name]["code"] == status
    return str(data[name]["message"])


def create(client: TestClient, project: str, **kw: Any) -> Any:
    return client.post(f"/v1.0/{project}/instances", json=body(**kw))


# -- enforcement -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "kw", "resource", "numbers"),
    [
        ({"max_instances_per_project": 2}, {}, "instances", "instances: 2 in use of 2"),
        ({"max_ram_per_project": 4096}, {"flavor": "2"}, "ram", "ram: 4096 MB in use of 4096 MB"),
        ({"max_volumes_per_project": 5}, {"size": 2}, "volumes", "volumes: 4 GB in use of 5 GB"),
    ],
)
def test_exceeding_a_quota_is_413_naming_the_resource(make, overrides, kw, resource, numbers):
    cove = make(**overrides)
    for i in range(2):
        assert create(cove.member, "p1", name=f"db{i}", **kw).status_code == 200
    casts = len(cove.bus.casts)
    msg = fault(create(cove.member, "p1", name="db2", **kw), 413, "overLimit")
    assert f"Quota exceeded for resources: ['{resource}']." in msg
    assert numbers in msg
    # Nothing was recorded or sent for the refused create.
    assert cove.rows("p1") == 2 and len(cove.bus.casts) == casts
    # The quota is the project's: the admin's project still has room.
    assert create(cove.admin, "ops", name="db0", **kw).status_code == 200


def test_several_resources_are_named_together(make):
    cove = make(max_instances_per_project=1, max_volumes_per_project=3)
    assert create(cove.member, "p1", size=2).status_code == 200
    msg = fault(create(cove.member, "p1", name="db2", size=2), 413, "overLimit")
    assert "['instances', 'volumes']" in msg


def test_deleted_instances_do_not_count(make):
    cove = make(max_instances_per_project=1)
    first = create(cove.member, "p1").json()["instance"]["id"]
    fault(create(cove.member, "p1", name="db2"), 413, "overLimit")
    with cove.db.session() as s:
        s.execute(update(Instance).where(Instance.id == first).values(deleted=True))
    assert create(cove.member, "p1", name="db2").status_code == 200


def test_an_override_replaces_the_default(make):
    cove = make(max_instances_per_project=1)
    resp = cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json={"quotas": {"instances": 3}})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"quotas": {"instances": 3}}
    for i in range(3):
        assert create(cove.member, "p1", name=f"db{i}").status_code == 200
    fault(create(cove.member, "p1", name="db3"), 413, "overLimit")
    # Lowering below usage refuses further creates; -1 lifts the limit.
    cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json={"quotas": {"instances": 2}})
    fault(create(cove.member, "p1", name="db3"), 413, "overLimit")
    cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json={"quotas": {"instances": -1}})
    assert create(cove.member, "p1", name="db3").status_code == 200
    # Another project keeps the default.
    assert create(cove.admin, "ops", name="db0").status_code == 200
    fault(create(cove.admin, "ops", name="db1"), 413, "overLimit")


# -- showing and setting -----------------------------------------------------------------------


def quotas_of(resp: Any) -> dict[str, dict[str, int]]:
    assert resp.status_code == 200, resp.text
    return {q.pop("resource"): q for q in resp.json()["quotas"]}


def test_show_own_and_other_quotas(make):
    cove = make(max_instances_per_project=5)
    create(cove.member, "p1", flavor="3", size=3)
    own = quotas_of(cove.member.get("/v1.0/p1/mgmt/quotas/p1"))
    assert own == {
        "instances": {"in_use": 1, "reserved": 0, "limit": 5},
        "ram": {"in_use": 4096, "reserved": 0, "limit": -1},
        "volumes": {"in_use": 3, "reserved": 0, "limit": 40},
        "backups": {"in_use": 0, "reserved": 0, "limit": 50},
    }
    assert quotas_of(cove.reader.get("/v1.0/p1/mgmt/quotas/p1")) == own
    # Another project's quotas: only an administrator sees them.
    fault(cove.member.get("/v1.0/p1/mgmt/quotas/ops"), 403, "forbidden")
    fault(cove.member.get("/v1.0/p1/mgmt/quotas/nosuch"), 403, "forbidden")
    assert quotas_of(cove.admin.get("/v1.0/ops/mgmt/quotas/p1")) == own


def test_only_an_admin_sets_quotas(make):
    cove = make()
    fault(
        cove.member.put("/v1.0/p1/mgmt/quotas/p1", json={"quotas": {"instances": 99}}),
        403,
        "forbidden",
    )
    assert quotas_of(cove.member.get("/v1.0/p1/mgmt/quotas/p1"))["instances"]["limit"] == 10


@pytest.mark.parametrize(
    ("payload", "status", "name"),
    [
        ({"quotas": {"bogus": 1}}, 404, "itemNotFound"),
        ({"quotas": {"instances": 5, "bogus": 1}}, 404, "itemNotFound"),
        ({"quotas": {"instances": -2}}, 400, "badRequest"),
        ({"quotas": {"instances": "5"}}, 400, "badRequest"),
        ({"quotas": {"instances": 1.5}}, 400, "badRequest"),
        ({"quotas": {"instances": True}}, 400, "badRequest"),
        ({"quotas": {"instances": 2**40}}, 400, "badRequest"),
        ({"quotas": {}}, 400, "badRequest"),
        ({"quotas": [1]}, 400, "badRequest"),
        ({"instances": 5}, 400, "badRequest"),
        ([1], 400, "badRequest"),
    ],
)
def test_bad_quota_updates(make, payload, status, name):
    cove = make()
    fault(cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json=payload), status, name)
    # All or nothing: the valid part of a refused update was not applied.
    assert quotas_of(cove.admin.get("/v1.0/ops/mgmt/quotas/p1"))["instances"]["limit"] == 10


def test_setting_every_resource(make):
    cove = make()
    wanted = {"instances": 4, "ram": 8192, "volumes": 0, "backups": -1}
    assert cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json={"quotas": wanted}).json() == {
        "quotas": wanted
    }
    got = quotas_of(cove.admin.get("/v1.0/ops/mgmt/quotas/p1"))
    assert {r: q["limit"] for r, q in got.items()} == wanted
    fault(create(cove.member, "p1"), 413, "overLimit")  # volumes: 0


def test_a_quota_resource_in_invalid_unicode_is_a_400(make):
    cove = make()
    # Escaped in the JSON text: a lone surrogate, which cannot be stored or shown.
    for raw in ('{"quotas": {"\\ud800": 1}}', '{"quotas": {"instances": 5, "x\\udcff": 1}}'):
        resp = cove.admin.put(
            "/v1.0/ops/mgmt/quotas/p1", content=raw, headers={"content-type": "application/json"}
        )
        msg = fault(resp, 400, "badRequest")
        assert "must be valid Unicode" in msg
    assert quotas_of(cove.admin.get("/v1.0/ops/mgmt/quotas/p1"))["instances"]["limit"] == 10


def test_quotas_of_a_project_the_embedded_identity_does_not_hold_are_404(make):
    cove = make()
    unknown = "ab" * 16
    put = cove.admin.put(f"/v1.0/ops/mgmt/quotas/{unknown}", json={"quotas": {"instances": 3}})
    assert unknown in fault(put, 404, "itemNotFound")
    fault(cove.admin.get(f"/v1.0/ops/mgmt/quotas/{unknown}"), 404, "itemNotFound")
    fault(cove.admin.get(f"/v1.0/ops/mgmt/quotas/{'x' * 65}"), 400, "badRequest")
    with cove.db.session() as s:
        assert s.scalar(select(func.count(Quota.project_id))) == 0
    # Members still learn nothing about other projects, existing or not.
    fault(cove.member.get(f"/v1.0/p1/mgmt/quotas/{unknown}"), 403, "forbidden")


class FakeKeystone:
    """Keystone's token API as KeystoneAuthenticator uses it: any token is an admin's of
    ``project`` in the administrative project."""

    def __init__(self, project: str) -> None:
        self.project = project

    def __call__(self, request: httpx.Request) -> httpx.Response:
        expires = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        doc = {
            "token": {
                "user": {"id": "u" * 32},
                "project": {"id": self.project},
                "roles": [{"name": "admin"}],
                "is_admin_project": True,
                "expires_at": expires,
            }
        }
        if request.method == "POST":
            return httpx.Response(201, json=doc, headers={"X-Subject-Token": "service"})
        return httpx.Response(200, json=doc)


def test_with_an_external_keystone_any_well_formed_project_has_quotas(
    tmp_path, migrated_db, api_app
):
    admin_project, other = "0f" * 16, "ab" * 16
    settings = load_settings(
        data_dir=tmp_path,
        auth_strategy="keystone",
        keystone_url="http://keystone.invalid:5000/v3",
        keystone_username="cove",
        keystone_password="secret",
    )
    migrated_db(settings.database_url)
    db = Database(settings.database_url)
    try:
        context = build_context(settings, db, FakeBus())  # type: ignore[arg-type]
        http = httpx.Client(transport=httpx.MockTransport(FakeKeystone(admin_project)))
        context.auth = KeystoneAuthenticator(settings, http)
        client = TestClient(api_app(context), headers={"X-Auth-Token": "t"})
        url = f"/v1.0/{admin_project}/mgmt/quotas/{other}"
        put = client.put(url, json={"quotas": {"instances": 3}})
        assert put.status_code == 200, put.text
        assert quotas_of(client.get(url))["instances"]["limit"] == 3
        fault(client.get(f"/v1.0/{admin_project}/mgmt/quotas/{'x' * 65}"), 400, "badRequest")
    finally:
        db.dispose()


# -- /limits and rate limits -------------------------------------------------------------------


def test_limits_show_effective_limits_and_rates(make):
    cove = make(max_instances_per_project=7)
    cove.admin.put("/v1.0/ops/mgmt/quotas/p1", json={"quotas": {"ram": 1024, "backups": 2}})
    first = cove.member.get("/v1.0/p1/limits")
    assert first.status_code == 200
    absolute, *rates = first.json()["limits"]
    assert absolute == {
        "verb": "ABSOLUTE",
        "max_instances": 7,
        "max_ram": 1024,
        "max_backups": 2,
        "max_volumes": 40,
    }
    assert [r["verb"] for r in rates] == ["POST", "PUT", "DELETE", "GET"]
    for r in rates:
        assert (r["uri"], r["regex"], r["unit"], r["value"]) == ("*", ".*", "MINUTE", 200)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["nextAvailable"])
    get = {r["verb"]: r["remaining"] for r in rates}
    assert get["POST"] == 200 and get["GET"] == 199  # this request counted
    second = {
        r["verb"]: r["remaining"] for r in cove.member.get("/v1.0/p1/limits").json()["limits"][1:]
    }
    assert second["GET"] == 198 and second["POST"] == 200
    # Another project's defaults and counts are its own.
    other = cove.admin.get("/v1.0/ops/limits").json()["limits"]
    assert other[0]["max_ram"] == -1 and other[-1]["remaining"] == 199


def test_rate_limit_is_413_with_retry_after(make):
    cove = make(rate_limit_per_minute=3)
    for _ in range(3):
        assert cove.member.get("/v1.0/p1/flavors").status_code == 200
    refused = cove.member.get("/v1.0/p1/limits")
    assert refused.status_code == 413
    retry = refused.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= 60
    over = refused.json()["overLimit"]
    assert over["code"] == 413 and over["retryAfter"] == retry
    assert "rate-limited" in over["message"]
    # Other verbs and other projects have their own minute.
    assert create(cove.member, "p1").status_code == 200
    assert cove.admin.get("/v1.0/ops/limits").status_code == 200


def test_limits_without_rate_limiting(make):
    cove = make(rate_limit_per_minute=0)
    assert [x["verb"] for x in cove.member.get("/v1.0/p1/limits").json()["limits"]] == ["ABSOLUTE"]


# -- management of instances -------------------------------------------------------------------


def test_admin_lists_instances_of_every_project(make):
    cove = make()
    mine = [create(cove.member, "p1", name=f"db{i}").json()["instance"]["id"] for i in range(2)]
    theirs = create(cove.admin, "ops", name="ops0").json()["instance"]["id"]
    fault(cove.member.get("/v1.0/p1/mgmt/instances"), 403, "forbidden")
    fault(cove.reader.get(f"/v1.0/p1/mgmt/instances/{mine[0]}"), 403, "forbidden")

    seen: dict[str, dict[str, Any]] = {}
    url = "/v1.0/ops/mgmt/instances?include_clustered=False"
    pages = 0
    while url:
        resp = cove.admin.get(url)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert len(data["instances"]) <= 2
        seen.update({i["id"]: i for i in data["instances"]})
        pages += 1
        nxt = data.get("links")
        url = "" if not nxt else "{0.path}?{0.query}".format(urlsplit(nxt[0]["href"]))
    assert pages == 2
    assert set(seen) == {*mine, theirs}
    item = seen[mine[0]]
    assert item["tenant_id"] == "p1" and seen[theirs]["tenant_id"] == "ops"
    assert item["status"] == "BUILD" and item["flavor"]["id"] == "2"
    assert item["server"] == {
        "id": mine[0],
        "name": "db0",
        "status": "BUILD",
        "tenant_id": "p1",
        "host": "local",
        "deleted": False,
        "deleted_at": None,
        "address": None,
        "port": 5432,
    }
    assert item["deleted"] is False and item["deleted_at"] is None
    assert item["service_status"] is None and item["task_description"]

    filtered = cove.admin.get("/v1.0/ops/mgmt/instances?project_id=p1").json()
    assert {i["id"] for i in filtered["instances"]} == set(mine) and "links" not in filtered
    unknown = cove.admin.get(f"/v1.0/ops/mgmt/instances?marker={new_id()}")
    assert unknown.json() == {"instances": []}


def test_admin_shows_any_instance_and_deleted_ones(make):
    cove = make()
    iid = create(cove.member, "p1").json()["instance"]["id"]
    shown = cove.admin.get(f"/v1.0/ops/mgmt/instances/{iid}").json()["instance"]
    assert shown["tenant_id"] == "p1" and shown["created"] and shown["server"]["host"] == "local"
    assert shown["datastore"]["version_number"] == "15.4"
    fault(cove.admin.get(f"/v1.0/ops/mgmt/instances/{new_id()}"), 404, "itemNotFound")

    with cove.db.session() as s:
        s.execute(
            update(Instance).where(Instance.id == iid).values(deleted=True, deleted_at=utcnow())
        )
    assert cove.admin.get("/v1.0/ops/mgmt/instances").json() == {"instances": []}
    gone = cove.admin.get("/v1.0/ops/mgmt/instances?deleted=TRUE").json()["instances"]
    assert [i["id"] for i in gone] == [iid]
    assert gone[0]["deleted"] is True and gone[0]["deleted_at"]
    assert cove.admin.get(f"/v1.0/ops/mgmt/instances/{iid}").json()["instance"]["deleted"]
    fault(cove.admin.get("/v1.0/ops/mgmt/instances?deleted=maybe"), 400, "badRequest")
    fault(cove.admin.get("/v1.0/ops/mgmt/instances?limit=x"), 400, "badRequest")
