"""``cove database``, ``cove user`` and ``cove root``, against a fake Cove."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_cove import FakeCove, reply, run

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


def test_user_create_and_set_password_prompt(cove: FakeCove, terminal: None) -> None:
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


# -- one user spec, and where a password comes from --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "user"),
    [
        (("erin:pw@orders",), {"name": "erin", "password": "pw", "databases": ["orders"]}),
        (("erin:p@ss:w@a,b",), {"name": "erin", "password": "p@ss:w", "databases": ["a", "b"]}),
        (
            ("erin@orders", "--password", "pw", "--database", "audit"),
            {"name": "erin", "password": "pw", "databases": ["orders", "audit"]},
        ),
        (("erin:pw",), {"name": "erin", "password": "pw", "databases": []}),
    ],
)
def test_user_create_takes_the_spec_instance_create_takes(
    cove: FakeCove, argv: tuple[str, ...], user: dict[str, Any]
) -> None:
    cove.on("POST", "instances/i-1/users", reply(202))
    on_instance = [{"name": n} for n in ("a", "b", "orders")]
    cove.on("GET", "instances/i-1/databases", reply(200, {"databases": on_instance}))
    result = run("user", "create", "i-1", *argv)
    assert result.exit_code == 0, result.output
    (sent,) = cove.bodies("POST")[0]["users"]
    assert {**sent, "databases": [d["name"] for d in sent["databases"]]} == user
    assert "Password" not in result.output


def test_password_from_stdin_or_a_file(cove: FakeCove, tmp_path: Path) -> None:
    cove.on("POST", "instances/i-1/users", reply(202))
    cove.on("PUT", "instances/i-1/users/erin", reply(202))
    by_stdin = run("user", "create", "i-1", "erin@orders", "--password-stdin", stdin="s3cret\n")
    secret = tmp_path / "pw"
    secret.write_text("fr0m-file\nignored\n")
    by_file = run("user", "set-password", "i-1", "erin", "--password-file", str(secret))
    for result in (by_stdin, by_file):
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output and "fr0m-file" not in result.output
        assert "Warning" not in result.output
    assert cove.bodies("POST")[0]["users"][0]["password"] == "s3cret"
    assert cove.bodies("PUT") == [{"user": {"password": "fr0m-file"}}]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("erin",), None, "no terminal to ask for one: give it with --password-stdin, "),
        (("erin", "--password-stdin"), "\n", "from standard input is empty"),
        (("erin:pw", "--password-stdin"), "x\n", "give the password one way"),
        (("erin:pw", "--password", "pw"), None, "give the password once"),
        (("erin:",), None, "the password after ':' is empty"),
    ],
)
def test_password_mistakes_are_refused_before_anything_is_sent(
    cove: FakeCove, argv: tuple[str, ...], stdin: str | None, message: str
) -> None:
    result = run("user", "create", "i-1", *argv, stdin=stdin)
    assert result.exit_code == 2
    assert message in result.stderr
    assert cove.bodies("POST") == []


def test_a_tail_that_names_no_database_of_the_instance_is_not_taken_for_one(
    cove: FakeCove,
) -> None:
    cove.on("GET", "instances/i-1/databases", reply(200, {"databases": [{"name": "orders"}]}))
    result = run("user", "create", "i-1", "erin:p@ssword")
    assert result.exit_code == 2
    assert "instance i-1 has no database ssword; if '@' is part of the password" in result.stderr
    assert cove.bodies("POST") == []


def test_password_stdin_at_a_terminal_is_asked_unseen(cove: FakeCove, terminal: None) -> None:
    cove.on("POST", "instances/i-1/users", reply(202))
    result = run("user", "create", "i-1", "erin", "--password-stdin", stdin="typed-Pass\n")
    assert result.exit_code == 0, result.output
    assert "Password for user erin" in result.output and "typed-Pass" not in result.output
    assert cove.bodies("POST")[0]["users"][0]["password"] == "typed-Pass"


def test_instance_create_without_a_terminal_says_how_to_give_a_password(cove: FakeCove) -> None:
    result = run("instance", "create", "shop", "--flavor", "small", "--size", "2", "--user", "app")
    assert result.exit_code == 2
    assert "give it with --user NAME:PASSWORD" in result.stderr
    assert cove.bodies("POST") == []


def test_set_password_without_a_terminal_names_its_own_options(cove: FakeCove) -> None:
    result = run("user", "set-password", "i-1", "erin")
    assert result.exit_code == 2
    assert "give it with --password-stdin, --password-file or --password" in result.stderr
