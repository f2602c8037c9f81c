"""``cove configuration`` and the configuration commands of ``cove instance``, against a fake
Cove."""

from __future__ import annotations

import json

from fake_cove import FakeCove, create_body, reply, run

GROUP = {
    "id": "c-1",
    "name": "tuned",
    "description": None,
    "datastore_name": "postgresql",
    "datastore_version_name": "15",
    "datastore_version_number": "15.4",
    "datastore_version_id": "v-1",
}


def test_create_sends_values_and_shows_the_group(cove: FakeCove) -> None:
    detail = {**GROUP, "values": {"work_mem": 4096, "jit": False}, "instance_count": 0}
    cove.on("POST", "configurations", reply(200, {"configuration": detail}))
    result = run(
        *("configuration", "create", "tuned", "--datastore", "postgresql", "--version", "15"),
        *("--values", '{"work_mem": 4096, "jit": false}', "--description", "for orders"),
    )
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [
        {
            "configuration": {
                "name": "tuned",
                "values": {"work_mem": 4096, "jit": False},
                "description": "for orders",
                "datastore": {"type": "postgresql", "version": "15"},
            }
        }
    ]
    lines = result.stdout.splitlines()
    assert "instance_count            0" in lines
    assert "work_mem   4096" in lines and "jit        false" in lines


def test_values_must_be_a_json_object(cove: FakeCove) -> None:
    for text in ("{not json", "[1]"):
        result = run("configuration", "create", "x", "--values", text)
        assert result.exit_code == 2 and "--values" in result.output
    assert cove.requests == []


def test_list_show_and_instances(cove: FakeCove) -> None:
    cove.on("GET", "configurations", reply(200, {"configurations": [GROUP]}))
    cove.on("GET", "configurations/c-1", reply(200, {"configuration": {**GROUP, "values": {}}}))
    cove.on(
        "GET",
        "configurations/c-1/instances",
        reply(200, {"instances": [{"id": "i-1", "name": "shop"}]}),
    )
    listed = run("configuration", "list")
    assert listed.stdout.splitlines()[1].split() == ["c-1", "tuned", "postgresql", "15"]
    shown = run("--json", "configuration", "show", "c-1")
    assert json.loads(shown.stdout)["configuration"]["id"] == "c-1"
    assert run("configuration", "instances", "c-1").stdout.splitlines() == [
        "ID   Name",
        "i-1  shop",
    ]


def known(cove: FakeCove) -> None:
    """The API knows group c-1 (named 'tuned') by its id; any other id is a 404."""
    cove.on("GET", "configurations/c-1", reply(200, {"configuration": {**GROUP, "values": {}}}))
    cove.on("GET", "configurations", reply(200, {"configurations": [GROUP]}))


def test_set_patch_and_delete(cove: FakeCove) -> None:
    known(cove)
    cove.on("PUT", "configurations/c-1", reply(202))
    cove.on("PATCH", "configurations/c-1", reply(200))
    cove.on("DELETE", "configurations/c-1", reply(202))
    assert run("configuration", "set", "c-1", "--values", "{}", "--name", "n").exit_code == 0
    assert run("configuration", "patch", "c-1", "--values", '{"jit": true}').exit_code == 0
    assert run("configuration", "delete", "c-1").exit_code == 0
    assert cove.bodies("PUT") == [{"configuration": {"values": {}, "name": "n"}}]
    assert cove.bodies("PATCH") == [{"configuration": {"values": {"jit": True}}}]


def test_delete_refused_while_attached_shows_the_fault(cove: FakeCove) -> None:
    known(cove)
    refusal = {"badRequest": {"code": 400, "message": "detach it from them first."}}
    cove.on("DELETE", "configurations/c-1", reply(400, refusal))
    result = run("configuration", "delete", "c-1")
    assert result.exit_code == 1
    assert "Error (400 badRequest): detach it from them first." in result.stderr


def test_parameters(cove: FakeCove) -> None:
    params = [
        {"name": "work_mem", "type": "integer", "restart_required": False, "min": 64, "max": 2048},
        {"name": "jit", "type": "boolean", "restart_required": False},
        {"name": "wal_buffers", "type": "integer", "restart_required": True, "min": -1},
        {"name": "level", "type": "string", "restart_required": False, "allowed": ["a", "b"]},
    ]
    path = "datastores/postgresql/versions/15/parameters"
    cove.on("GET", path, reply(200, {"configuration-parameters": params}))
    cove.on("GET", f"{path}/work_mem", reply(200, params[0]))
    lines = run("configuration", "parameters", "postgresql", "15").stdout.splitlines()
    assert lines[0].split() == ["Name", "Type", "Values", "Restart", "required"]
    assert lines[1].split() == ["work_mem", "integer", "64", "..", "2048", "false"]
    assert lines[3].split() == ["wal_buffers", "integer", "-1", "..", "true"]
    assert lines[4].split() == ["level", "string", "a", "|", "b", "false"]
    one = run("configuration", "parameters", "postgresql", "15", "work_mem").stdout
    assert "max               2048" in one.splitlines()


def test_groups_are_named_by_id_or_name(cove: FakeCove) -> None:
    known(cove)
    cove.on("PATCH", "configurations/c-1", reply(200))
    assert run("configuration", "patch", "tuned", "--values", '{"jit": true}').exit_code == 0
    assert cove.bodies("PATCH") == [{"configuration": {"values": {"jit": True}}}]
    missing = run("configuration", "delete", "nothing")
    assert missing.exit_code == 1 and "no configuration group" in missing.stderr
    twins = [GROUP, {**GROUP, "id": "c-2"}]
    cove.on("GET", "configurations", reply(200, {"configurations": twins}))
    several = run("configuration", "delete", "tuned")
    assert several.stderr == (
        "Error: 2 configuration groups are named 'tuned' (c-1, c-2): give the id of one\n"
    )
    assert several.exit_code == 1
    assert cove.bodies("DELETE") == []


def test_instance_create_attach_and_detach(cove: FakeCove) -> None:
    known(cove)
    assert create_body(cove, "--configuration", "tuned")["configuration"] == "c-1"
    cove.on("PUT", "instances/i-1", reply(202))
    assert run("instance", "attach-configuration", "i-1", "c-1").exit_code == 0
    assert run("instance", "detach-configuration", "i-1").exit_code == 0
    assert cove.bodies("PUT") == [
        {"instance": {"configuration": "c-1"}},
        {"instance": {"configuration": None}},
    ]
    settings = {"instance": {"configuration": {"work_mem": "4MB", "jit": "off"}}}
    cove.on("GET", "instances/i-1/configuration", reply(200, settings))
    lines = run("instance", "configuration", "i-1").stdout.splitlines()
    assert lines == ["Setting   Value", "jit       off", "work_mem  4MB"]
