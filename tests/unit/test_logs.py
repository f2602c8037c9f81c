"""Structured logs (``cove.common.log``) and the API's access log: one JSON object per line
where ``log_format = "json"``, and one access line per request, carrying the request id the
response carries."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from cove.common.log import JsonFormatter, setup_logging


def test_a_json_line_carries_the_record_its_extras_and_its_traceback() -> None:
    formatter = JsonFormatter("api")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("cove.x").makeRecord(
            "cove.x", logging.ERROR, "f.py", 1, "failed %s", ("twice",), sys.exc_info()
        )
    record.request_id = "req-1"
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR" and parsed["service"] == "api"
    assert parsed["logger"] == "cove.x" and parsed["message"] == "failed twice"
    assert parsed["request_id"] == "req-1"
    assert "ValueError: boom" in parsed["exc"]
    assert parsed["time"].endswith("+00:00")


def test_setup_chooses_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    try:
        setup_logging("conductor", "INFO", "json")
        logging.getLogger("cove.test").info("hello %d", 1)
        assert json.loads(capsys.readouterr().err)["message"] == "hello 1"
        setup_logging("conductor", "INFO", "text")
        logging.getLogger("cove.test").info("hello %d", 2)
        assert "INFO conductor cove.test: hello 2" in capsys.readouterr().err
    finally:
        root.handlers[:], root.level = kept, level


def test_each_request_is_in_the_access_log_with_its_request_id(
    member_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, context, project = member_api
    caplog.set_level(logging.INFO, logger="cove.api.access")
    resp = client.get(f"/v1.0/{project}/instances", params={"marker": "secret-ish"})
    refused = client.get(f"/v1.0/{project}/instances", headers={"X-Auth-Token": "forged"})
    lines = [r for r in caplog.records if r.name == "cove.api.access"]
    assert len(lines) == 2
    first, second = lines
    assert first.request_id == resp.headers["x-openstack-request-id"]  # type: ignore[attr-defined]
    assert (first.method, first.path, first.status) == (  # type: ignore[attr-defined]
        "GET",
        f"/v1.0/{project}/instances",
        200,
    )
    assert "secret-ish" not in first.getMessage()
    assert second.status == 401  # type: ignore[attr-defined]
    assert second.request_id == refused.headers["x-openstack-request-id"]  # type: ignore[attr-defined]
    assert json.loads(JsonFormatter("api").format(first))["duration_ms"] >= 0
    caplog.clear()
    context.settings = context.settings.model_copy(update={"access_log": False})
    client.get(f"/v1.0/{project}/instances")
    assert not [r for r in caplog.records if r.name == "cove.api.access"]


def test_guest_agents_log_as_the_deployment_says(tmp_path: Any, migrated_db: Any) -> None:
    """The task manager hands ``log_format`` to each guest agent in its settings, and an agent
    whose settings say json writes JSON lines."""
    from cove.common.settings import load_settings
    from cove.db.engine import Database
    from cove.db.models import Instance
    from cove.domain.guest import GuestSettings
    from cove.domain.status import Task
    from cove.rpc.codec import from_wire, to_wire
    from cove.taskmanager.context import TaskContext
    from cove.taskmanager.create import guest_spec
    from fakes import FakeBus, FakeDriver
    from rows import add_instance

    settings = load_settings(data_dir=tmp_path, log_format="json")
    migrated_db(settings.database_url)
    tc = TaskContext(settings, Database(settings.database_url), FakeBus(), FakeDriver())  # type: ignore[arg-type]
    iid = add_instance(tc.db, Task.NONE)
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.address = "127.42.0.7"
        spec = guest_spec(tc, inst)
    assert spec.log_format == "json"
    assert from_wire(GuestSettings, to_wire(spec), "guest").log_format == "json"
