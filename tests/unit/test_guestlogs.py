"""Guest logs: the states and records of ``cove.domain.guestlogs``; an agent's logs
(``cove.guestagent.guestlogs``) publishing into a real filesystem store; and the API's log
routes and object-store endpoint over the agent's real RPC table (servers' own log settings
are tested on real servers in tests/integration/test_guest_logs.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cove.common.errors import BadRequest, NotFound
from cove.common.ids import utcnow
from cove.db.models import GuestState, Instance
from cove.domain import guestlogs
from cove.domain.backups import SealKey, StoreSpec
from cove.domain.guestlogs import LogIndex, LogState, LogStatus, LogTarget, LogType, Records
from cove.domain.status import Task
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.guestlogs import GuestLogs, enabled_logs
from cove.guestagent.service import GuestService, guest_endpoints
from cove.storage import configured_store, open_store
from rows import add_instance

PG_LOG = b"".join(
    [
        b"2026-12-08 10:00:00.001 UTC [41] LOG:  database system is ready to accept connections\n",
        b"2026-12-08 10:00:01.002 UTC [42] app@orders LOG:  statement: SELECT 1;\n",
        b"2026-12-08 10:00:02.003 UTC [42] app@orders LOG:  statement: SELECT a\n",
        b"\tFROM t;\n",
        b"2026-12-08 10:00:02.500 UTC [43] app@orders LOG:  execute <unnamed>: SELECT $1\n",
        b"2026-12-08 10:00:02.500 UTC [43] app@orders DETAIL:  parameters: $1 = '7'\n",
        b"2026-12-08 10:00:03.004 UTC [42] app@orders LOG:  duration: 1503.2 ms\n",
        b'2026-12-08 10:00:04.005 UTC [42] app@orders ERROR:  relation "nope" does not exist\n',
        b"2026-12-08 10:00:04.005 UTC [42] app@orders STATEMENT:  SELECT * FROM nope;\n",
        b"2026-12-08 10:00:05.000 UTC [44] LOG:  checkpoint starting: time\n",
    ]
)


def state(**changes: Any) -> LogState:
    base = LogState("general", LogType.USER, True, 100, 0, 0)
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"enabled": False}, LogStatus.DISABLED),
        ({"size": None}, LogStatus.ENABLED),
        ({"size": None, "type": LogType.SYS}, LogStatus.UNAVAILABLE),
        ({"size": 0}, LogStatus.ENABLED),
        ({}, LogStatus.READY),
        ({"offset": 40, "published": 40}, LogStatus.PARTIAL),
        ({"offset": 100, "published": 90}, LogStatus.PUBLISHED),
        ({"offset": 100, "published": 90, "rotated": True}, LogStatus.ROTATED),
    ],
)
def test_a_logs_status(changes: dict[str, Any], expected: LogStatus) -> None:
    assert guestlogs.status(state(**changes)) is expected


def test_pending_counts_what_the_next_publish_reads() -> None:
    assert state(offset=40).pending == 60
    assert state(offset=40, rotated=True, size=10).pending == 10  # a new file, all of it
    assert state(size=None).pending == 0


def test_postgresqls_one_file_is_three_logs() -> None:
    general = guestlogs.select(PG_LOG, Records.STATEMENTS)[0]
    assert general.count(b"statement:") == 2 and b"\tFROM t;\n" in general
    assert b"execute <unnamed>: SELECT $1" in general and b"parameters: $1 = '7'" in general
    assert b"duration" not in general and b"ERROR" not in general
    slow = guestlogs.select(PG_LOG, Records.DURATIONS)[0]
    assert slow == PG_LOG.splitlines(keepends=True)[6]
    errors = guestlogs.select(PG_LOG, Records.OTHERS)[0]
    assert b"ready to accept" in errors and b"STATEMENT:  SELECT * FROM nope" in errors
    assert b"checkpoint starting" in errors
    assert b"LOG:  statement" not in errors and b"duration" not in errors
    assert b"execute" not in errors and b"parameters" not in errors
    assert guestlogs.select(PG_LOG, Records.ALL) == (PG_LOG, True)


def test_parts_end_at_line_ends() -> None:
    assert guestlogs.whole_lines(b"a\nb\nhalf") == b"a\nb\n"
    assert guestlogs.whole_lines(b"no end") == b""
    data = b"".join(f"line {i:04d}\n".encode() for i in range(100))  # 10 bytes each
    pieces = guestlogs.split(data, 95)
    assert b"".join(pieces) == data
    assert all(len(p) <= 95 and p.endswith(b"\n") for p in pieces)
    assert guestlogs.split(b"x" * 250 + b"\n", 100) == [b"x" * 100, b"x" * 100, b"x" * 50 + b"\n"]


def test_an_index_reads_back_and_refuses_what_is_not_one() -> None:
    at = "2026-12-08T10:00:00.000001+00:00"
    part = guestlogs.LogPart("i/general/log-000000", 5, 1, "m", 9, "c", "bk-1", at)
    assert LogIndex.from_json(LogIndex((part,)).to_json()) == LogIndex((part,))
    late = LogIndex((replace(part, published_at="yesterday"),)).to_json()
    named = LogIndex((replace(part, key=7),)).to_json()  # type: ignore[arg-type]
    for bad in (b"[]", b"{}", b'{"version": 2, "parts": []}', b'{"version": 1, "parts": [{}]}',
                late, named):  # fmt: skip
        with pytest.raises(ValueError, match="index"):
            LogIndex.from_json(bad)


def test_unknown_logs_are_named_with_the_ones_there_are() -> None:
    with pytest.raises(LookupError, match=r"its logs: error"):
        guestlogs.find("redis", "general")


# -- an agent's logs -------------------------------------------------------------------------


class Agent:
    """A GuestLogs of a PostgreSQL instance in ``root``, whose apply hook records its calls
    (or fails when told to), with a real filesystem store and a log key."""

    def __init__(self, root: Path, instance_id: str = "i-1") -> None:
        self.conf = root / "conf"
        self.logs = root / "log"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.applied: list[frozenset[str]] = []
        self.refuse = False
        self.guest = GuestLogs("postgresql", instance_id, self.conf, self.logs, self._apply)
        spec = StoreSpec(kind="filesystem", location=str(root / "store"), prefix="database-logs")
        self.target = LogTarget(spec, SealKey("bk-00000001", "11" * 32))
        self.store = open_store(spec)

    def _apply(self, enabled: frozenset[str]) -> None:
        self.applied.append(enabled)
        if self.refuse:
            raise RuntimeError("the server refused")

    def write(self, data: bytes) -> None:
        with (self.logs / "postgresql.log").open("ab") as fh:
            fh.write(data)


def test_a_user_log_is_turned_on_and_off_through_the_record(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    assert [s.name for s in agent.guest.states()] == ["general", "slow_query", "error"]
    assert agent.guest.show("general").enabled is False
    on = agent.guest.set_enabled("general", True)
    assert on.enabled and agent.applied == [frozenset({"general"})]
    assert enabled_logs(agent.conf) == {"general"}
    agent.guest.set_enabled("general", True)  # idempotent: nothing to apply
    assert len(agent.applied) == 1
    agent.refuse = True
    with pytest.raises(RuntimeError):
        agent.guest.set_enabled("slow_query", True)
    assert enabled_logs(agent.conf) == {"general"}  # put back, and the server's files too
    assert agent.applied[-2:] == [frozenset({"general", "slow_query"}), frozenset({"general"})]
    with pytest.raises(BadRequest, match="system log"):
        agent.guest.set_enabled("error", False)
    with pytest.raises(NotFound, match="its logs: general, slow_query, error"):
        agent.guest.show("audit")


def test_publishing_copies_whole_lines_once_and_goes_on_from_there(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.guest.set_enabled("general", True)
    assert agent.guest.show("general").size is None  # no file yet: Enabled
    agent.write(PG_LOG + b"2026-12-08 10:00:09.000 UTC [42] app@orders LOG:  statement: SEL")
    ready = agent.guest.show("general")
    assert guestlogs.status(ready) is LogStatus.READY
    first = agent.guest.publish("general", agent.target)
    assert guestlogs.status(first) is LogStatus.PARTIAL  # the unfinished line waits
    assert first.pending == len(b"2026-12-08 10:00:09.000 UTC [42] app@orders LOG:  statement: SEL")
    agent.write(b"ECT 2;\n")
    second = agent.guest.publish("general", agent.target)
    assert guestlogs.status(second) is LogStatus.PUBLISHED and second.pending == 0
    index = LogIndex.from_json(b"".join(agent.store.get("i-1/general.metafile")))
    assert [p.key for p in index.parts] == ["i-1/general/log-000000", "i-1/general/log-000001"]
    assert index.parts[0].published_at < index.parts[1].published_at
    assert second.published == index.published == sum(p.bytes for p in index.parts)
    # Nothing new: no new part.
    agent.guest.publish("general", agent.target)
    assert len(LogIndex.from_json(b"".join(agent.store.get("i-1/general.metafile"))).parts) == 2
    # The parts are sealed: the store never holds the statements in the clear.
    stored = b"".join(agent.store.get("i-1/general/log-000000"))
    assert b"SELECT" not in stored
    # The other views of the file publish on their own.
    errors = agent.guest.publish("error", agent.target)
    assert errors.published == len(guestlogs.select(PG_LOG, Records.OTHERS)[0])


def test_a_replaced_file_is_rotated_then_published_from_its_start(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write(PG_LOG)
    agent.guest.publish("error", agent.target)
    (agent.logs / "postgresql.log").unlink()
    agent.write(b"2026-12-08 11:00:00.000 UTC [50] LOG:  starting\n")
    rotated = agent.guest.show("error")
    assert guestlogs.status(rotated) is LogStatus.ROTATED
    after = agent.guest.publish("error", agent.target)
    assert guestlogs.status(after) is LogStatus.PUBLISHED
    index = LogIndex.from_json(b"".join(agent.store.get("i-1/error.metafile")))
    assert len(index.parts) == 2  # what was published before stays


def test_discarding_deletes_the_copy_and_the_next_publish_starts_over(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write(PG_LOG)
    agent.guest.publish("error", agent.target)
    gone = agent.guest.discard("error", agent.target)
    assert gone.published == 0 and guestlogs.status(gone) is LogStatus.READY
    assert agent.store.keys("i-1/error/") == [] and agent.store.size("i-1/error.metafile") is None
    assert agent.guest.discard("error", agent.target).published == 0  # idempotent
    again = agent.guest.publish("error", agent.target)
    assert again.published == len(guestlogs.select(PG_LOG, Records.OTHERS)[0])


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture
def logged(member_api: Any, tmp_path: Path) -> Any:
    """The member's client; a healthy PostgreSQL instance of the project whose guest agent's
    log methods (the real RPC table) serve an Agent; that agent."""
    client, context, project_id = member_api
    iid = add_instance(context.db, Task.NONE)
    with context.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.project_id = project_id
        inst.agent_started_at = utcnow() - timedelta(minutes=5)
        s.add(GuestState(instance_id=iid, status="healthy", heartbeat_at=utcnow()))
    agent = Agent(tmp_path / "instance", iid)
    service = object.__new__(GuestService)
    service.manager = SimpleNamespace(logs=agent.guest)  # type: ignore[assignment]
    service._op_lock = threading.RLock()  # type: ignore[assignment]
    table = guest_endpoints(service, object.__new__(GuestAdminEndpoints))
    context.bus.serve(f"guestagent.{iid}", {k: v for k, v in table.items() if "log" in k})
    return SimpleNamespace(client=client, iid=iid, project=project_id, agent=agent, ctx=context)


def test_the_log_routes_speak_troves_words(logged: Any) -> None:
    client, iid, p = logged.client, logged.iid, logged.project
    listed = client.get(f"/v1.0/{p}/instances/{iid}/log")
    assert listed.status_code == 200, listed.text
    general = listed.json()["logs"][0]
    assert general == {
        "name": "general", "type": "USER", "status": "Disabled", "published": 0,
        "pending": 0, "container": "database-logs", "prefix": f"{iid}/general/",
        "metafile": f"{iid}/general.metafile",
    }  # fmt: skip
    on = client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "general", "enable": 1})
    assert on.status_code == 200 and on.json()["log"]["status"] == "Enabled"
    logged.agent.write(PG_LOG)
    shown = client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "general"})
    assert shown.json()["log"]["status"] == "Ready"
    assert shown.json()["log"]["pending"] == len(PG_LOG)
    done = client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "general", "publish": 1})
    assert done.json()["log"]["status"] == "Published"
    assert done.json()["log"]["published"] == len(guestlogs.select(PG_LOG, Records.STATEMENTS)[0])


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "general", "enable": 1, "disable": 1}, 400, "enabled and disabled at once"),
        ({"name": "general", "publish": 1, "discard": True}, 400, "published and discarded"),
        ({"name": "error", "disable": 1}, 400, "system log"),
        ({"name": "audit"}, 404, "its logs: general, slow_query, error"),
        ({"name": "general", "enable": 2}, 400, "enable"),
        ({"name": "", "publish": 1}, 400, "name"),
        ({"publish": 1}, 400, "name"),
        ({"name": "general", "rotate": 1}, 400, "rotate"),
    ],
)
def test_a_bad_log_action_is_refused_in_words(
    logged: Any, body: dict[str, Any], status: int, words: str
) -> None:
    resp = logged.client.post(f"/v1.0/{logged.project}/instances/{logged.iid}/log", json=body)
    assert resp.status_code == status, resp.text
    (fault,) = resp.json().values()
    assert words in fault["message"]


def test_published_logs_read_back_as_swift_objects(logged: Any) -> None:
    client, iid, p = logged.client, logged.iid, logged.project
    logged.agent.write(PG_LOG)
    client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "error", "publish": 1})
    base = f"/swift/v1/AUTH_{p}/database-logs"
    listing = client.get(base, params={"format": "json", "prefix": f"{iid}/error/"})
    assert listing.status_code == 200, listing.text
    (part,) = listing.json()
    assert part["name"] == f"{iid}/error/log-000000" and part["content_type"] == "text/plain"
    head = client.head(f"{base}/{part['name']}")
    expected = guestlogs.select(PG_LOG, Records.OTHERS)[0]
    assert head.headers["x-object-meta-lines"] == str(expected.count(b"\n"))
    assert head.headers["etag"] == part["hash"] and int(head.headers["content-length"]) == len(
        expected
    )
    body = client.get(f"{base}/{part['name']}")
    assert body.status_code == 200 and body.content == expected
    meta = client.get(f"{base}/{iid}/error.metafile")
    assert json.loads(meta.content)["parts"][0]["key"] == part["name"]
    everything = client.get(base)  # plain names, every log of the project
    assert everything.text.splitlines() == [f"{iid}/error.metafile", part["name"]]
    # Only the log container, only the project's instances, and nothing else is served.
    assert client.get(f"/swift/v1/AUTH_{p}/cove-backups").status_code == 404
    assert client.get(f"{base}/{iid}/error/log-000009").status_code == 404
    assert (
        client.get(f"{base}/00000000-0000-0000-0000-000000000000/error.metafile").status_code == 404
    )
    assert client.get("/swift/v1/AUTH_other/database-logs").status_code == 403
    assert client.get(base, headers={"X-Auth-Token": "nope"}).status_code == 401
    assert client.put(f"{base}/{part['name']}", content=b"x").status_code == 405
    assert client.get(base, params={"limit": "-1"}).status_code == 400
    # A damaged index is the store's fault, said as such (503), never a 500.
    store = open_store(configured_store(logged.ctx.settings, "database-logs"))
    good = b"".join(store.get(f"{iid}/error.metafile"))
    store.put(f"{iid}/error.metafile", [b'{"version": 1, "parts": [{"key": 1}]}'])
    broken = client.get(base, params={"format": "json"})
    assert broken.status_code == 503 and "serviceUnavailable" in broken.json()
    assert client.get(f"{base}/{part['name']}").status_code == 503
    store.put(f"{iid}/error.metafile", [good])
    # Discarded: gone from the listing.
    client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "error", "discard": 1})
    assert client.get(base, params={"format": "json"}).json() == []
    never = client.get(base, params={"format": "json", "prefix": f"{iid}/error/"})
    assert never.status_code == 404 and "Nothing is published" in never.text


def test_a_tokens_catalogue_names_the_object_store(member_api: Any) -> None:
    _client, context, project_id = member_api
    catalog = context.identity.catalog(project_id, "http://cove.example:8779")
    (store,) = [s for s in catalog if s["type"] == "object-store"]
    assert {e["url"] for e in store["endpoints"]} == {
        f"http://cove.example:8779/swift/v1/AUTH_{project_id}"
    }


def test_a_record_cut_by_a_publish_goes_on_in_the_next(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write(b"2026-12-08 10:00:02.003 UTC [42] app@orders LOG:  statement: SELECT a\n")
    agent.guest.publish("general", agent.target)
    agent.write(b"\tFROM t;\n2026-12-08 10:00:03.000 UTC [42] app@orders LOG:  checkpoint\n")
    agent.guest.publish("general", agent.target)
    agent.guest.publish("error", agent.target)
    index = LogIndex.from_json(b"".join(agent.store.get("i-1/general.metafile")))
    assert [p.lines for p in index.parts] == [1, 1]  # the statement's rest came along
    errors = LogIndex.from_json(b"".join(agent.store.get("i-1/error.metafile")))
    assert sum(p.lines for p in errors.parts) == 1  # the checkpoint alone


def test_a_line_longer_than_a_publish_reads_is_cut_not_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guestlogs, "PUBLISH_BYTES", 100)
    agent = Agent(tmp_path)
    agent.write(b"2026-12-08 10:00:00.000 UTC [41] LOG:  " + b"x" * 250 + b"\n")
    states = [agent.guest.publish("error", agent.target) for _ in range(3)]
    assert [s.offset for s in states] == [100, 200, 290]
    assert guestlogs.status(states[-1]) is LogStatus.PUBLISHED


def test_logs_are_read_while_the_server_restarts_but_not_while_it_is_built(logged: Any) -> None:
    client, iid, p = logged.client, logged.iid, logged.project

    def task(value: Task) -> None:
        with logged.ctx.db.session() as s:
            inst = s.get(Instance, iid)
            assert inst is not None
            inst.task = value.value

    task(Task.REBOOTING)
    assert client.get(f"/v1.0/{p}/instances/{iid}/log").status_code == 200
    task(Task.BUILDING)
    building = client.post(f"/v1.0/{p}/instances/{iid}/log", json={"name": "error"})
    assert building.status_code == 422 and "not ready" in building.text
