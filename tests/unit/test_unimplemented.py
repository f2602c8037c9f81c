"""Trove paths Cove does not serve yet answer ``501 notImplemented`` naming their feature, past
the same gate as every route (token, policy, the instance of the path); a method a path does
not have is ``405`` with ``Allow``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.api.routers.unimplemented import UNIMPLEMENTED, Unimplemented
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.networks import sync_default_network
from fakes import FakeBus

CASES = [(item, method) for item in UNIMPLEMENTED for method in item.methods]

#: (project, user, role): a member of p1, and a cloud administrator (``admin`` on the
#: administrative project).
PEOPLE = {"member": ("p1", "u1", "member"), "cloud": ("admin", "ada", "admin")}


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    return {
        who: add_account(db, project, user, role, project_id=project)
        for who, (project, user, role) in PEOPLE.items()
    }


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    #: An instance of p1.
    instance_id: str

    def request(self, method: str, path: str, who: str | None = "member") -> httpx.Response:
        headers = {"X-Auth-Token": self.tokens[who]} if who else {}
        body = {} if method in ("POST", "PUT", "PATCH") else None
        return self.client.request(method, path, headers=headers, json=body)

    def url(self, item: Unimplemented, project: str = "p1") -> str:
        """The item's path in ``project``, with p1's instance for ``{instance_id}`` and
        ``abc`` for the other names."""
        path = item.path.replace("{instance_id}", self.instance_id)
        return f"/v1.0/{project}" + re.sub(r"\{[^}]+\}", "abc", path)


@pytest.fixture
def api(
    tmp_path: Path, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[Api]:
    settings = load_settings(data_dir=tmp_path, rate_limit_per_minute=0)
    people = seeded_db(settings, seed)
    db = Database(settings.database_url)
    context = build_context(settings, db, FakeBus())  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    assert context.identity is not None
    tokens = {}
    for who, (project_id, password) in people.items():
        login = password_auth(PEOPLE[who][1], password, project_id)
        tokens[who], _ = context.identity.authenticate(login)
    spec = {"name": "orders", "flavorRef": "1", "volume": {"size": 1}}
    resp = client.post(
        "/v1.0/p1/instances", json={"instance": spec}, headers={"X-Auth-Token": tokens["member"]}
    )
    assert resp.status_code == 200, resp.text
    yield Api(client, tokens, resp.json()["instance"]["id"])
    db.dispose()


def test_each_path_names_its_feature(api: Api) -> None:
    for item, method in CASES:
        # The management paths are for cloud administrators, through their own project.
        who, project = (
            ("cloud", "admin") if item.rules[method].startswith("mgmt:") else ("member", "p1")
        )
        resp = api.request(method, api.url(item, project), who)
        assert resp.status_code == 501, (method, item.path, resp.text)
        assert resp.json() == {"notImplemented": {"code": 501, "message": item.message}}
        assert item.message.startswith(item.feature)
        assert item.message.endswith(" not supported by Cove yet.")


def test_the_gate_comes_first(api: Api) -> None:
    for item, method in CASES:
        resp = api.request(method, api.url(item), who=None)
        assert resp.status_code == 401, (method, item.path)
        assert "unauthorized" in resp.json()
        assert api.request(method, api.url(item, "p2")).status_code == 403, (method, item.path)
        if item.rules[method].startswith("mgmt:"):
            forbidden = api.request(method, api.url(item))
            assert forbidden.status_code == 403, (method, item.path)
            assert "Policy doesn't allow mgmt:" in forbidden.json()["forbidden"]["message"]
    resp = api.client.get(
        "/v1.0/p1/instances/0123456789abcdef0123456789abcdef/modules",
        headers={"X-Auth-Token": api.tokens["member"]},
    )
    assert resp.status_code == 404 and list(resp.json()) == ["itemNotFound"]


def test_the_clients_commands_get_the_features_name(api: Api) -> None:
    """What ``openstack database backup strategy list``, ``module list`` and the SDK's
    instance modules send."""
    iid = api.instance_id
    for path, feature in (
        (f"/instances/{iid}/modules", "Modules"),
        ("/backup_strategies", "Backup strategies"),
        ("/modules", "Modules"),
    ):
        resp = api.request("GET", f"/v1.0/p1{path}")
        assert resp.status_code == 501
        assert resp.json()["notImplemented"]["message"].startswith(f"{feature} ")


def test_the_table_takes_no_path_cove_serves(api: Api) -> None:
    """Each (method, path) of the table is served by the refusal, not shadowed by (nor
    shadowing) a route of a feature Cove has; a feature Cove gains leaves the table."""
    routes = list(iter_route_contexts(api.client.app.router.routes))  # type: ignore[attr-defined]
    for item, method in CASES:
        path = api.url(item)
        serving = next(
            r
            for r in routes
            if getattr(r, "path_regex", None) is not None
            and r.path_regex.match(path)
            and method in (r.methods or ())
        )
        assert serving.endpoint is not None
        assert serving.endpoint.__name__ == "refuse", (method, item.path, serving.path)
    paths = [(item.path, method) for item, method in CASES]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1.0/p1/backups", "GET, POST"),
        ("PATCH", "/v1.0/p1/clusters/abc", "DELETE, GET, POST"),
        ("POST", "/v1.0/p1/instances/abc", "DELETE, GET, PATCH, PUT"),
        ("DELETE", "/v1.0/p1/flavors", "GET"),
        ("POST", "/v1.0/p1/datastores/postgresql", "DELETE, GET"),
        ("PUT", "/v1.0/p1/instances/abc/root", "DELETE, GET, POST"),
    ],
)
def test_a_method_the_path_lacks_is_405_with_allow(
    api: Api, method: str, path: str, allowed: str
) -> None:
    resp = api.request(method, path)
    assert resp.status_code == 405, resp.text
    assert list(resp.json()) == ["badMethod"]
    assert resp.headers["allow"] == allowed
