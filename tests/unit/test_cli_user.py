"""The ``cove`` user CLI against a fake API plugged in through ``client.make_http_client``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from cove.cli import user as cli_user
from cove.cli import userfmt as fmt
from cove.cli.user import client as cli_client
from cove.cli.user import instances as cli_instances

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakeCove:
    """Answers by (method, path below the project); a list of replies is served in turn, the
    last one repeating. Every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        raw = request.url.raw_path.decode().split("?")[0]
        _, version, _project, rest = raw.split("/", 3)
        assert version == "v1.0", raw
        replies = self.routes.get((request.method, rest))
        if not replies:
            return reply(404, {"itemNotFound": {"code": 404, "message": "no route"}})
        answer = replies.pop(0) if len(replies) > 1 else replies[0]
        return answer(request) if callable(answer) else answer

    def bodies(self, method: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.method == method and r.content]


def reply(status: int = 200, body: Any = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status)
    return httpx.Response(status, json=body)


@pytest.fixture
def cove(monkeypatch: pytest.MonkeyPatch) -> FakeCove:
    fake = FakeCove()

    def factory(base_url: str, timeout: float, headers: dict[str, str]) -> httpx.Client:
        transport = httpx.MockTransport(fake.handle)
        return httpx.Client(
            base_url=base_url, timeout=timeout, headers=headers, transport=transport
        )

    monkeypatch.setattr(cli_client, "make_http_client", factory)
    monkeypatch.setattr(cli_instances, "POLL_INTERVAL", 0.0)
    return fake


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    base_env: dict[str, str | None] = {"COVE_URL": None, "COVE_PROJECT": None}
    base_env.update(env or {})
    return CliRunner().invoke(cli_user.cli, list(args), input=stdin, env=base_env)


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
    assert second.host == "127.0.0.1"
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


def test_url_and_project_from_environment(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    result = run("instance", "list", env={"COVE_URL": "http://cove.test:9000/"})
    assert result.exit_code == 0, result.output
    assert str(cove.requests[0].url) == "http://cove.test:9000/v1.0/default/instances"
    assert cove.requests[0].headers["accept"] == "application/json"


def test_project_option(cove: FakeCove) -> None:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    result = run("--project", "p 1", "instance", "list", env={"COVE_PROJECT": "ignored"})
    assert result.exit_code == 0, result.output
    assert cove.requests[0].url.raw_path == b"/v1.0/p%201/instances"


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
