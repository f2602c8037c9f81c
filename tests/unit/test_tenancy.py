"""Tenant isolation and roles, walked over every route the API has.

Two projects each hold an instance. Every project-scoped route is called (1) without a token,
(2) with a token of the other project on this project's path, (3) on one's own path naming the
other project's instance, and (4) as a reader for every route that changes something. The
routes are read from the application itself, so a new endpoint is covered without editing
this file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accounts import add_account, password_auth
from cove.api.app import create_app
from cove.api.context import build_context
from cove.common.ids import utcnow
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Network
from fakes import FakeBus


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, migrated_db: Callable[[str], None]) -> Any:
    tmp = tmp_path_factory.mktemp("tenancy")
    settings = load_settings(data_dir=tmp, rate_limit_per_minute=0)
    migrated_db(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        s.add(
            Network(
                id="net-1",
                name="default",
                cidr=settings.address_pool,
                is_default=True,
                created=utcnow(),
            )
        )
    # The two instances' creations are cast to the task manager; a refused request must not
    # reach a guest, and the fake bus answers no call.
    context = build_context(settings, db, FakeBus())  # type: ignore[arg-type]
    assert context.identity is not None
    client = TestClient(create_app(context))

    def token(project: str, user: str, role: str) -> tuple[str, str]:
        pid, password = add_account(db, project, user, role)
        tok, _ = context.identity.authenticate(password_auth(user, password, pid))  # type: ignore[union-attr]
        return pid, tok

    w: dict[str, Any] = {"client": client, "app": client.app}
    w["a"], w["a_member"] = token("alpha", "alice", "member")
    _, w["a_reader"] = token("alpha", "arthur", "reader")
    w["b"], w["b_member"] = token("beta", "bob", "member")
    _, w["b_admin"] = token("beta", "bea", "admin")
    # ``admin`` on the administrative project (setting admin_project): a cloud administrator.
    w["cloud"], w["cloud_admin"] = token("admin", "ada", "admin")
    body = {"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}}}
    for project, tok in (("a", w["a_member"]), ("b", w["b_member"])):
        resp = client.post(
            f"/v1.0/{w[project]}/instances", json=body, headers={"X-Auth-Token": tok}
        )
        assert resp.status_code == 200, resp.text
        w[f"{project}_instance"] = resp.json()["instance"]["id"]
    yield w
    db.dispose()


def project_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) under a project, from the application's own schema."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1.0/{project_id}"):
            out.extend((method.upper(), path) for method in sorted(operations) if method != "head")
    return out


def fill(path: str, project: str, instance: str) -> str:
    values = {
        "project_id": project,
        "instance_id": instance,
        "project": project,
    }
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


def call(w: dict[str, Any], method: str, path: str, token: str | None) -> Any:
    headers = {"X-Auth-Token": token} if token else {}
    return w["client"].request(method, path, headers=headers, json={})


def test_every_project_route_is_covered(world: dict[str, Any]) -> None:
    routes = project_routes(world["app"])
    paths = {p for _m, p in routes}
    # A sanity check that the walk sees the API, not an empty list.
    assert "/v1.0/{project_id}/instances/{instance_id}" in paths
    assert "/v1.0/{project_id}/mgmt/instances" in paths
    assert "/v1.0/{project_id}/networks" in paths
    assert len(routes) > 30


def test_no_token_is_401_everywhere(world: dict[str, Any]) -> None:
    for method, path in project_routes(world["app"]):
        resp = call(world, method, fill(path, world["a"], world["a_instance"]), None)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["unauthorized"]["code"] == 401
        assert resp.headers["WWW-Authenticate"].startswith('Keystone uri="')
        bad = call(world, method, fill(path, world["a"], world["a_instance"]), "cv1.x.y")
        assert bad.status_code == 401, (method, path, bad.text)


def test_another_projects_path_is_403_everywhere(world: dict[str, Any]) -> None:
    for method, path in project_routes(world["app"]):
        url = fill(path, world["a"], world["a_instance"])
        resp = call(world, method, url, world["b_member"])
        assert resp.status_code == 403, (method, path, resp.text)
        assert world["a_instance"] not in resp.text


def instance_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) of one instance, management and cluster members
    (reached through their cluster) aside."""
    return [
        (method, path)
        for method, path in project_routes(app)
        if "{instance_id}" in path and "/mgmt/" not in path and "/clusters/" not in path
    ]


