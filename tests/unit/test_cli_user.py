"""The ``cove`` user CLI against a fake Cove (API and identity service) plugged in through
``client.make_http_client``, with credentials from a clouds.yaml in a temporary directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from cove.cli import clouds
from cove.cli import user as cli_user
from cove.cli import userfmt as fmt
from cove.cli.user import client as cli_client
from cove.cli.user import instances as cli_instances

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]

PROJECT_ID = "0f" * 16
PASSWORD = "adm1n-Pa55word"
AUTH_URL = "http://127.0.0.1:8779/identity/v3"
OS_VARIABLES = (
    "OS_CLOUD",
    "OS_CLIENT_CONFIG_FILE",
    *clouds.AUTH_ENV,
    *clouds.CLOUD_ENV,
    "COVE_URL",
    "COVE_DATA_DIR",
)


class FakeCove:
    """The API answers by (method, path below the project); a list of replies is served in
    turn, the last one repeating. The identity service issues a token for ``admin`` with
    ``PASSWORD`` and the API refuses any other token. API requests are recorded in
    ``requests``, identity requests in ``auth_requests``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []
        self.auth_requests: list[httpx.Request] = []
        self.projects = [{"id": PROJECT_ID, "name": "admin"}, {"id": "ab" * 16, "name": "shop"}]
        self.expires_in = 3600.0
        self.endpoint_region = "RegionOne"
        self.token = ""

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/identity/v3/"):
            self.auth_requests.append(request)
            return self._identity(request, request.url.path.removeprefix("/identity/v3/"))
        self.requests.append(request)
        if not self.token or request.headers.get("x-auth-token") != self.token:
            return reply(401, {"unauthorized": {"code": 401, "message": "bad token"}})
        raw = request.url.raw_path.decode().split("?")[0]
        _, version, project, rest = raw.split("/", 3)
        assert (version, project) == ("v1.0", PROJECT_ID), raw
        replies = self.routes.get((request.method, rest))
        if not replies:
            return reply(404, {"itemNotFound": {"code": 404, "message": "no route"}})
        answer = replies.pop(0) if len(replies) > 1 else replies[0]
        return answer(request) if callable(answer) else answer

    def _identity(self, request: httpx.Request, path: str) -> httpx.Response:
        if request.method == "GET" and path == "projects":
            assert request.headers.get("x-auth-token") == self.token
            name = request.url.params.get("name")
            return reply(200, {"projects": [p for p in self.projects if p["name"] == name]})
        assert (request.method, path) == ("POST", "auth/tokens")
        user = json.loads(request.content)["auth"]["identity"]["password"]["user"]
        if (user.get("name"), user.get("password")) != ("admin", PASSWORD):
            return reply(401, {"error": {"code": 401, "title": "Unauthorized", "message": "no"}})
        self.token = f"tok-{len(self.auth_requests)}"
        expires = datetime.fromtimestamp(time.time() + self.expires_in, UTC)
        endpoints = [
            {
                "interface": interface,
                "region": self.endpoint_region,
                "url": f"http://{interface}.cove.test:8779/v1.0/{PROJECT_ID}",
            }
            for interface in ("public", "internal", "admin")
        ]
        token = {
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "project": {"id": PROJECT_ID, "name": "admin"},
            "catalog": [{"type": "database", "endpoints": endpoints}],
        }
        return httpx.Response(201, json={"token": token}, headers={"X-Subject-Token": self.token})

    def bodies(self, method: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.method == method and r.content]


def reply(status: int = 200, body: Any = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status)
    return httpx.Response(status, json=body)


def write_clouds(path: Path, **extra: Any) -> Path:
    cloud = clouds.cove_cloud(AUTH_URL, "RegionOne", clouds.Login("admin", "admin", PASSWORD))
    cloud.update(extra)
    path.write_text(yaml.safe_dump({"clouds": {"cove": cloud}}))
    return path


@pytest.fixture
def cove(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCove:
    fake = FakeCove()

    def factory(
        base_url: str, timeout: float, headers: dict[str, str], verify: bool | str = True
    ) -> httpx.Client:
        transport = httpx.MockTransport(fake.handle)
        return httpx.Client(
            base_url=base_url, timeout=timeout, headers=headers, transport=transport
        )

    for variable in OS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clouds, "SYSTEM_FILE", tmp_path / "etc" / "clouds.yaml")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds(tmp_path / "conf.yaml")))
    monkeypatch.setattr(cli_client, "make_http_client", factory)
    monkeypatch.setattr(cli_instances, "POLL_INTERVAL", 0.0)
    return fake


