"""The OpenAPI document (``/openapi.json``) against what the API really answers: every body a
route sends validates against the schema documented for its status, errors have Trove's
envelope there, the token scheme covers exactly the operations that need a token, and the
pages that show the document load nothing from outside.

Real control database (SQLite), fake bus (tests/fakes.py) whose guest answers are canned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from sqlalchemy import select, update

from accounts import add_account, password_auth
from cove.api.context import ApiContext, build_context
from cove.common.ids import utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.configurations import store_catalogue
from cove.db.engine import Database
from cove.db.models import DatastoreVersion, GuestState, Instance
from cove.db.networks import sync_default_network
from cove.domain.guest import RootEnabled
from cove.domain.parameters import Parameter, ParamType
from cove.domain.specs import DatabaseSpec, UserInfo
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.rpc.codec import to_wire
from fakes import FakeBus

#: (project, user, role) of who acts here: a member of p1, and a cloud administrator.
PEOPLE = {"member": ("p1", "u1", "member"), "admin": ("admin", "ada", "admin")}

#: What the instance's guest agent answers.
GUEST_ANSWERS: dict[str, Any] = {
    "get_configuration": {"work_mem": "4MB", "password_encryption": "scram-sha-256"},
    "list_databases": to_wire([DatabaseSpec("orders"), DatabaseSpec("shop")]),
    "create_databases": None,
    "delete_database": None,
    "list_users": to_wire([UserInfo("app", "%", ("orders",)), UserInfo("web", "%", ())]),
    "get_user": to_wire(UserInfo("app", "%", ("orders",))),
    "create_users": None,
    "update_user": None,
    "delete_user": None,
    "change_passwords": None,
    "list_access": ["orders"],
    "grant_access": None,
    "revoke_access": None,
    "is_root_enabled": True,
    "enable_root": to_wire(RootEnabled("root")),
    "disable_root": None,
}


#: The parameters of PostgreSQL 15 here: one of each shape a parameter's view takes.
CATALOGUE = [
    Parameter("work_mem", ParamType.INTEGER, False, min=64, max=2147483647),
    Parameter("random_page_cost", ParamType.FLOAT, False, min=0),
    Parameter("jit", ParamType.BOOLEAN, False),
    Parameter("log_min_messages", ParamType.STRING, False, allowed=("info", "warning")),
]


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    found = FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin")
    with db.session() as s:
        seed_flavors(s)
        register_version(s, found)
        sync_default_network(s, settings)
        s.flush()
        version = s.scalars(select(DatastoreVersion)).one()
        store_catalogue(s, version, CATALOGUE, found.version)
    return {
        who: add_account(db, project, user, role, project_id=project)
        for who, (project, user, role) in PEOPLE.items()
    }


@dataclass
class World:
    client: TestClient
    context: ApiContext
    bus: FakeBus
    doc: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    #: (METHOD, path template, status) of every answer checked.
    checked: set[tuple[str, str, int]] = field(default_factory=set)

    @property
    def app(self) -> FastAPI:
        app: FastAPI = self.client.app  # type: ignore[assignment]
        return app

    def call(
        self, method: str, path: str, who: str | None = "member", **kwargs: Any
    ) -> httpx.Response:
        """``method`` on ``path`` as ``who`` (None: without a token), its answer checked
        against the document."""
        headers = {"X-Auth-Token": self.tokens[who]} if who else {}
        headers.update(kwargs.pop("headers", {}))
        resp = self.client.request(method, path, headers=headers, **kwargs)
        self.check(resp)
        return resp

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def check(self, resp: httpx.Response) -> None:
        """The answer is documented for its route and status, and its body (or its lack of
        one) is what the document says."""
        method = resp.request.method
        template = route_template(self.app, method, urlsplit(str(resp.request.url)).path)
        responses = self.doc["paths"][template][method.lower()]["responses"]
        status = str(resp.status_code)
        assert status in responses, f"{method} {template} answered {status}: {resp.text}"
        self.checked.add((method, template, resp.status_code))
        content = responses[status].get("content")
        if content is None:
            assert resp.content == b"", f"{method} {template}: a body the document lacks"
            assert "content-type" not in resp.headers, f"{method} {template}: empty body typed"
            return
        schema = content["application/json"]["schema"]
        assert schema, f"{method} {template} {status}: no schema documented"
        validator = Draft202012Validator({**schema, "components": self.doc["components"]})
        errors = sorted(validator.iter_errors(resp.json()), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0].message}\n{resp.text}"


def route_template(app: FastAPI, method: str, path: str) -> str:
    """The path template of the route that serves ``method`` at ``path``."""
    for route in iter_route_contexts(app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and method in (route.methods or ()):
            return str(route.path)
    raise AssertionError(f"no route serves {method} {path}")


@pytest.fixture
def world(
    tmp_path: Any, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[World]:
    # Pages of one item: lists answer with their "next" links too.
    settings = load_settings(data_dir=tmp_path, max_volume_size=10, page_size=1)
    people = seeded_db(settings, seed)
    db = Database(settings.database_url)
    bus = FakeBus()
    for method, answer in GUEST_ANSWERS.items():
        bus.answer(method, answer)
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    doc = client.get("/openapi.json").json()
    w = World(client, context, bus, doc)
    assert context.identity is not None
    for who, (project_id, password) in people.items():
        token, _ = context.identity.authenticate(
            password_auth(PEOPLE[who][1], password, project_id)
        )
        w.tokens[who], w.passwords[who] = token, password
    yield w
    db.dispose()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method, path, op


def make_ready(w: World, iid: str) -> None:
    """The instance as a finished build leaves it: placed, no task, its guest healthy."""
    with w.context.db.session() as s:
        s.execute(
            update(Instance)
            .where(Instance.id == iid)
            .values(
                task=Task.NONE.value,
                compute_state=ComputeState.ACTIVE.value,
                address="127.42.0.9",
            )
        )
        s.add(
            GuestState(
                instance_id=iid,
                status=GuestStatus.HEALTHY.value,
                payload="{}",
                heartbeat_at=utcnow(),
            )
        )


NEW_INSTANCE = {
    "instance": {
        "name": "orders",
        "flavorRef": "1",
        "volume": {"size": 1},
        "databases": [{"name": "orders"}],
        "users": [{"name": "app", "password": "s3cret", "databases": [{"name": "orders"}]}],
    }
}


# -- the document itself -------------------------------------------------------------------------


def test_the_document_has_trove_faults_not_fastapis_validation_shape(world: World) -> None:
    text = json.dumps(world.doc)
    assert "HTTPValidationError" not in text and "ValidationError" not in text
    for method, path, op in operations(world.doc):
        if not (path == "/" or path.startswith("/v1.0")):
            continue  # Keystone's own error shape, or health's plain answers
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("Fault"), (method, path, status, ref)
    for name in ("BadRequestFault", "ItemNotFoundFault", "NotImplementedFault"):
        schema = world.doc["components"]["schemas"][name]
        (key,) = schema["required"]
        assert schema["additionalProperties"] is False
        assert schema["properties"][key] == {"$ref": "#/components/schemas/Fault"}
    fault = world.doc["components"]["schemas"]["Fault"]
    assert set(fault["required"]) == {"code", "message"}


def test_every_trove_operation_documents_what_it_answers(world: World) -> None:
    for method, path, op in operations(world.doc):
        if not path.startswith("/v1.0/{project_id}/"):
            continue
        statuses = set(op["responses"])
        # Each needs a token of the path's project and is rate-limited.
        assert {"400", "401", "403", "413", "500"} <= statuses, (method, path)
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert "Retry-After" in op["responses"]["413"]["headers"]
        successes = [s for s in statuses if s.startswith("2")]
        if not successes:
            assert statuses & {"501"}, (method, path)
            continue
        for status in successes:
            content = op["responses"][status].get("content")
            if content is not None:
                assert "$ref" in content["application/json"]["schema"], (method, path, status)


def test_the_token_scheme_is_on_exactly_the_operations_that_need_a_token(world: World) -> None:
    scheme = world.doc["components"]["securitySchemes"]["keystoneToken"]
    assert scheme["type"] == "apiKey" and scheme["in"] == "header"
    assert scheme["name"] == "X-Auth-Token"
    secured = 0
    for method, path, op in operations(world.doc):
        url = re.sub(r"\{[^}]+\}", "x", path).replace("/v1.0/x/", "/v1.0/p1/", 1)
        resp = world.client.request(method.upper(), url)
        if "security" in op:
            assert op["security"] == [{"keystoneToken": []}]
            assert resp.status_code == 401, (method, path, resp.text)
            secured += 1
        else:
            assert resp.status_code != 401, (method, path)
    assert secured > 50


def test_docs_pages_load_nothing_from_outside(world: World) -> None:
    for page in ("/docs", "/redoc"):
        resp = world.client.get(page)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in resp.text
        sources = re.findall(r'(?:src|href)="([^"]+)"', resp.text)
        assert sources, page
        for source in sources:
            assert source.startswith("/docs/static/"), (page, source)
            assert world.client.get(source).status_code == 200, source


# -- real answers against the document -----------------------------------------------------------


def test_catalogue_answers_match_the_document(world: World) -> None:
    w = world
    w.ok("GET", "/", who=None)
    w.ok("GET", "/v1.0", who=None)
    flavors = w.ok("GET", "/v1.0/p1/flavors")
    assert flavors["links"], "a page of one flavor has a next link"
    w.ok("GET", "/v1.0/p1/flavors/1")
    ds = w.ok("GET", "/v1.0/p1/datastores")["datastores"][0]
    version_id = ds["versions"][0]["id"]
    w.ok("GET", "/v1.0/p1/datastores/postgresql")
    w.ok("GET", "/v1.0/p1/datastores/postgresql/versions")
    w.ok("GET", "/v1.0/p1/datastores/postgresql/versions/15")
    w.ok("GET", f"/v1.0/p1/datastores/versions/{version_id}")
    w.ok("GET", "/v1.0/p1/datastores/postgresql/versions/15/flavors")
    w.ok("GET", "/v1.0/p1/datastores/postgresql/versions/15/parameters")
    for name in ("work_mem", "random_page_cost", "jit", "log_min_messages"):
        w.ok("GET", f"/v1.0/p1/datastores/postgresql/versions/15/parameters/{name}")
    w.ok("GET", f"/v1.0/p1/datastores/versions/{version_id}/parameters")
    w.ok("GET", f"/v1.0/p1/datastores/versions/{version_id}/parameters/work_mem")
    limits = w.ok("GET", "/v1.0/p1/limits")["limits"]
    assert limits[0]["verb"] == "ABSOLUTE" and len(limits) > 1
    w.ok("GET", "/v1.0/p1/networks")
    w.ok("GET", "/v1.0/p1/networks/default")
    w.ok("GET", "/healthz", who=None)
    w.ok("GET", "/readyz", who=None)


def test_instance_answers_match_the_document(world: World) -> None:
    w = world
    created = w.ok("POST", "/v1.0/p1/instances", json=NEW_INSTANCE)["instance"]
    iid = created["id"]
    w.ok("POST", "/v1.0/p1/instances", json=NEW_INSTANCE)  # a second one, for the next links
    assert w.ok("GET", "/v1.0/p1/instances")["links"]
    w.ok("GET", "/v1.0/p1/instances/detail")
    make_ready(w, iid)
    shown = w.ok("GET", f"/v1.0/p1/instances/{iid}")["instance"]
    assert shown["addresses"] and shown["status"] == "ACTIVE"
    w.ok("GET", "/v1.0/p1/instances")
    w.ok("GET", f"/v1.0/p1/instances/{iid}/configuration")
    w.ok("PUT", f"/v1.0/p1/instances/{iid}", 202, json={"instance": {"name": "renamed"}})
    w.ok("PATCH", f"/v1.0/p1/instances/{iid}", 202, json={"instance": {"name": "again"}})

    base = f"/v1.0/p1/instances/{iid}"
    assert w.ok("GET", f"{base}/databases")["links"]
    w.ok("POST", f"{base}/databases", 202, json={"databases": [{"name": "more"}]})
    w.ok("DELETE", f"{base}/databases/more", 202)
    w.ok("GET", f"{base}/users")
    w.ok("POST", f"{base}/users", 202, json={"users": [{"name": "web", "password": "pw"}]})
    w.ok("PUT", f"{base}/users", 202, json={"users": [{"name": "web", "password": "pw2"}]})
    w.ok("GET", f"{base}/users/app")
    w.ok("PUT", f"{base}/users/web", 202, json={"user": {"password": "pw3"}})
    w.ok("GET", f"{base}/users/app/databases")
    w.ok("PUT", f"{base}/users/app/databases", 202, json={"databases": [{"name": "shop"}]})
    w.ok("DELETE", f"{base}/users/app/databases/shop", 202)
    w.ok("DELETE", f"{base}/users/web", 202)
    w.ok("GET", f"{base}/root")
    w.ok("POST", f"{base}/root")
    w.ok("DELETE", f"{base}/root", 204)

    w.ok("GET", "/v1.0/admin/mgmt/instances", who="admin")
    w.ok("GET", f"/v1.0/admin/mgmt/instances/{iid}", who="admin")
    w.ok("GET", "/v1.0/p1/mgmt/quotas/p1")
    w.ok("PUT", "/v1.0/admin/mgmt/quotas/p1", who="admin", json={"quotas": {"instances": 5}})
    w.ok("DELETE", f"/v1.0/p1/instances/{iid}", 202)


def test_configuration_answers_match_the_document(world: World) -> None:
    w = world
    spec = {"name": "tuned", "values": {"work_mem": 128}, "description": None}
    cid = w.ok("POST", "/v1.0/p1/configurations", json={"configuration": spec})
    cid = cid["configuration"]["id"]
    w.ok("POST", "/v1.0/p1/configurations", json={"configuration": {**spec, "name": "other"}})
    assert w.ok("GET", "/v1.0/p1/configurations")["links"]
    w.ok("GET", f"/v1.0/p1/configurations/{cid}")
    w.ok("GET", f"/v1.0/p1/configurations/{cid}/instances")
    values = {"configuration": {"values": {"work_mem": 256}}}
    w.ok("PATCH", f"/v1.0/p1/configurations/{cid}", json=values)
    w.ok("PUT", f"/v1.0/p1/configurations/{cid}", 202, json=values)
    w.ok("DELETE", f"/v1.0/p1/configurations/{cid}", 202)


def test_backup_schedule_answers_match_the_document(world: World) -> None:
    w = world
    iid = w.ok("POST", "/v1.0/p1/instances", json=NEW_INSTANCE)["instance"]["id"]
    spec = {"instance_id": iid, "cron": "0 3 * * *", "keep_count": 3}
    sid = w.ok("POST", "/v1.0/p1/backup_schedules", json={"backup_schedule": spec})
    sid = sid["backup_schedule"]["id"]
    w.ok("POST", "/v1.0/p1/backup_schedules", json={"backup_schedule": {**spec, "name": "n"}})
    assert w.ok("GET", "/v1.0/p1/backup_schedules")["links"]
    w.ok("GET", f"/v1.0/p1/backup_schedules?instance_id={iid}")
    w.ok("GET", f"/v1.0/p1/backup_schedules/{sid}")
    off = {"backup_schedule": {"enabled": False, "keep_days": 9}}
    w.ok("PUT", f"/v1.0/p1/backup_schedules/{sid}", json=off)
    bad = {"backup_schedule": {**spec, "cron": "0 3 * *"}}
    assert w.call("POST", "/v1.0/p1/backup_schedules", json=bad).status_code == 400
    elsewhere = {"backup_schedule": {**spec, "instance_id": "0" * 32}}
    assert w.call("POST", "/v1.0/p1/backup_schedules", json=elsewhere).status_code == 404
    w.ok("DELETE", f"/v1.0/p1/backup_schedules/{sid}", 202)
    assert w.call("GET", f"/v1.0/p1/backup_schedules/{sid}").status_code == 404


def test_error_answers_match_the_document(world: World) -> None:
    w = world
    unknown = "/v1.0/p1/instances/0123456789abcdef0123456789abcdef"
    assert w.call("GET", unknown).status_code == 404
    assert w.call("GET", "/v1.0/p1/instances", who=None).status_code == 401
    assert w.call("GET", "/v1.0/p2/instances").status_code == 403
    assert w.call("POST", "/v1.0/p1/instances", json={"instance": {}}).status_code == 400
    too_big = {"instance": {**NEW_INSTANCE["instance"], "volume": {"size": 11}}}
    assert w.call("POST", "/v1.0/p1/instances", json=too_big).status_code == 413
    building = w.ok("POST", "/v1.0/p1/instances", json=NEW_INSTANCE)["instance"]["id"]
    action = w.call("POST", f"/v1.0/p1/instances/{building}/action", json={"restart": {}})
    assert action.status_code == 422
    assert w.call("GET", "/v1.0/p1/modules").status_code == 501
    assert w.call("GET", f"/v1.0/p1/instances/{building}/databases/x").status_code == 501
    assert w.call("GET", "/v1.0/p1/mgmt/instances").status_code == 403
    statuses = {status for _, _, status in w.checked}
    assert {400, 401, 403, 404, 413, 422, 501} <= statuses


def test_identity_answers_match_the_document(world: World) -> None:
    w = world
    w.ok("GET", "/identity/v3", who=None)
    login = password_auth("u1", w.passwords["member"], "p1")
    token = w.ok("POST", "/identity/v3/auth/tokens", 201, who=None, json=login)
    assert token["token"]["project"]["id"] == "p1"
    subject = {"X-Subject-Token": w.tokens["member"]}
    w.ok("GET", "/identity/v3/auth/tokens", headers=subject)
    assert [p["id"] for p in w.ok("GET", "/identity/v3/projects")["projects"]] == ["p1"]
    w.ok("GET", "/identity/v3/projects/p1")
    w.ok("GET", "/identity/v3/auth/projects")
