"""How the ``cove`` command logs in (clouds.yaml, OS_* variables, the token's catalog) and
reports errors; last, against the real API and identity service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from fake_cove import (
    AUTH_URL,
    PASSWORD,
    PROJECT_ID,
    FakeCove,
    HttpxClient,
    instance,
    isolate,
    keystone_refusal,
    reply,
    run,
    write_clouds,
)

from cove.cli import clouds
from cove.cli.user import client as cli_client


def test_endpoint_from_the_catalog_and_token_on_every_request(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    cove.on("GET", "flavors", reply(200, {"flavors": []}))
    assert run("instance", "list").exit_code == 0
    assert run("flavor", "list").exit_code == 0
    urls = [str(r.url) for r in cove.requests]
    assert urls == [
        f"http://public.cove.test:8779/v1.0/{PROJECT_ID}/instances",
        f"http://public.cove.test:8779/v1.0/{PROJECT_ID}/flavors",
    ]
    # The second run uses the token the first one got (see test_cli_tokens.py).
    assert [r.headers["x-auth-token"] for r in cove.requests] == ["tok-1", "tok-1"]
    assert cove.requests[0].headers["accept"] == "application/json"
    [auth] = cove.auth_requests
    assert str(auth.url) == f"{AUTH_URL}/auth/tokens"
    assert json.loads(auth.content) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "password": PASSWORD,
                        "name": "admin",
                        "domain": {"name": "Default"},
                    }
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }


def test_url_from_environment_replaces_the_catalog(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    result = run("instance", "list", env={"COVE_URL": "http://cove.test:9000/"})
    assert result.exit_code == 0, result.output
    assert str(cove.requests[0].url) == f"http://cove.test:9000/v1.0/{PROJECT_ID}/instances"


def test_interface_and_region_choose_the_endpoint(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    result = run("instance", "list", env={"OS_INTERFACE": "internal"})
    assert result.exit_code == 0, result.output
    assert cove.requests[0].url.host == "internal.cove.test"
    cove.endpoint_region = "elsewhere"
    result = run("instance", "list")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the catalog of {AUTH_URL} has no database endpoint (interface public, "
        "region RegionOne): give Cove's address with --url or COVE_URL\n"
    )


def test_os_variables_override_clouds_yaml(cove: FakeCove, tmp_path: Path) -> None:
    write_clouds(tmp_path / "conf.yaml", auth={"auth_url": AUTH_URL, "username": "admin"})
    cove.on("GET", "limits", reply(200, {"limits": []}))
    missing = run("limits")
    assert missing.exit_code == 1
    assert "lacks password" in missing.stderr
    result = run("limits", env={"OS_PASSWORD": PASSWORD, "OS_PROJECT_ID": PROJECT_ID})
    assert result.exit_code == 0, result.output
    sent = json.loads(cove.auth_requests[-1].content)["auth"]
    assert sent["scope"] == {"project": {"id": PROJECT_ID}}
    assert sent["identity"]["password"]["user"]["password"] == PASSWORD


def test_os_cloud_picks_a_cloud(cove: FakeCove, tmp_path: Path) -> None:
    good = clouds.cove_cloud(AUTH_URL, "RegionOne", clouds.Login("admin", "admin", PASSWORD))
    bad = clouds.cove_cloud(AUTH_URL, "RegionOne", clouds.Login("admin", "admin", "wrong"))
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump({"clouds": {"a": bad, "b": good}}))
    cove.on("GET", "limits", reply(200, {"limits": []}))
    ambiguous = run("limits")
    assert ambiguous.exit_code == 1
    assert "several clouds (a, b): choose one with --os-cloud or OS_CLOUD" in ambiguous.stderr
    assert run("--os-cloud", "b", "limits").exit_code == 0
    assert run("limits", env={"OS_CLOUD": "b"}).exit_code == 0
    unknown = run("--os-cloud", "c", "limits")
    assert "no cloud named 'c'" in unknown.stderr
    refused = run("--os-cloud", "a", "limits")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: authentication refused by {AUTH_URL} for user ")


def test_no_credentials_configured(cove: FakeCove) -> None:
    result = run("instance", "list", env={"OS_CLIENT_CONFIG_FILE": None})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no credentials are configured: run 'export ")
    assert "OS_CLIENT_CONFIG_FILE=" in result.stderr
    assert cove.auth_requests == [] and cove.requests == []
    missing = run("instance", "list", env={"OS_CLIENT_CONFIG_FILE": "/nonexistent.yaml"})
    assert "OS_CLIENT_CONFIG_FILE names /nonexistent.yaml, which does not exist" in missing.stderr


def test_authentication_refused(cove: FakeCove) -> None:
    result = run("instance", "list", env={"OS_PASSWORD": "not-it"})
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: authentication refused by {AUTH_URL} for user admin in project admin "
        f"(cloud 'cove' of {Path.cwd() / 'conf.yaml'} and OS_* variables): "
        "The request you have made requires authentication. "
        "Check the user name, password and project.\n"
    )
    assert "not-it" not in result.output
    assert cove.requests == []


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (
            keystone_refusal("Too many failed authentications; try again in 42 seconds."),
            ": Too many failed authentications; try again in 42 seconds. Check the user name, "
            "password and project.\n",
        ),
        (keystone_refusal("Locked\x1b[2J\nout"), ": Locked [2J out. Check the user name, password"),
        (reply(401), ": check the user name, password and project\n"),
        (reply(401, {"error": {"code": 401}}), ": check the user name, password and project\n"),
    ],
)
def test_refusal_shows_the_identity_services_reason(
    cove: FakeCove, monkeypatch: pytest.MonkeyPatch, answer: httpx.Response, shown: str
) -> None:
    """The service may refuse for a reason other than the credentials (too many failures):
    its message comes first, on one printable line."""
    monkeypatch.setattr(cove, "_identity", lambda request, path: answer)
    result = run("instance", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: authentication refused by {AUTH_URL} for user ")
    assert shown in result.stderr
    assert "\x1b" not in result.stderr


def test_identity_unreachable(cove: FakeCove, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr(cove, "_identity", lambda request, path: refuse(request))
    result = run("instance", "list")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot reach the identity service at {AUTH_URL}: is it running? "
        "(start it with 'make run')\n"
    )


def test_identity_errors_and_odd_answers(cove: FakeCove, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(
        [
            reply(400, {"error": {"code": 400, "title": "Bad Request", "message": "bad body"}}),
            reply(201, {"token": {}}),
            httpx.Response(201, json={"token": {"catalog": []}}, headers={"X-Subject-Token": "t"}),
        ]
    )
    monkeypatch.setattr(cove, "_identity", lambda request, path: next(answers))
    assert run("limits").stderr == "Error (400 Bad Request): bad body\n"
    assert "answered without a token" in run("limits").stderr
    assert "is not scoped to a project" in run("limits").stderr


def test_token_renewed_before_it_expires(cove: FakeCove) -> None:
    cove.expires_in = 60  # less than login.RENEW_BEFORE: every request gets a new token
    page1 = {
        "instances": [instance(id="a")],
        "links": [{"rel": "next", "href": "http://x/instances?marker=a"}],
    }
    cove.on("GET", "instances", reply(200, page1), reply(200, {"instances": []}))
    result = run("instance", "list")
    assert result.exit_code == 0, result.output
    assert len(cove.auth_requests) == 3
    assert [r.headers["x-auth-token"] for r in cove.requests] == ["tok-2", "tok-3"]


def test_password_never_in_output(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": [instance()]}))
    for extra in ((), ("--json",)):
        result = run(*extra, "instance", "list")
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output


# -- errors -----------------------------------------------------------------------------------


def test_error_envelope(cove: FakeCove) -> None:
    body = {"itemNotFound": {"code": 404, "message": "Instance nope could not be found."}}
    cove.on("GET", "instances/nope", reply(404, body))
    result = run("instance", "show", "nope")
    assert result.exit_code == 1
    assert result.stderr == "Error (404 itemNotFound): Instance nope could not be found.\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(502, text="bad gateway"), "Error (502 Bad Gateway): bad gateway"),
        (
            httpx.Response(403, json={"code": "403", "title": "Forbidden", "message": "no"}),
            "Error (403 Forbidden): no",
        ),
        (httpx.Response(500), "Error (500 Internal Server Error): (no message)"),
    ],
)
def test_error_other_shapes(cove: FakeCove, response: httpx.Response, expected: str) -> None:
    cove.on("GET", "flavors", response)
    result = run("flavor", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == expected


def test_connection_refused(cove: FakeCove) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    cove.on("GET", "instances", refuse)
    result = run("--url", "http://127.0.0.1:1", "instance", "list")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: cannot reach Cove at http://127.0.0.1:1: is it running? "
        "(start it with 'make run')\n"
    )
    assert len(cove.auth_requests) == 1


def test_read_timeout(cove: FakeCove) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    cove.on("GET", "limits", slow)
    result = run("--timeout", "2.5", "limits")
    assert result.exit_code == 1
    assert "did not answer within 2.5 s" in result.stderr


def test_bad_url() -> None:
    result = run("--url", "localhost:8779", "limits")
    assert result.exit_code == 2
    assert "must start with http://" in result.output


# -- against the real API and identity service --------------------------------------------------


def test_against_real_cove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``cove up`` writes is what the CLI logs in with, against Cove's own identity
    service and API."""
    from fastapi.testclient import TestClient

    from cove.api.app import create_app
    from cove.api.context import build_context
    from cove.cli.bootstrap import bootstrap_catalog, prepare_access
    from cove.common.settings import load_settings
    from cove.db.engine import Database
    from cove.identity.service import AUTH_FAILED
    from fakes import FakeBus

    isolate(monkeypatch, tmp_path)
    settings = load_settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    bootstrap_catalog(settings)
    access = prepare_access(settings)
    assert access.created is not None and access.clouds_file is not None
    db = Database(settings.database_url)
    bus = FakeBus()  # nothing here casts, and a call would fail the test
    app = create_app(build_context(settings, db, bus))  # type: ignore[arg-type]
    seen: list[str] = []

    def factory(
        base_url: str, timeout: float, headers: dict[str, str], verify: bool | str = True
    ) -> HttpxClient:
        client = TestClient(app, base_url=base_url or "http://testserver", headers=dict(headers))
        client.event_hooks["request"] = [lambda r: seen.append(f"{r.method} {r.url}")]
        return HttpxClient(client)

    monkeypatch.setattr(cli_client, "make_http_client", factory)
    env = {"OS_CLIENT_CONFIG_FILE": str(access.clouds_file), "OS_CLOUD": "cove"}
    try:
        flavors = run("flavor", "list", env=env)
        assert flavors.exit_code == 0, flavors.output
        assert "small" in flavors.stdout
        base = f"{settings.api_url}/v1.0/{access.project_id}"
        assert seen == [
            f"POST {settings.api_url}/identity/v3/auth/tokens",
            f"GET {base}/flavors",
        ]
        nets = run("network", "list", env=env)
        assert nets.exit_code == 0, nets.output
        assert nets.stdout.splitlines()[1].split()[1:] == ["default", "127.42.0.0/16", "true"]
        quotas = run("quota", "show", env=env)
        assert quotas.exit_code == 0, quotas.output
        assert quotas.stdout.splitlines()[1].split() == ["instances", "0", "0", "10"]
        assert run("instance", "list", "--all-projects", env=env).exit_code == 0
        wrong = {**env, "OS_PASSWORD": "wrong-one"}
        refusal = run("flavor", "list", env=wrong)
        assert refusal.exit_code == 1
        assert refusal.stderr.startswith("Error: authentication refused by ")
        assert f"): {AUTH_FAILED} Check the user name, password and project." in refusal.stderr
        for _ in range(settings.login_failure_limit):
            refusal = run("flavor", "list", env=wrong)
        assert ": Too many failed authentications; try again in " in refusal.stderr
        assert bus.sent == []
    finally:
        db.dispose()