def run(*args: str, stdin: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli_user.cli, list(args), input=stdin, env=env)


def instance(status: str = "BUILD", **extra: Any) -> dict[str, Any]:
    inst = {
        "id": "i-1",
        "name": "shop",
        "status": status,
        "operating_status": "HEALTHY" if status == "ACTIVE" else "",
        "flavor": {"id": "small"},
        "datastore": {"type": "postgresql", "version": "16"},
        "volume": {"size": 2},
        "ip": ["127.42.0.5"],
        "addresses": [{"address": "127.42.0.5", "type": "private"}],
        "created": "2025-01-01T00:00:00",
        "updated": "2025-01-01T00:00:00",
    }
    inst.update(extra)
    return inst


def create_body(cove: FakeCove, *args: str, stdin: str | None = None) -> dict[str, Any]:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    result = run(
        "instance", "create", "shop", "--flavor", "small", "--size", "2", *args, stdin=stdin
    )
    assert result.exit_code == 0, result.output
    return dict(cove.bodies("POST")[0]["instance"])


# -- instance create --------------------------------------------------------------------------


def test_create_minimal_body(cove: FakeCove) -> None:
    body = create_body(cove)
    assert body == {
        "name": "shop",
        "flavorRef": "small",
        "volume": {"size": 2},
        "databases": [],
        "users": [],
    }


def test_create_full_body(cove: FakeCove) -> None:
    body = create_body(
        cove,
        *("--datastore", "postgresql", "--datastore-version", "16"),
        *("--database", "orders", "--database", "audit"),
        *("--user", "app:secret", "--user", "ro:pa:ss@audit"),
    )
    assert body["datastore"] == {"type": "postgresql", "version": "16"}
    assert body["databases"] == [{"name": "orders"}, {"name": "audit"}]
    assert body["users"] == [
        {"name": "app", "password": "secret", "databases": [{"name": "orders"}, {"name": "audit"}]},
        {"name": "ro", "password": "pa:ss", "databases": [{"name": "audit"}]},
    ]


def test_create_datastore_version_alone(cove: FakeCove) -> None:
    assert create_body(cove, "--datastore-version", "16")["datastore"] == {"version": "16"}


@pytest.mark.parametrize(
    ("spec", "password", "dbs"),
    [
        ("app:secret", "secret", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:a:b:c", "a:b:c", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@ss@orders", "p@ss", [{"name": "orders"}]),
        ("app:x@orders,a$b", "x", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@ss!", "p@ss!", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@", "p@", [{"name": "orders"}, {"name": "a$b"}]),
        ("app:p@orders,", "p@orders,", [{"name": "orders"}, {"name": "a$b"}]),
    ],
)
def test_create_user_spec(cove: FakeCove, spec: str, password: str, dbs: list[Any]) -> None:
    body = create_body(cove, "--database", "orders", "--database", "a$b", "--user", spec)
    assert body["users"] == [{"name": "app", "password": password, "databases": dbs}]


def test_create_user_prompts_for_password(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--database", "audit", "--user", "app@audit"),
        stdin="hunter2-x\nhunter2-x\n",
    )
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST")[0]["instance"]["users"] == [
        {"name": "app", "password": "hunter2-x", "databases": [{"name": "audit"}]}
    ]
    assert "Password for user app" in result.output
    assert "hunter2-x" not in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("app:", "password after ':' is empty"),
        (":pw", "needs a user name"),
        ("app:p@ss", "database ss is not created by this command"),
        ("app:pw@nosuch", "database nosuch is not created"),
    ],
)
def test_create_bad_user_spec(cove: FakeCove, spec: str, message: str) -> None:
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--user", spec),
    )
    assert result.exit_code == 2
    assert message in result.output
    assert cove.requests == []


def test_create_never_prints_passwords(cove: FakeCove) -> None:
    leaky = instance(password="root-secret")
    cove.on("POST", "instances", reply(200, {"instance": leaky}))
    args = ("instance", "create", "shop", "--flavor", "small", "--size", "2")
    for extra in ((), ("--json",)):
        result = run(*extra, *args, "--database", "d", "--user", "app:s3cr3t-pw")
        assert result.exit_code == 0, result.output
        assert "s3cr3t-pw" not in result.output
        assert "root-secret" not in result.output


# -- waiting ----------------------------------------------------------------------------------


