"""A fake Cove (API and identity service) for the ``cove`` command's tests, plugged in through
``client.make_http_client``, and the helpers the tests share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from cove.cli import clouds
from cove.cli import user as cli_user
from cove.cli.user import transport

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


#: The collections a reference is resolved against (see cove.cli.user.refs), and the ids
#: the tests give that exist when a test stubs no list.
LISTED = ("instances", "configurations", "backups", "clusters", "flavors")
KNOWN_IDS = {
    "instances": {"i-0", "i-1", "i-2", "i-3", "m-1", "m-2", "m-3"},
    "backups": {"b-0", "b-1"},
    "configurations": {"c-1", "c-2"},
}


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
        store = f"/swift/v1/AUTH_{PROJECT_ID}/"
        if raw.startswith(store):  # the object-store endpoint: routed as "swift:<rest>"
            replies = self.routes.get((request.method, "swift:" + raw.removeprefix(store)))
            if not replies:
                return reply(404, {"itemNotFound": {"code": 404, "message": "no object"}})
            answer = replies.pop(0) if len(replies) > 1 else replies[0]
            return answer(request) if callable(answer) else answer
        _, version, project, rest = raw.split("/", 3)
        assert (version, project) == ("v1.0", PROJECT_ID), raw
        replies = self.routes.get((request.method, rest))
        if not replies and request.method == "GET" and rest in LISTED:
            self.requests.pop()  # a name lookup of the command's, not what a test asks about
            return reply(200, {rest: self._listed(rest)})
        if not replies:
            return reply(404, {"itemNotFound": {"code": 404, "message": "no route"}})
        answer = replies.pop(0) if len(replies) > 1 else replies[0]
        return answer(request) if callable(answer) else answer

    def _listed(self, plural: str) -> list[dict[str, str]]:
        """A list nobody stubbed, which a command reads to find what a name or an id that is
        not a UUID refers to: the ids the tests use and what the routes' paths name, each
        named ``name-of-<id>``."""
        ids = {path.split("/")[1] for _m, path in self.routes if path.startswith(f"{plural}/")}
        ids |= KNOWN_IDS.get(plural, set())
        return [{"id": i, "name": f"name-of-{i}"} for i in sorted(ids)]

    def _identity(self, request: httpx.Request, path: str) -> httpx.Response:
        if request.method == "GET" and path == "projects":
            assert request.headers.get("x-auth-token") == self.token
            name = request.url.params.get("name")
            return reply(200, {"projects": [p for p in self.projects if p["name"] == name]})
        assert (request.method, path) == ("POST", "auth/tokens")
        user = json.loads(request.content)["auth"]["identity"]["password"]["user"]
        if (user.get("name"), user.get("password")) != ("admin", PASSWORD):
            return keystone_refusal("The request you have made requires authentication.")
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


class HttpxClient:
    """An httpx client (on a fake transport, or an ASGI test client) in the shape of the
    command's :class:`cove.cli.user.transport.HttpClient`, its failures turned into the
    command's transport errors."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    @property
    def headers(self) -> Any:
        return self._client.headers

    def request(
        self, method: str, url: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        try:
            return self._client.request(method, url, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise transport.Unreachable(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise transport.TimedOut(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise transport.Failed(str(exc)) from exc

    def close(self) -> None:
        self._client.close()


def keystone_refusal(message: str) -> httpx.Response:
    """Keystone's answer to credentials it does not accept."""
    return reply(401, {"error": {"code": 401, "title": "Unauthorized", "message": message}})


def reply(status: int = 200, body: Any = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status)
    return httpx.Response(status, json=body)


def write_clouds(path: Path, **extra: Any) -> Path:
    cloud = clouds.cove_cloud(AUTH_URL, "RegionOne", clouds.Login("admin", "admin", PASSWORD))
    cloud.update(extra)
    path.write_text(yaml.safe_dump({"clouds": {"cove": cloud}}))
    return path


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's own clouds.yaml, OS_* variables and home out of a test."""
    for variable in OS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clouds, "SYSTEM_FILE", tmp_path / "etc" / "clouds.yaml")


def run(
    *args: str, stdin: str | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
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
