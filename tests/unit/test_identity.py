"""The embedded identity service: Keystone v3 documents, tokens, revocation, restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.common.errors import BadRequest
from cove.common.ids import utcnow
from cove.common.settings import load_settings
from cove.db.engine import Database
from cove.identity import store
from cove.identity.passwords import hash_password, verify_password
from cove.identity.tokens import TokenClaims, TokenSigner
from fakes import FakeBus


def make_client(
    data_dir: Any, api_app: Callable[[Any], Any], migrated_db: Callable[[str], None] | None = None
) -> tuple[TestClient, Database]:
    """An API on the control database in ``data_dir``, made first by ``migrated_db`` if given.
    Its bus (``client.bus``) answers no call; the identity service casts nothing either."""
    settings = load_settings(data_dir=data_dir)
    if migrated_db is not None:
        migrated_db(settings.database_url)
    db = Database(settings.database_url)
    bus = FakeBus()
    client = TestClient(api_app(build_context(settings, db, bus)))  # type: ignore[arg-type]
    client.bus = bus  # type: ignore[attr-defined]
    return client, db


@pytest.fixture
def idp(tmp_path: Any, migrated_db: Callable[[str], None], api_app: Callable[[Any], Any]) -> Any:
    client, db = make_client(tmp_path, api_app, migrated_db)
    pid, password = add_account(db, "orders", "ann", "member")
    client.pid, client.password, client.db = pid, password, db  # type: ignore[attr-defined]
    yield client
    db.dispose()
    assert client.bus.sent == []  # type: ignore[attr-defined]


def login(client: Any, user: str = "ann", password: str | None = None, **scope: Any) -> Any:
    body = password_auth(user, password or client.password, client.pid)
    if scope:
        body["auth"]["scope"] = scope["scope"]  # type: ignore[index]
    return client.post("/identity/v3/auth/tokens", json=body)


def test_version_discovery(idp: Any) -> None:
    doc = idp.get("/identity/v3").json()["version"]
    assert doc["id"].startswith("v3.") and doc["status"] == "stable"
    assert doc["links"][0]["href"] == "http://testserver/identity/v3/"
    root = idp.get("/identity")
    assert root.status_code == 300 and root.json()["versions"]["values"][0]["id"] == doc["id"]


def test_password_authentication_issues_a_keystone_token(idp: Any) -> None:
    resp = login(idp)
    assert resp.status_code == 201, resp.text
    token = resp.headers["X-Subject-Token"]
    assert token.startswith("cv1.") and idp.password not in resp.text
    body = resp.json()["token"]
    assert body["project"]["id"] == idp.pid and body["project"]["name"] == "orders"
    assert body["user"]["name"] == "ann" and body["user"]["domain"]["id"] == "default"
    assert [r["name"] for r in body["roles"]] == ["member"]
    assert body["expires_at"].endswith("Z") and body["methods"] == ["password"]
    database = next(svc for svc in body["catalog"] if svc["type"] == "database")
    assert {e["interface"] for e in database["endpoints"]} == {"public", "internal", "admin"}
    for endpoint in database["endpoints"]:
        assert endpoint["url"] == f"http://testserver/v1.0/{idp.pid}"
        assert endpoint["region"] == endpoint["region_id"] == "RegionOne"
    nocat = idp.post(
        "/identity/v3/auth/tokens?nocatalog", json=password_auth("ann", idp.password, idp.pid)
    )
    assert "catalog" not in nocat.json()["token"]
    # The token opens the project's API.
    assert idp.get(f"/v1.0/{idp.pid}/flavors", headers={"X-Auth-Token": token}).status_code == 200


def test_scope_by_project_name_and_domain(idp: Any) -> None:
    resp = login(idp, scope={"project": {"name": "orders", "domain": {"id": "default"}}})
    assert resp.status_code == 201
    other = login(idp, scope={"project": {"name": "orders", "domain": {"name": "Elsewhere"}}})
    assert other.status_code == 401
    domain = login(idp, scope={"domain": {"id": "default"}})
    assert domain.status_code == 401


@pytest.mark.parametrize(("user", "password"), [("ann", "wrong"), ("nobody", "x"), ("ann", "")])
def test_bad_credentials_are_401_in_keystones_shape(idp: Any, user: str, password: str) -> None:
    body = password_auth(user, password, idp.pid)
    resp = idp.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["code"] == 401 and err["title"] == "Unauthorized"
    assert "X-Subject-Token" not in resp.headers


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"auth": "x"},
        {"auth": {"identity": {"methods": []}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "a"}}}}},
    ],
)
def test_malformed_bodies_are_400(idp: Any, body: Any) -> None:
    resp = idp.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == 400


def test_no_role_on_the_project_is_refused(idp: Any) -> None:
    other, _ = add_account(idp.db, "other", "olga", "member")
    resp = idp.post("/identity/v3/auth/tokens", json=password_auth("ann", idp.password, other))
    assert resp.status_code == 401


def test_validate_check_and_revoke(idp: Any) -> None:
    token = login(idp).headers["X-Subject-Token"]
    own = {"X-Auth-Token": token, "X-Subject-Token": token}
    shown = idp.get("/identity/v3/auth/tokens", headers=own)
    assert shown.status_code == 200 and shown.headers["X-Subject-Token"] == token
    assert shown.json()["token"]["project"]["id"] == idp.pid
    assert idp.head("/identity/v3/auth/tokens", headers=own).status_code == 200
    bogus = {"X-Auth-Token": token, "X-Subject-Token": token[:-4] + "AAAA"}
    assert idp.get("/identity/v3/auth/tokens", headers=bogus).status_code == 404
    # Someone else's token is not ours to look at unless we are an administrator.
    _, bob_pw = add_account(idp.db, "orders", "bob", "member")
    bob = login(idp, "bob", bob_pw).headers["X-Subject-Token"]
    peek = {"X-Auth-Token": bob, "X-Subject-Token": token}
    assert idp.get("/identity/v3/auth/tokens", headers=peek).status_code == 403
    # An admin of an ordinary project is no cloud administrator...
    _, boss_pw = add_account(idp.db, "orders", "boss", "admin")
    boss = login(idp, "boss", boss_pw).headers["X-Subject-Token"]
    peek = {"X-Auth-Token": boss, "X-Subject-Token": token}
    assert idp.get("/identity/v3/auth/tokens", headers=peek).status_code == 403
    # ... an admin of the administrative project is.
    admin_pid, root_pw = add_account(idp.db, "admin", "root-admin", "admin")
    body = password_auth("root-admin", root_pw, admin_pid)
    admin = idp.post("/identity/v3/auth/tokens", json=body).headers["X-Subject-Token"]
    peek = {"X-Auth-Token": admin, "X-Subject-Token": token}
    assert idp.get("/identity/v3/auth/tokens", headers=peek).status_code == 200
    assert idp.delete("/identity/v3/auth/tokens", headers=own).status_code == 204
    api = idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": token})
    assert api.status_code == 401
    # Revoking one token leaves the user's others working.
    again = login(idp).headers["X-Subject-Token"]
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": again}).status_code == 200


def test_tokens_and_revocations_survive_a_restart(
    tmp_path: Any, migrated_db: Callable[[str], None], api_app: Callable[[Any], Any]
) -> None:
    first, db = make_client(tmp_path, api_app, migrated_db)
    pid, password = add_account(db, "p", "u", "member")
    kept = first.post("/identity/v3/auth/tokens", json=password_auth("u", password, pid))
    dropped = first.post("/identity/v3/auth/tokens", json=password_auth("u", password, pid))
    kept_tok, dropped_tok = kept.headers["X-Subject-Token"], dropped.headers["X-Subject-Token"]
    hdr = {"X-Auth-Token": dropped_tok, "X-Subject-Token": dropped_tok}
    assert first.delete("/identity/v3/auth/tokens", headers=hdr).status_code == 204
    db.dispose()
    second, db2 = make_client(tmp_path, api_app)  # a new process: same data directory, same key
    try:
        ok = second.get(f"/v1.0/{pid}/instances", headers={"X-Auth-Token": kept_tok})
        assert ok.status_code == 200, ok.text
        gone = second.get(f"/v1.0/{pid}/instances", headers={"X-Auth-Token": dropped_tok})
        assert gone.status_code == 401
    finally:
        db2.dispose()
    assert first.bus.sent == second.bus.sent == []  # type: ignore[attr-defined]


def test_expired_and_foreign_tokens_are_401(idp: Any, tmp_path: Any) -> None:
    key = (tmp_path / "identity" / "token.key").read_bytes().strip()
    now = utcnow()
    with idp.db.session() as s:
        user = store.find_user(s, "ann")
        claims = TokenClaims(
            user.id,
            idp.pid,
            ("member",),
            ("password",),
            now - timedelta(hours=2),
            now - timedelta(seconds=1),
            "audit",
        )
    expired = TokenSigner(key).issue(claims)
    resp = idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": expired})
    assert resp.status_code == 401 and "expired" in resp.json()["unauthorized"]["message"]
    live = TokenClaims(
        *[getattr(claims, f) for f in ("user_id", "project_id", "roles", "methods", "issued_at")],
        now + timedelta(hours=1),
        "audit",
    )
    forged = TokenSigner(b"k" * 64).issue(live)
    assert (
        idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": forged}).status_code == 401
    )
    # A token whose payload was changed (another project) fails its signature.
    good = TokenSigner(key).issue(live)
    head, payload, sig = good.split(".")
    tampered = f"{head}.{payload[:-2]}AA.{sig}"
    assert (
        idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": tampered}).status_code == 401
    )


def test_role_removal_disable_and_password_change_end_tokens(idp: Any) -> None:
    def works(tok: str) -> int:
        return idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": tok}).status_code

    token = login(idp).headers["X-Subject-Token"]
    with idp.db.session() as s:
        store.set_password(s, "ann", "new-password")
    assert works(token) == 401
    token = login(idp, password="new-password").headers["X-Subject-Token"]
    with idp.db.session() as s:
        store.set_user_enabled(s, "ann", False)
    assert works(token) == 401
    assert login(idp, password="new-password").status_code == 401
    with idp.db.session() as s:
        store.set_user_enabled(s, "ann", True)
    token = login(idp, password="new-password").headers["X-Subject-Token"]
    assert works(token) == 200
    with idp.db.session() as s:
        store.revoke_role(s, "ann", idp.pid, "member")
    assert works(token) == 401
    assert login(idp, password="new-password").status_code == 401


def test_unscoped_tokens_reach_no_project(idp: Any) -> None:
    body = password_auth("ann", idp.password, idp.pid)
    del body["auth"]["scope"]  # type: ignore[attr-defined]
    resp = idp.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 201 and "project" not in resp.json()["token"]
    tok = resp.headers["X-Subject-Token"]
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": tok}).status_code == 403


def test_passwords_are_salted_slow_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    from cove.identity import passwords

    monkeypatch.setattr(passwords, "LOG2_N", 15)  # the real cost, not the cheap one of tests
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second and first.startswith("scrypt$15$")
    assert verify_password("secret", first) and not verify_password("Secret", first)
    assert not verify_password("secret", "md5$whatever")


def test_bootstrap_is_idempotent(idp: Any) -> None:
    identity = idp.app.state.cove.identity
    password = identity.bootstrap()
    assert password and identity.bootstrap() is None
    with idp.db.session() as s:
        admin = store.find_user(s, "admin")
        assert [a.role for a in store.assignments(s, admin.id)] == ["admin"]


def test_admin_reaches_management_only_from_the_administrative_project(idp: Any) -> None:
    _, boss_pw = add_account(idp.db, "orders", "boss", "admin")
    boss = login(idp, "boss", boss_pw)
    assert boss.json()["token"]["is_admin_project"] is False
    tok = {"X-Auth-Token": boss.headers["X-Subject-Token"]}
    assert idp.get(f"/v1.0/{idp.pid}/mgmt/instances", headers=tok).status_code == 403
    # ... while it manages its own project as a member does.
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers=tok).status_code == 200
    admin_pid, root_pw = add_account(idp.db, "admin", "root-admin", "admin")
    resp = idp.post(
        "/identity/v3/auth/tokens", json=password_auth("root-admin", root_pw, admin_pid)
    )
    assert resp.json()["token"]["is_admin_project"] is True
    tok = {"X-Auth-Token": resp.headers["X-Subject-Token"]}
    assert idp.get(f"/v1.0/{admin_pid}/mgmt/instances", headers=tok).status_code == 200


def test_odd_bytes_and_text_are_refused_cleanly(idp: Any) -> None:
    latin1 = "cv1.a.\xe9".encode("latin-1")  # headers are bytes on the wire
    resp = idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": latin1})
    assert resp.status_code == 401
    hdr = {"X-Auth-Token": latin1, "X-Subject-Token": latin1}
    assert idp.get("/identity/v3/auth/tokens", headers=hdr).status_code == 401
    for field in ("name", "password"):
        body = password_auth("ann", idp.password, idp.pid)
        body["auth"]["identity"]["password"]["user"][field] = "\ud800"  # type: ignore[index]
        raw = json.dumps(body).encode()
        resp = idp.post(
            "/identity/v3/auth/tokens", content=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400, resp.text


def test_a_token_obtained_with_a_token_is_revoked_on_its_own(idp: Any) -> None:
    first = login(idp).headers["X-Subject-Token"]
    body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": first}},
            "scope": {"project": {"id": idp.pid}},
        }
    }
    resp = idp.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 201, resp.text
    second = resp.headers["X-Subject-Token"]
    audit = resp.json()["token"]["audit_ids"]
    assert len(audit) == 2 and audit[0] != audit[1]
    hdr = {"X-Auth-Token": second, "X-Subject-Token": second}
    assert idp.delete("/identity/v3/auth/tokens", headers=hdr).status_code == 204
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": first}).status_code == 200


def test_repeated_failures_are_refused_without_checking(idp: Any) -> None:
    for _ in range(10):
        assert login(idp, password="wrong").status_code == 401
    resp = login(idp)  # the right password, too late
    assert resp.status_code == 401
    assert "Too many failed" in resp.json()["error"]["message"]


def test_default_project_without_a_role_gives_an_unscoped_token(idp: Any) -> None:
    with idp.db.session() as s:
        other = store.create_project(s, "elsewhere")
        store.find_user(s, "ann").default_project_id = other.id
    body = password_auth("ann", idp.password, idp.pid)
    del body["auth"]["scope"]  # type: ignore[attr-defined]
    resp = idp.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 201 and "project" not in resp.json()["token"]


def test_names_never_look_like_ids(idp: Any) -> None:
    with idp.db.session() as s, pytest.raises(BadRequest):
        store.create_user(s, "0123456789abcdef0123456789abcdef", "pw")


def test_project_lookups_show_only_ones_own_projects(idp: Any) -> None:
    other, _ = add_account(idp.db, "other", "olga", "member")
    tok = {"X-Auth-Token": login(idp).headers["X-Subject-Token"]}
    names = [p["name"] for p in idp.get("/identity/v3/projects", headers=tok).json()["projects"]]
    assert names == ["orders"]
    assert idp.get("/identity/v3/projects?name=other", headers=tok).json()["projects"] == []
    assert idp.get(f"/identity/v3/projects/{other}", headers=tok).status_code == 404
    assert idp.get(f"/identity/v3/projects/{idp.pid}", headers=tok).status_code == 200
    mine = idp.get("/identity/v3/auth/projects", headers=tok).json()["projects"]
    assert [p["id"] for p in mine] == [idp.pid]
    admin_pid, root_pw = add_account(idp.db, "admin", "root-admin", "admin")
    resp = idp.post(
        "/identity/v3/auth/tokens", json=password_auth("root-admin", root_pw, admin_pid)
    )
    admin = {"X-Auth-Token": resp.headers["X-Subject-Token"]}
    everyone = idp.get("/identity/v3/projects", headers=admin).json()["projects"]
    assert {p["name"] for p in everyone} == {"admin", "orders", "other"}
    assert idp.get("/identity/v3/projects").status_code == 401


def test_a_service_account_validates_tokens_but_revokes_none(idp: Any) -> None:
    token = login(idp).headers["X-Subject-Token"]
    svc_pid, svc_pw = add_account(idp.db, "service", "svc", "service")
    resp = idp.post("/identity/v3/auth/tokens", json=password_auth("svc", svc_pw, svc_pid))
    svc = resp.headers["X-Subject-Token"]
    hdr = {"X-Auth-Token": svc, "X-Subject-Token": token}
    assert idp.get("/identity/v3/auth/tokens", headers=hdr).status_code == 200
    assert idp.delete("/identity/v3/auth/tokens", headers=hdr).status_code == 403
    assert idp.get(f"/v1.0/{svc_pid}/instances", headers={"X-Auth-Token": svc}).status_code == 403
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": token}).status_code == 200


def test_the_token_key_appears_whole_or_not_at_all(tmp_path: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cove.common.keys import ensure_key

    path = tmp_path / "identity" / "token.key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: ensure_key(path), range(16)))
    assert len(keys) == 1 and len(next(iter(keys))) == 64
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]


def test_deeply_nested_json_is_a_400(idp: Any) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    headers = {"Content-Type": "application/json"}
    resp = idp.post("/identity/v3/auth/tokens", content=deep, headers=headers)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 400


def test_a_body_without_length_is_cut_at_the_cap() -> None:
    import asyncio

    from starlette.requests import Request

    from cove.api.inputs import check_request

    received = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b" " * (256 * 1024), "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/identity/v3/auth/tokens",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    problem = asyncio.run(check_request(Request(scope, receive)))
    assert problem is not None and problem.status == 413
    assert len(received) <= 5  # 1 MiB and one chunk more: not the endless body offered


def test_passwords_are_hashed_with_no_database_connection_held(
    idp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cove.identity import service

    held: list[int] = []
    real = service.verify_password

    def watching(password: str, stored: str) -> bool:
        held.append(idp.db.engine.pool.checkedout())
        return real(password, stored)

    monkeypatch.setattr(service, "verify_password", watching)
    assert login(idp).status_code == 201
    assert held == [0]


def test_a_project_admin_revokes_no_other_users_token(idp: Any) -> None:
    token = login(idp).headers["X-Subject-Token"]
    _, boss_pw = add_account(idp.db, "orders", "boss", "admin")
    boss = login(idp, "boss", boss_pw).headers["X-Subject-Token"]
    hdr = {"X-Auth-Token": boss, "X-Subject-Token": token}
    assert idp.delete("/identity/v3/auth/tokens", headers=hdr).status_code == 403
    assert idp.get(f"/v1.0/{idp.pid}/instances", headers={"X-Auth-Token": token}).status_code == 200


def test_the_token_key_without_hard_links(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from cove.common import keys

    def no_links(*_args: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(keys.os, "link", no_links)
    path = tmp_path / "k" / "token.key"
    key = keys.ensure_key(path)
    assert len(key) == 64 and keys.ensure_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_dangling_token_key_link_is_named(tmp_path: Any) -> None:
    from cove.common.errors import ConfigurationError
    from cove.common.keys import ensure_key

    path = tmp_path / "token.key"
    path.symlink_to(tmp_path / "elsewhere" / "key")
    with pytest.raises(ConfigurationError, match=r"symbolic link to .*elsewhere"):
        ensure_key(path)