def test_create_wait_until_active(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    active = instance("ACTIVE", port=5433)
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance()}),
        reply(200, {"instance": instance()}),
        reply(200, {"instance": active}),
    )
    result = run(
        *("instance", "create", "shop", "--flavor", "small", "--size", "2"),
        *("--database", "orders", "--user", "app:pw-123", "--wait"),
    )
    assert result.exit_code == 0, result.output
    assert 'psql "host=127.42.0.5 port=5433 dbname=orders user=app"' in result.stdout
    assert "BUILD (" in result.stderr
    assert "ACTIVE/HEALTHY (" in result.stderr
    assert result.stderr.count("BUILD (") == 1  # not a terminal: one line per status change
    assert "pw-123" not in result.output
    assert len([r for r in cove.requests if r.method == "GET"]) == 3


def test_create_wait_default_port(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance("ACTIVE")}))
    result = run("instance", "create", "shop", "--flavor", "s", "--size", "1", "--wait")
    assert result.exit_code == 0, result.output
    assert 'psql "host=127.42.0.5 port=5432 dbname=postgres"' in result.stdout


def test_create_wait_until_error(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    failed = instance("ERROR", fault={"message": "initdb failed: disk full"})
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance()}),
        reply(200, {"instance": failed}),
    )
    result = run("instance", "create", "shop", "--flavor", "s", "--size", "1", "--wait")
    assert result.exit_code == 1
    assert "initdb failed: disk full" in result.stderr
    assert "Traceback" not in result.output


def test_create_wait_timeout(cove: FakeCove) -> None:
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance()}))
    result = run(
        *("instance", "create", "shop", "--flavor", "s", "--size", "1"),
        *("--wait", "--wait-timeout", "0"),
    )
    assert result.exit_code == 1
    assert "gave up waiting after 0 s: instance i-1 is BUILD" in result.stderr


def test_delete_wait_until_gone(cove: FakeCove) -> None:
    cove.on("DELETE", "instances/i-1", reply(202))
    gone = reply(404, {"itemNotFound": {"code": 404, "message": "gone"}})
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance("SHUTDOWN")}), gone)
    result = run("instance", "delete", "i-1", "--wait")
    assert result.exit_code == 0, result.output
    assert "Instance i-1 deleted." in result.stdout
    assert "SHUTDOWN (" in result.stderr


def test_restart_wait(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1",
        reply(200, {"instance": instance("REBOOT")}),
        reply(200, {"instance": instance("ACTIVE")}),
    )
    result = run("instance", "restart", "i-1", "--wait")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [{"restart": {}}]
    assert "REBOOT (" in result.stderr


# -- other instance commands ------------------------------------------------------------------


def test_rename(cove: FakeCove) -> None:
    cove.on("PUT", "instances/i-1", reply(202))
    result = run("instance", "rename", "i-1", "shop2")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [{"instance": {"name": "shop2"}}]


def test_show(cove: FakeCove) -> None:
    inst = instance("ACTIVE", port=5433, fault=None)
    cove.on("GET", "instances/i-1", reply(200, {"instance": inst}))
    result = run("instance", "show", "i-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "status            ACTIVE" in lines
    assert "addresses         127.42.0.5 (private)" in lines
    assert "port              5433" in lines
    assert not any(line.startswith("fault") for line in lines)


def test_list_follows_next_links(cove: FakeCove) -> None:
    page1 = {
        "instances": [instance(id="a", name="one")],
        "links": [
            {"rel": "next", "href": "https://elsewhere/v1.0/default/instances?limit=1&marker=a"}
        ],
    }
    page2 = {"instances": [instance(id="b", name="two")]}
    cove.on("GET", "instances", reply(200, page1), reply(200, page2))
    result = run("instance", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "Name", "Datastore", "Status", "Flavor", "Size", "Address"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "one"], ["b", "two"]]
    second = cove.requests[1].url
    assert second.host == "public.cove.test"
    assert dict(second.params) == {"limit": "1", "marker": "a"}


def test_list_stops_on_a_repeated_next_link(cove: FakeCove) -> None:
    page = {
        "instances": [instance()],
        "links": [{"rel": "next", "href": "http://x/instances?marker=i-1"}],
    }
    cove.on("GET", "instances", reply(200, page))
    result = run("--json", "instance", "list")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["instances"]) == 2
    assert len(cove.requests) == 2