@pytest.mark.parametrize("who", ["b_member", "b_admin"])
def test_another_projects_instance_is_not_found_from_ones_own_path(
    world: dict[str, Any], who: str
) -> None:
    """Members and the project's own administrators alike."""
    routes = instance_routes(world["app"])
    for method, path in routes:
        url = fill(path, world["b"], world["a_instance"])
        resp = call(world, method, url, world[who])
        # Validation of the body may answer first (400); it must never be 2xx nor say more.
        assert resp.status_code in (400, 404), (method, path, resp.text)
        assert "alpha" not in resp.text
    assert len(routes) > 15
    listed = world["client"].get(
        f"/v1.0/{world['b']}/instances", headers={"X-Auth-Token": world["b_member"]}
    )
    assert [i["id"] for i in listed.json()["instances"]] == [world["b_instance"]]


def test_readers_only_read(world: dict[str, Any]) -> None:
    for method, path in project_routes(world["app"]):
        url = fill(path, world["a"], world["a_instance"])
        resp = call(world, method, url, world["a_reader"])
        if method == "GET":
            assert resp.status_code != 403 or "/mgmt/" in path, (method, path, resp.text)
        elif resp.status_code == 400:
            # The body is checked before the policy (as in Trove); a malformed one changes
            # nothing either.
            assert "Validation error" in resp.json()["badRequest"]["message"], (method, path)
        else:
            assert resp.status_code == 403, (method, path, resp.text)
            assert "Policy doesn't allow" in resp.json()["forbidden"]["message"]
    # With well-formed bodies, the policy answers.
    a, reader = world["a"], {"X-Auth-Token": world["a_reader"]}
    body = {"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}}}
    client = world["client"]
    assert client.post(f"/v1.0/{a}/instances", json=body, headers=reader).status_code == 403
    path = f"/v1.0/{a}/instances/{world['a_instance']}"
    assert client.delete(path, headers=reader).status_code == 403
    assert client.get(path, headers=reader).status_code == 200


def test_members_do_not_reach_management(world: dict[str, Any]) -> None:
    for method, path in project_routes(world["app"]):
        if "/mgmt/" not in path or (path.endswith("/mgmt/quotas/{project}") and method == "GET"):
            continue
        resp = call(world, method, fill(path, world["a"], world["a_instance"]), world["a_member"])
        assert resp.status_code == 403, (method, path, resp.text)


def test_a_cloud_administrator_reaches_every_instance_from_its_own_path(
    world: dict[str, Any],
) -> None:
    """Every route of one instance finds another project's instance through the cloud
    administrator's own project's path (it is being built, so what changes it answers 422);
    the administrator's own list stays its project's."""
    iid = world["a_instance"]
    for method, path in instance_routes(world["app"]):
        resp = call(world, method, fill(path, world["cloud"], iid), world["cloud_admin"])
        assert resp.status_code in (200, 400, 422, 501), (method, path, resp.text)
        assert "could not be found" not in resp.text, (method, path)
    shown = world["client"].get(
        f"/v1.0/{world['cloud']}/instances/{iid}", headers={"X-Auth-Token": world["cloud_admin"]}
    )
    assert shown.json()["instance"]["tenant_id"] == world["a"]
    listed = world["client"].get(
        f"/v1.0/{world['cloud']}/instances", headers={"X-Auth-Token": world["cloud_admin"]}
    )
    assert listed.json() == {"instances": []}
    # Another project's path stays closed to it, as to anyone.
    other = call(world, "GET", f"/v1.0/{world['a']}/instances/{iid}", world["cloud_admin"])
    assert other.status_code == 403
