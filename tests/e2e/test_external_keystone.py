"""The external-Keystone mode: a Cove that keeps no identity of its own and validates every
token against another identity service. A second Cove (the session's `cove up`) plays that
external Keystone, as an OpenStack cloud's Keystone would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import Account, ControlPlane, wait_for

pytestmark = pytest.mark.e2e

SERVICE_USER = "cove-service"
SERVICE_PROJECT = "service"


@pytest.fixture(scope="module")
def identity(cove_up: ControlPlane) -> ControlPlane:
    """The plane that plays the external Keystone."""
    return cove_up


@pytest.fixture(scope="module")
def keystone_plane(identity: ControlPlane) -> Iterator[ControlPlane]:
    """A Cove with ``auth_strategy = keystone`` trusting ``identity``, through a service user
    of its own there; answers are not cached, so a revocation shows at once."""
    service = identity.account(SERVICE_PROJECT, SERVICE_USER, "service")
    plane = ControlPlane(
        identity=identity,
        extra_env={
            "COVE_AUTH_STRATEGY": "keystone",
            "COVE_KEYSTONE_URL": f"{identity.url}/identity/v3",
            "COVE_KEYSTONE_USERNAME": SERVICE_USER,
            "COVE_KEYSTONE_PASSWORD": service.password,
            "COVE_KEYSTONE_PROJECT": SERVICE_PROJECT,
            "COVE_KEYSTONE_CACHE_SECONDS": "0",
        },
    )
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def ext(keystone_plane: ControlPlane) -> Account:
    """A member of project ``ext``: made in, and holding a token of, the external identity."""
    return keystone_plane.account("ext", "ext-user", "member")


def _wait_active(plane: ControlPlane, acct: Account, iid: str) -> dict[str, Any]:
    def active() -> dict[str, Any] | None:
        resp = acct.http.get(f"/instances/{iid}")
        assert resp.status_code == 200, resp.text
        inst: dict[str, Any] = resp.json()["instance"]
        if inst["status"] == "ERROR":
            raise AssertionError(f"instance went to ERROR: {inst.get('fault')}\n{plane.logs()}")
        return inst if inst["status"] == "ACTIVE" else None

    try:
        return wait_for(active, 120, 0.25, "ACTIVE")  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{plane.logs()}") from None


def test_external_user_manages_instances(keystone_plane: ControlPlane, ext: Account) -> None:
    assert ext.http.get("/flavors").status_code == 200
    listed = ext.http.get("/instances")
    assert listed.status_code == 200, listed.text
    assert listed.json()["instances"] == []

    resp = ext.http.post(
        "/instances",
        json={
            "instance": {
                "name": "ext-db",
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "postgresql"},
            }
        },
    )
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    inst = _wait_active(keystone_plane, ext, iid)
    assert inst["name"] == "ext-db"
    assert [i["id"] for i in ext.http.get("/instances").json()["instances"]] == [iid]


def test_token_of_another_project_is_forbidden(keystone_plane: ControlPlane, ext: Account) -> None:
    other = keystone_plane.accounts[0]  # a member of project e2e, also from the external identity
    assert other.project_id != ext.project_id
    assert other.http.get("/instances").status_code == 200
    resp = httpx.get(
        f"{keystone_plane.url}/v1.0/{ext.project_id}/instances",
        headers={"X-Auth-Token": other.token},
    )
    assert resp.status_code == 403, resp.text
    assert "forbidden" in resp.json()


def test_bad_or_missing_token_is_unauthorized(
    keystone_plane: ControlPlane, identity: ControlPlane, ext: Account
) -> None:
    url = f"{keystone_plane.url}/v1.0/{ext.project_id}/instances"
    for headers in ({"X-Auth-Token": "cv1.garbage.token"}, {}):
        resp = httpx.get(url, headers=headers)
        assert resp.status_code == 401, resp.text
        assert "unauthorized" in resp.json()
        # Clients learn where to authenticate: the external identity, not this Cove.
        assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{identity.url}/identity/v3"'


def test_token_revoked_at_the_identity_service_is_refused(
    keystone_plane: ControlPlane, identity: ControlPlane, ext: Account
) -> None:
    assert ext.http.get("/instances").status_code == 200
    revoked = httpx.delete(
        f"{identity.url}/identity/v3/auth/tokens",
        headers={"X-Auth-Token": ext.token, "X-Subject-Token": ext.token},
    )
    assert revoked.status_code == 204, revoked.text
    try:
        resp = ext.http.get("/instances")
        assert resp.status_code == 401, resp.text
    finally:
        # A new token works again (and lets the plane clean up after the module).
        ext.token, _catalog = identity.authenticate(ext.user, ext.password, ext.project_id)
        ext.http.headers["X-Auth-Token"] = ext.token
    assert ext.http.get("/instances").status_code == 200


def test_own_identity_endpoints_are_absent(keystone_plane: ControlPlane, ext: Account) -> None:
    assert httpx.get(f"{keystone_plane.url}/identity/v3").status_code == 404
    body = {"auth": {"identity": {"methods": ["password"]}}}
    resp = httpx.post(f"{keystone_plane.url}/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 404, resp.text
    # ... while the external identity answers, and its tokens still work here.
    assert ext.http.get("/flavors").status_code == 200


def test_identity_plane_keeps_serving_its_own_users(
    keystone_plane: ControlPlane, identity: ControlPlane
) -> None:
    assert identity.http.get("/instances").status_code == 200