def test_list_cap(cove: FakeCove, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "MAX_ITEMS", 3)
    counter = iter(range(100))

    def page(request: httpx.Request) -> httpx.Response:
        n = next(counter)
        body = {
            "instances": [instance(id=f"{n}-{k}") for k in range(2)],
            "links": [{"rel": "next", "href": f"http://x/instances?marker={n}"}],
        }
        return reply(200, body)

    cove.on("GET", "instances", page)
    result = run("--json", "instance", "list")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["instances"]) == 3
    assert "first 3 items" in result.stderr


def test_json_output(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": [instance()]}))
    result = run("--json", "instance", "list")
    assert json.loads(result.stdout) == {"instances": [instance()]}


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
    assert [r.headers["x-auth-token"] for r in cove.requests] == ["tok-1", "tok-2"]
    assert cove.requests[0].headers["accept"] == "application/json"
    [auth, _] = cove.auth_requests
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
        "check the user name, password and project\n"
    )
    assert "not-it" not in result.output
    assert cove.requests == []


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
    cove.expires_in = 60  # less than client.RENEW_BEFORE: every request gets a new token
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


# -- databases and users ----------------------------------------------------------------------


def test_database_commands(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/databases", reply(202))
    cove.on("DELETE", "instances/i-1/databases/orders", reply(202))
    cove.on("GET", "instances/i-1/databases", reply(200, {"databases": [{"name": "orders"}]}))
    args = ("--character-set", "UTF8", "--collate", "C")
    assert run("database", "create", "i-1", "orders", *args).exit_code == 0
    assert cove.bodies("POST") == [
        {"databases": [{"name": "orders", "character_set": "UTF8", "collate": "C"}]}
    ]
    assert run("database", "delete", "i-1", "orders").exit_code == 0
    listed = run("database", "list", "i-1")
    assert listed.stdout.splitlines() == ["Name", "orders"]


def test_user_segment_is_encoded(cove: FakeCove) -> None:
    user = {"name": "u.2", "host": "10.0.0.1", "databases": [{"name": "a"}, {"name": "b"}]}
    cove.on("GET", "instances/i-1/users/u.2%4010.0.0.1", reply(200, {"user": user}))
    result = run("user", "show", "i-1", "u.2@10.0.0.1")
    assert result.exit_code == 0, result.output
    assert "databases  a, b" in result.stdout.splitlines()


def test_user_create_and_set_password_prompt(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/users", reply(202))
    cove.on("PUT", "instances/i-1/users/app", reply(202))
    created = run(
        *("user", "create", "i-1", "app", "--host", "%", "--database", "orders"),
        stdin="pw-one\npw-one\n",
    )
    changed = run("user", "set-password", "i-1", "app", "--password", "pw-two")
    for result in (created, changed):
        assert result.exit_code == 0, result.output
    assert "pw-one" not in created.output
    assert "pw-two" not in changed.output
    assert cove.bodies("POST") == [
        {
            "users": [
                {
                    "name": "app",
                    "password": "pw-one",
                    "host": "%",
                    "databases": [{"name": "orders"}],
                }
            ]
        }
    ]
    assert cove.bodies("PUT") == [{"user": {"password": "pw-two"}}]


def test_user_access_commands(cove: FakeCove) -> None:
    base = "instances/i-1/users/app%40%25/databases"
    cove.on("PUT", base, reply(202))
    cove.on("DELETE", f"{base}/orders", reply(202))
    cove.on("GET", base, reply(200, {"databases": [{"name": "audit"}]}))
    assert run("user", "grant", "i-1", "app@%", "orders", "audit").exit_code == 0
    assert cove.bodies("PUT") == [{"databases": [{"name": "orders"}, {"name": "audit"}]}]
    assert run("user", "revoke", "i-1", "app@%", "orders").exit_code == 0
    assert run("user", "access", "i-1", "app@%").stdout.splitlines() == ["Name", "audit"]


def test_user_list_and_delete(cove: FakeCove) -> None:
    users = [{"name": "app", "host": "%", "databases": [{"name": "orders"}]}]
    cove.on("GET", "instances/i-1/users", reply(200, {"users": users}))
    cove.on("DELETE", "instances/i-1/users/app", reply(202))
    listed = run("user", "list", "i-1")
    assert listed.stdout.splitlines() == ["Name  Host  Databases", "app   %     orders"]
    assert run("user", "delete", "i-1", "app").exit_code == 0


# -- root -------------------------------------------------------------------------------------


def test_root_enable_shows_the_generated_password_once(cove: FakeCove) -> None:
    generated = {"user": {"name": "root", "password": "Gen3rated-pw"}}
    cove.on("POST", "instances/i-1/root", reply(200, generated))
    result = run("root", "enable", "i-1")
    assert result.exit_code == 0, result.output
    assert cove.requests[0].content == b""
    assert result.stdout.count("Gen3rated-pw") == 1
    assert "not shown again" in result.stderr
    as_json = run("--json", "root", "enable", "i-1", "--password", "mine")
    assert json.loads(as_json.stdout) == generated
    assert cove.bodies("POST") == [{"password": "mine"}]


def test_root_show_and_disable(cove: FakeCove) -> None:
    cove.on("GET", "instances/i-1/root", reply(200, {"rootEnabled": True}))
    cove.on("DELETE", "instances/i-1/root", reply(204))
    assert run("root", "show", "i-1").stdout == "root_enabled  true\n"
    assert run("root", "disable", "i-1").exit_code == 0


# -- catalogue --------------------------------------------------------------------------------


def test_flavors(cove: FakeCove) -> None:
    flavor = {"id": None, "str_id": "small", "name": "small", "ram": 512, "vcpus": 1, "disk": 2}
    cove.on("GET", "flavors", reply(200, {"flavors": [flavor]}))
    cove.on("GET", "flavors/small", reply(200, {"flavor": flavor}))
    assert run("flavor", "list").stdout.splitlines()[1].split() == [
        "small",
        "small",
        "1",
        "512",
        "2",
    ]
    shown = run("flavor", "show", "small").stdout.splitlines()
    assert "str_id  small" in shown
    assert not any(line.startswith("id ") for line in shown)


def test_datastores(cove: FakeCove) -> None:
    ds = {
        "id": "d-1",
        "name": "postgresql",
        "default_version": "v-16",
        "versions": [{"id": "v-15", "name": "15"}, {"id": "v-16", "name": "16"}],
    }
    versions = [{"id": "v-16", "name": "16", "version": "16.4", "datastore": "d-1"}]
    cove.on("GET", "datastores", reply(200, {"datastores": [ds]}))
    cove.on("GET", "datastores/postgresql", reply(200, {"datastore": ds}))
    cove.on("GET", "datastores/postgresql/versions", reply(200, {"versions": versions}))
    listed = run("datastore", "list").stdout.splitlines()
    assert listed[1].split() == ["postgresql", "d-1", "16", "15,", "16"]
    assert "default_version  16" in run("datastore", "show", "postgresql").stdout
    assert run("datastore", "versions", "postgresql").stdout.splitlines()[1].split() == [
        "16",
        "16.4",
        "v-16",
    ]


def test_limits(cove: FakeCove) -> None:
    body = {
        "limits": [
            {"verb": "ABSOLUTE", "max_instances": 10, "max_volumes": 40},
            {"verb": "POST", "uri": "*", "value": 200, "remaining": 199, "unit": "MINUTE"},
        ]
    }
    cove.on("GET", "limits", reply(200, body))
    out = run("limits").stdout
    assert "max_instances  10" in out
    assert "POST  *    200    199        MINUTE" in out


def test_networks(cove: FakeCove) -> None:
    nets = [
        {"id": "n-1", "name": "default", "cidr": "127.42.0.0/16", "is_default": True},
        {"id": "n-2", "name": "lab", "cidr": "127.43.0.0/24", "is_default": False},
    ]
    cove.on("GET", "networks", reply(200, {"networks": nets}))
    result = run("network", "list")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["ID", "Name", "CIDR", "Default"],
        ["n-1", "default", "127.42.0.0/16", "true"],
        ["n-2", "lab", "127.43.0.0/24", "false"],
    ]


@pytest.mark.parametrize("network", ["n-2", "lab"])
def test_create_on_a_network(cove: FakeCove, network: str) -> None:
    assert create_body(cove, "--network", network)["nics"] == [{"net-id": network}]


def test_all_projects(cove: FakeCove) -> None:
    items = [instance(tenant_id="ab" * 16), instance(id="i-2", tenant_id=PROJECT_ID)]
    cove.on("GET", "mgmt/instances", reply(200, {"instances": items}))
    result = run("instance", "list", "--all-projects")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[-1] == "Project"
    assert [line.split()[-1] for line in lines[1:]] == ["ab" * 16, PROJECT_ID]
    denied = {"unauthorized": {"code": 401, "message": "User does not have admin privileges."}}
    cove.on("GET", "mgmt/instances", reply(401, denied))
    refused = run("instance", "list", "--all-projects")
    assert refused.exit_code == 1
    assert refused.stderr == "Error (401 unauthorized): User does not have admin privileges.\n"


def test_quota_show_own_project_and_by_name(cove: FakeCove) -> None:
    quotas = [
        {"resource": "instances", "in_use": 2, "reserved": 0, "limit": 10},
        {"resource": "ram", "in_use": 4096, "reserved": 0, "limit": -1},
    ]
    for project in (PROJECT_ID, "ab" * 16):
        cove.on("GET", f"mgmt/quotas/{project}", reply(200, {"quotas": quotas}))
    mine = run("quota", "show")
    assert mine.exit_code == 0, mine.output
    assert [line.split() for line in mine.stdout.splitlines()] == [
        ["Resource", "In", "use", "Reserved", "Limit"],
        ["instances", "2", "0", "10"],
        ["ram", "4096", "0", "unlimited"],
    ]
    assert run("quota", "show", "admin").exit_code == 0
    assert run("quota", "show", "shop").exit_code == 0
    assert run("quota", "show", "cd" * 16).exit_code == 1  # an id is not looked up
    unknown = run("quota", "show", "nope")
    assert unknown.stderr == "Error: no project named 'nope' is visible to you\n"
    paths = [r.url.path.rsplit("/", 1)[-1] for r in cove.requests]
    assert paths == [PROJECT_ID, PROJECT_ID, "ab" * 16, "cd" * 16]
    looked_up = [r.url.params["name"] for r in cove.auth_requests if r.method == "GET"]
    assert looked_up == ["shop", "nope"]


def test_quota_set(cove: FakeCove) -> None:
    cove.on("PUT", f"mgmt/quotas/{'ab' * 16}", reply(200, {"quotas": {"instances": 3}}))
    result = run("quota", "set", "shop", "instances", "3")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [{"quotas": {"instances": 3}}]
    assert result.stdout == "instances  3\n"
    assert run("quota", "set", "shop", "instances", "-2").exit_code == 2


# -- pure helpers -----------------------------------------------------------------------------


def test_parse_user_spec_keeps_password_out_of_repr() -> None:
    spec = fmt.parse_user_spec("app:s3cret@orders")
    assert (spec.name, spec.password, spec.databases) == ("app", "s3cret", ("orders",))
    assert "s3cret" not in repr(spec)
    assert fmt.parse_user_spec("app") == fmt.UserSpec("app", None, None)


def test_table_alignment() -> None:
    assert fmt.table(["A", "Long"], [["xyz", None], ["1", True]]).splitlines() == [
        "A    Long",
        "xyz",
        "1    true",
    ]


def test_mysql_connect_hint() -> None:
    inst = instance("ACTIVE", datastore={"type": "mysql"}, hostname="db.example")
    assert fmt.connect_hint(inst, "orders", "app") == "mysql -h db.example -P 3306 -u app -p orders"
    assert fmt.connect_hint(instance(datastore={"type": "redis"}), None, None) is None


# -- against the real API and identity service --------------------------------------------------


class IdleBus:
    def cast(self, topic: str, method: str, args: Any, context: Any = None) -> None:
        raise AssertionError(f"unexpected cast {method}")

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unexpected call")


def test_against_real_cove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``cove up`` writes is what the CLI logs in with, against Cove's own identity
    service and API."""
    from fastapi.testclient import TestClient

    from cove.api.app import create_app
    from cove.api.context import build_context
    from cove.cli.up import bootstrap_catalog, prepare_access
    from cove.common.settings import load_settings
    from cove.db.engine import Database

    for variable in OS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clouds, "SYSTEM_FILE", tmp_path / "etc" / "clouds.yaml")
    settings = load_settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    bootstrap_catalog(settings)
    access = prepare_access(settings)
    assert access.created is not None and access.clouds_file is not None
    db = Database(settings.database_url)
    app = create_app(build_context(settings, db, IdleBus()))  # type: ignore[arg-type]
    seen: list[str] = []

    def factory(
        base_url: str, timeout: float, headers: dict[str, str], verify: bool | str = True
    ) -> httpx.Client:
        client = TestClient(app, base_url=base_url or "http://testserver", headers=dict(headers))
        client.event_hooks["request"] = [lambda r: seen.append(f"{r.method} {r.url}")]
        return client

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
        refused = run("flavor", "list", env={**env, "OS_PASSWORD": "wrong-one"})
        assert refused.exit_code == 1
        assert refused.stderr.startswith("Error: authentication refused by ")
    finally:
        db.dispose()
