"""Names where ids are taken: every command that names an instance, configuration group,
backup, cluster or flavor takes its name or its id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from fake_cove import FakeCove, instance, reply, run

from cove.cli import user as cli_user
from cove.cli.user import COMPLETE_VAR

PG1 = "6a0c4b1e-0d35-4c4e-9d0f-3c2f0b9f1a11"
PG1_TWIN = "9b7d2c3f-1e46-4d5f-8e1a-4d3a1c8e2b22"
BACKUP = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
CLUSTER = "1d2e3f40-5b6c-4d7e-9f80-91a2b3c4d5e6"
GROUP = "2e3f4051-6c7d-4e8f-a091-a2b3c4d5e6f7"


def listing(cove: FakeCove, plural: str, *items: dict[str, Any]) -> None:
    cove.on("GET", plural, reply(200, {plural: list(items)}))


def asked(cove: FakeCove) -> list[str]:
    return [f"{r.method} {r.url.path.split('/', 3)[3]}" for r in cove.requests]


def test_an_instance_by_name(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"}, {"id": PG1_TWIN, "name": "other"})
    cove.on("GET", f"instances/{PG1}", reply(200, {"instance": instance("ACTIVE", id=PG1)}))
    result = run("instance", "show", "pg1")
    assert result.exit_code == 0, result.output
    assert f"id                {PG1}" in result.stdout.splitlines()
    assert asked(cove) == ["GET instances", f"GET instances/{PG1}"]


def test_an_id_costs_no_lookup(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"})
    cove.on("GET", f"instances/{PG1}", reply(200, {"instance": instance("ACTIVE", id=PG1)}))
    assert run("instance", "show", PG1).exit_code == 0
    assert asked(cove) == [f"GET instances/{PG1}"]


def test_an_ambiguous_name_lists_the_matches_and_changes_nothing(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"}, {"id": PG1_TWIN, "name": "pg1"})
    cove.on("DELETE", f"instances/{PG1}", reply(202))
    result = run("instance", "delete", "pg1")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: 2 instances are named 'pg1' ({PG1}, {PG1_TWIN}): give the id of one\n"
    )
    assert asked(cove) == ["GET instances"]


def test_a_name_that_matches_nothing(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"})
    result = run("instance", "restart", "pg2")
    assert result.exit_code == 1
    assert (
        result.stderr == "Error: no instance has the id or name 'pg2' (see 'cove instance list')\n"
    )


@pytest.mark.parametrize(
    ("argv", "request_line"),
    [
        (("database", "list", "pg1"), f"GET instances/{PG1}/databases"),
        (("user", "list", "pg1"), f"GET instances/{PG1}/users"),
        (("root", "show", "pg1"), f"GET instances/{PG1}/root"),
        (("instance", "restart", "pg1"), f"POST instances/{PG1}/action"),
        (("instance", "failovers", "pg1"), f"GET instances/{PG1}/failovers"),
        (("instance", "attach-configuration", "pg1", "tuned"), f"PUT instances/{PG1}"),
        (("backup", "create", "pg1", "nightly"), "POST backups"),
        (("backup", "create", "pg1", "n", "--parent", "nightly"), "POST backups"),
        (("cluster", "shrink", "galera", "pg1"), f"POST clusters/{CLUSTER}"),
        (("backup", "list", "--instance", "pg1"), f"GET instances/{PG1}/backups"),
        (("backup", "show", "nightly"), f"GET backups/{BACKUP}"),
        (("backup", "delete", "nightly"), f"DELETE backups/{BACKUP}"),
        (("cluster", "show", "galera"), f"GET clusters/{CLUSTER}"),
        (("configuration", "show", "tuned"), f"GET configurations/{GROUP}"),
        (("flavor", "show", "small"), "GET flavors/7"),
    ],
)
def test_every_kind_by_name(cove: FakeCove, argv: tuple[str, ...], request_line: str) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"})
    listing(cove, "backups", {"id": BACKUP, "name": "nightly"})
    listing(cove, "clusters", {"id": CLUSTER, "name": "galera"})
    listing(cove, "configurations", {"id": GROUP, "name": "tuned"})
    listing(cove, "flavors", {"id": 7, "str_id": "7", "name": "small"})
    method, path = request_line.split(" ", 1)
    cove.on(method, path, reply(200 if method == "GET" else 202, {}))
    run(*argv)  # what it shows of an empty answer does not matter here
    assert request_line in asked(cove), asked(cove)
    body = cove.bodies(method)
    if argv[:2] == ("backup", "create"):
        assert body[0]["backup"]["instance"] == PG1
        assert body[0]["backup"].get("parent_id", BACKUP) == BACKUP
    if argv[:2] == ("cluster", "shrink"):
        assert PG1 in json.dumps(body) and "pg1" not in json.dumps(body)
    if argv[1] == "attach-configuration":
        assert body == [{"instance": {"configuration": GROUP}}]


def test_create_options_take_names(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"})
    listing(cove, "backups", {"id": BACKUP, "name": "nightly"})
    listing(cove, "configurations", {"id": GROUP, "name": "tuned"})
    cove.on("POST", "instances", reply(200, {"instance": instance()}))
    made = run(
        *("instance", "create", "copy", "--flavor", "small", "--size", "2"),
        *("--backup", "nightly", "--configuration", "tuned"),
    )
    assert made.exit_code == 0, made.output
    body = cove.bodies("POST")[0]["instance"]
    assert body["restorePoint"] == {"backupRef": BACKUP}
    assert body["configuration"] == GROUP
    replica = run("instance", "create", "r1", "--replica-of", "pg1")
    assert replica.exit_code == 0, replica.output
    assert cove.bodies("POST")[1]["instance"]["replica_of"] == PG1


# -- shell completion ----------------------------------------------------------------------------


def complete(words: str, shell: str = "bash") -> list[str]:
    """What ``cove``'s completion answers for the command line ``words`` (the last word being
    completed), asked as the script ``cove completion`` prints asks for it."""
    env = {
        COMPLETE_VAR: f"{shell}_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = CliRunner().invoke(
        cli_user.cli, [], env=env, prog_name="cove", complete_var=COMPLETE_VAR
    )
    assert result.exit_code == 0, result.output
    if shell == "bash":  # "type,value" lines
        return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]
    return result.stdout.splitlines()[1::3]  # type, value, help


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0, result.output
    assert "_COVE_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout
    assert run("completion", "fish").exit_code == 2


def test_commands_and_options_complete() -> None:
    assert "instance" in complete("cove ins")
    assert set(complete("cove instance ")) >= {"list", "show", "create", "delete", "restart"}
    assert "--format" in complete("cove instance list --")
    assert complete("cove instance list -f y") == ["yaml"]


def test_names_complete_from_the_api(cove: FakeCove) -> None:
    listing(cove, "instances", {"id": PG1, "name": "pg1"}, {"id": PG1_TWIN, "name": "orders"})
    listing(cove, "configurations", {"id": GROUP, "name": "tuned"})
    assert complete("cove instance show ") == ["orders", "pg1"]
    assert complete("cove instance show p") == ["pg1"]
    assert complete("cove user list o") == ["orders"]
    assert complete("cove instance attach-configuration pg1 t") == ["tuned"]
    assert complete("cove instance show p", "zsh") == ["pg1"]


def test_completion_without_cove_offers_nothing(
    cove: FakeCove, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE")
    assert complete("cove instance show p") == []
