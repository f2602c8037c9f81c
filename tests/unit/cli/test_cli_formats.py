"""Output formats: ``-f table|json|yaml|value|csv`` and ``-c COLUMN`` on every listing and show
command, anywhere on the line, and ``--json`` for the API's own bodies."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
import yaml
from fake_cove import FakeCove, instance, reply, run

from cove.cli import user as cli_user

LISTED = [
    instance("ACTIVE", id="i-1", name="one"),
    instance("BUILD", id="i-2", name="two", volume={"size": 5}),
]


@pytest.fixture
def listed(cove: FakeCove) -> FakeCove:
    cove.on("GET", "instances", reply(200, {"instances": LISTED}))
    cove.on("GET", "instances/i-1", reply(200, {"instance": LISTED[0]}))
    return cove


@pytest.mark.parametrize(
    "argv",
    [
        ("-f", "json", "instance", "list"),
        ("instance", "-f", "json", "list"),
        ("instance", "list", "-f", "json"),
        ("instance", "list", "--format=json"),
        ("instance", "list", "--format", "json"),
        ("--os-cloud", "cove", "instance", "list", "-fjson"),
    ],
)
def test_a_format_anywhere_on_the_line(listed: FakeCove, argv: tuple[str, ...]) -> None:
    result = run(*argv)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["ID"], r["Name"], r["Size"]) for r in rows] == [("i-1", "one", 2), ("i-2", "two", 5)]


def test_list_formats(listed: FakeCove) -> None:
    shown = yaml.safe_load(run("instance", "list", "-f", "yaml").stdout)
    assert shown[1] == {
        "ID": "i-2",
        "Name": "two",
        "Datastore": "postgresql 16",
        "Status": "BUILD",
        "Flavor": "small",
        "Size": 5,
        "Address": "127.42.0.5",
    }
    values = run("instance", "list", "-f", "value", "-c", "id", "-c", "Status").stdout
    assert values == "i-1 ACTIVE/HEALTHY\ni-2 BUILD\n"
    table = list(csv.reader(io.StringIO(run("instance", "list", "-f", "csv").stdout)))
    assert table[0] == ["ID", "Name", "Datastore", "Status", "Flavor", "Size", "Address"]
    assert table[2][:2] == ["i-2", "two"] and table[2][5] == "5"
    assert '"i-2","two"' in run("instance", "list", "-f", "csv").stdout  # quoted as text
    text = run("instance", "list", "-c", "Name", "-c", "ID").stdout.splitlines()
    assert text == ["Name  ID", "one   i-1", "two   i-2"]


def test_show_formats(listed: FakeCove) -> None:
    shown = json.loads(run("instance", "show", "i-1", "-f", "json").stdout)
    assert shown["id"] == "i-1" and shown["status"] == "ACTIVE" and shown["port"] is None
    assert run("instance", "show", "i-1", "-f", "value", "-c", "status").stdout == "ACTIVE\n"
    picked = yaml.safe_load(run("-f", "yaml", "-c", "name", "instance", "show", "i-1").stdout)
    assert picked == {"name": "one"}
    rows = list(csv.reader(io.StringIO(run("instance", "show", "i-1", "-f", "csv").stdout)))
    assert rows[0] == ["Field", "Value"] and ["name", "one"] in rows


def test_json_is_the_api_body_anywhere(listed: FakeCove) -> None:
    for argv in (("--json", "instance", "list"), ("instance", "list", "--json")):
        result = run(*argv)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"instances": LISTED}


def test_an_unknown_column_is_refused_with_the_columns(listed: FakeCove) -> None:
    result = run("instance", "list", "-c", "colour")
    assert result.exit_code == 2
    assert "no column 'colour'; the columns are: ID, Name, Datastore" in result.stderr
    assert run("instance", "list", "-f", "xml").exit_code == 2


def test_a_show_with_a_detail_table(cove: FakeCove) -> None:
    group = {
        "id": "c-1",
        "name": "tuned",
        "datastore_name": "postgresql",
        "values": {"work_mem": 4096, "jit": False},
    }
    cove.on("GET", "configurations/c-1", reply(200, {"configuration": group}))
    text = run("configuration", "show", "c-1").stdout
    assert "Parameter  Value" in text and "work_mem   4096" in text
    shown = json.loads(run("configuration", "show", "c-1", "-f", "json").stdout)
    assert shown["values"] == [
        {"Parameter": "jit", "Value": False},
        {"Parameter": "work_mem", "Value": 4096},
    ]
    only = json.loads(run("configuration", "show", "c-1", "-f", "json", "-c", "values").stdout)
    assert list(only) == ["values"]


def test_a_change_confirms_only_in_table_format(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/action", reply(202))
    assert "restart" in run("instance", "restart", "i-1").stdout.lower()
    assert run("instance", "restart", "i-1", "-f", "json").stdout == ""


def test_every_command_takes_the_output_options() -> None:
    """The commands are loaded as a command line reaches them: each comes with the options."""

    def walk(command: click.Command, ctx: click.Context, path: str) -> int:
        opts = {o for p in command.params for o in p.opts}
        assert {"-f", "--format", "-c", "--column", "--json"} <= opts, path
        if not isinstance(command, click.Group):
            return 1
        found = 0
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{path} {name}"
            found += walk(sub, click.Context(sub, parent=ctx, info_name=name), f"{path} {name}")
        return found

    root = cli_user.cli
    assert walk(root, click.Context(root, info_name="cove"), "cove") > 60


def test_every_command_named_in_the_table_is_there() -> None:
    ctx = click.Context(cli_user.cli, info_name="cove")
    for name in cli_user.COMMANDS:
        command = cli_user.cli.get_command(ctx, name)
        assert command is not None and command.name == name, name
