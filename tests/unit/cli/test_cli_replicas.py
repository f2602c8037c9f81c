"""``cove instance promote``, ``eject`` and ``failovers``, and the failover line of ``show``,
against a fake Cove."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fake_cove import FakeCove, instance, reply, run

PROMOTE = {"promote_to_replica_source": {}}
EJECT = {"eject_replica_source": {}}


def failover(**extra: Any) -> dict[str, Any]:
    record = {
        "id": "f-1",
        "kind": "switchover",
        "reason": "promote_to_replica_source was asked",
        "state": "done",
        "message": None,
        "old_primary": "i-1",
        "new_primary": "i-2",
        "epoch": 2,
        "old_position": 1000,
        "new_position": 1000,
        "lost_bytes": 0,
        "started": "2026-12-06T04:51:37.250000",
        "promoted": "2026-12-06T04:51:38.000000",
        "rejoined": "2026-12-06T04:51:40.500000",
    }
    record.update(extra)
    return record


def fault(code: int, name: str, message: str) -> httpx.Response:
    return reply(code, {name: {"code": code, "message": message}})


# -- promote ------------------------------------------------------------------------------------


def test_promote_asks_for_a_switchover(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-2/action", reply(202))
    result = run("instance", "promote", "i-2")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [PROMOTE]
    assert result.stdout == "Replica i-2 is being promoted to replica source.\n"


def test_promote_wait_until_the_replica_is_the_source(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-2/action", reply(202))
    promoting = instance("PROMOTE", id="i-2", replica_of={"id": "i-1"})
    promoted = instance("ACTIVE", id="i-2", replicas=[{"id": "i-1"}, {"id": "i-3"}])
    cove.on(
        "GET",
        "instances/i-2",
        reply(200, {"instance": promoting}),
        reply(200, {"instance": promoted}),
    )
    cove.on("GET", "instances/i-2/failovers", reply(200, {"failovers": [failover()]}))
    result = run("instance", "promote", "i-2", "--wait")
    assert result.exit_code == 0, result.output
    assert "PROMOTE (" in result.stderr and "ACTIVE/HEALTHY (" in result.stderr
    assert result.stdout.splitlines() == [
        "Instance i-2 is the replica source now.",
        "replicas       i-1, i-3",
        "last_failover  switchover done, i-1 -> i-2, 0 bytes lost, started 2026-12-06 04:51:37",
    ]


def test_promote_wait_json_prints_the_instance(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-2/action", reply(202))
    promoted = instance("ACTIVE", id="i-2", replicas=[{"id": "i-1"}])
    cove.on("GET", "instances/i-2", reply(200, {"instance": promoted}))
    cove.on("GET", "instances/i-2/failovers", reply(200, {"failovers": [failover()]}))
    result = run("--json", "instance", "promote", "i-2", "--wait")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"instance": promoted}


def test_promote_wait_fails_when_it_stays_a_replica(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-2/action", reply(202))
    message = "Promoting the replica failed: instance i-1 did not stop cleanly"
    still = instance("ACTIVE", id="i-2", replica_of={"id": "i-1"}, fault={"message": message})
    cove.on("GET", "instances/i-2", reply(200, {"instance": still}))
    result = run("instance", "promote", "i-2", "--wait")
    assert result.exit_code == 1
    assert f"Error: instance i-2 was not promoted: {message}" in result.stderr


def test_promote_refusals_are_shown_in_the_api_words(cove: FakeCove) -> None:
    cove.on(
        "POST",
        "instances/i-1/action",
        fault(400, "badRequest", "Instance i-1 is not a replica."),
    )
    result = run("instance", "promote", "i-1", "--wait")
    assert result.exit_code == 1
    assert result.stderr == "Error (400 badRequest): Instance i-1 is not a replica.\n"
    assert [r.method for r in cove.requests] == ["POST"]


# -- eject --------------------------------------------------------------------------------------


def test_eject_asks_for_an_eject(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/action", reply(202))
    result = run("instance", "eject", "i-1")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [EJECT]
    assert "being ejected" in result.stdout
    assert [r.method for r in cove.requests] == ["POST"]


def test_eject_wait_follows_the_new_failover(cove: FakeCove) -> None:
    earlier = failover(id="f-0", old_primary="i-1", new_primary="i-2")
    eject = failover(
        id="f-9",
        kind="eject",
        reason="eject_replica_source was asked",
        state="running",
        new_primary=None,
        lost_bytes=None,
        promoted=None,
        rejoined=None,
    )
    promoted = {**eject, "state": "promoted", "new_primary": "i-3"}
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1/failovers",
        reply(200, {"failovers": [earlier]}),
        reply(200, {"failovers": [eject, earlier]}),
        reply(200, {"failovers": [promoted, earlier]}),
    )
    result = run("instance", "eject", "i-1", "--wait")
    assert result.exit_code == 0, result.output
    assert "failover running (" in result.stderr and "failover promoted (" in result.stderr
    assert result.stdout == (
        "Instance i-3 replaced i-1 as replica source (the writes lost are not known); "
        "it rejoins as a replica when it reports again.\n"
    )
    cove.on(
        "GET",
        "instances/i-1/failovers",
        reply(200, {"failovers": [earlier]}),
        reply(200, {"failovers": [promoted, earlier]}),
    )
    as_json = run("--json", "instance", "eject", "i-1", "--wait")
    assert json.loads(as_json.stdout) == {"failover": promoted}


def test_eject_wait_reports_a_failed_failover(cove: FakeCove) -> None:
    message = "No replica could take the place of the replica source: no replica reports."
    failed = failover(id="f-9", kind="eject", state="failed", message=message, new_primary=None)
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1/failovers",
        reply(200, {"failovers": []}),
        reply(200, {"failovers": [failed]}),
    )
    result = run("instance", "eject", "i-1", "--wait")
    assert result.exit_code == 1
    assert f"Error: the eject of i-1 failed: {message}" in result.stderr
    assert "failover failed (" in result.stderr


def test_eject_wait_gives_up(cove: FakeCove) -> None:
    running = failover(id="f-9", kind="eject", state="running", new_primary=None)
    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET",
        "instances/i-1/failovers",
        reply(200, {"failovers": []}),
        reply(200, {"failovers": [running]}),
    )
    result = run("instance", "eject", "i-1", "--wait", "--wait-timeout", "0")
    assert result.exit_code == 1
    assert (
        "gave up waiting after 0 s: the eject of i-1 is failover running; it carries on in the "
        "background (see 'cove instance failovers i-1')"
    ) in result.stderr


def test_eject_wait_stops_on_ctrl_c(cove: FakeCove) -> None:
    def interrupted(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    cove.on("POST", "instances/i-1/action", reply(202))
    cove.on(
        "GET", "instances/i-1/failovers", reply(200, {"failovers": []}), interrupted, interrupted
    )
    result = run("instance", "eject", "i-1", "--wait")
    assert result.exit_code == 130
    assert "stopped waiting; the eject of i-1 carries on in the background" in result.stderr


def test_eject_of_a_reporting_primary_is_refused(cove: FakeCove) -> None:
    message = (
        "Replica source i-1 cannot be ejected as it has a current heartbeat; promote one of "
        "its replicas instead."
    )
    cove.on("POST", "instances/i-1/action", fault(400, "badRequest", message))
    result = run("instance", "eject", "i-1")
    assert result.exit_code == 1
    assert result.stderr == f"Error (400 badRequest): {message}\n"


# -- failovers and show -------------------------------------------------------------------------


def test_failovers_table(cove: FakeCove) -> None:
    automatic = failover(
        id="f-2",
        kind="automatic",
        reason="the lease lapsed",
        state="promoted",
        old_primary="i-2",
        new_primary="i-3",
        lost_bytes=4096,
        started="2026-12-06T05:00:00.000000",
        promoted="2026-12-06T05:00:01.250000",
        rejoined=None,
    )
    failed = failover(
        id="f-0",
        state="failed",
        message="instance i-1 did not stop cleanly",
        new_primary=None,
        lost_bytes=None,
        promoted=None,
        rejoined=None,
    )
    body = {"failovers": [automatic, failover(), failed]}
    cove.on("GET", "instances/i-2/failovers", reply(200, body))
    result = run("instance", "failovers", "i-2")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("  ")[0] == "Started"
    assert [h.strip() for h in header.split("  ") if h.strip()] == [
        "Started",
        "Kind",
        "State",
        "Old primary",
        "New primary",
        "Lost bytes",
        "Promoted",
        "Rejoined",
        "Reason",
    ]
    assert rows[0].split() == [
        *("2026-12-06", "05:00:00", "automatic", "promoted", "i-2", "i-3", "4096", "+1.2s"),
        *("the", "lease", "lapsed"),
    ]
    assert rows[1].split()[:10] == [
        *("2026-12-06", "04:51:37", "switchover", "done", "i-1", "i-2", "0", "+0.8s", "+3.2s"),
        "promote_to_replica_source",
    ]
    assert rows[2].endswith(
        "promote_to_replica_source was asked: instance i-1 did not stop cleanly"
    )
    assert json.loads(run("--json", "instance", "failovers", "i-2").stdout) == body


def test_failovers_of_an_unknown_instance(cove: FakeCove) -> None:
    result = run("instance", "failovers", "nope")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no instance has the id or name 'nope' (see 'cove instance list')\n"
    )


def test_show_names_the_latest_failover_of_a_group(cove: FakeCove) -> None:
    inst = instance("ACTIVE", id="i-2", replicas=[{"id": "i-1"}])
    cove.on("GET", "instances/i-2", reply(200, {"instance": inst}))
    cove.on("GET", "instances/i-2/failovers", reply(200, {"failovers": [failover()]}))
    result = run("instance", "show", "i-2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = lines.index("replicas          i-1")
    assert lines[at + 1] == (
        "last_failover     switchover done, i-1 -> i-2, 0 bytes lost, started 2026-12-06 04:51:37"
    )
    # --json prints the API's answer alone, with no extra request.
    cove.requests.clear()
    assert json.loads(run("--json", "instance", "show", "i-2").stdout) == {"instance": inst}
    assert [r.url.path.rsplit("/", 1)[-1] for r in cove.requests] == ["i-2"]


def test_show_asks_no_failovers_outside_a_group(cove: FakeCove) -> None:
    cove.on("GET", "instances/i-1", reply(200, {"instance": instance("ACTIVE")}))
    result = run("instance", "show", "i-1")
    assert result.exit_code == 0, result.output
    assert "last_failover" not in result.stdout
    assert [r.url.path.rsplit("/", 1)[-1] for r in cove.requests] == ["i-1"]


def test_show_without_failovers_or_their_route(cove: FakeCove) -> None:
    replica = instance("ACTIVE", replica_of={"id": "i-0"})
    cove.on("GET", "instances/i-1", reply(200, {"instance": replica}))
    cove.on("GET", "instances/i-1/failovers", reply(200, {"failovers": []}))
    assert "last_failover" not in run("instance", "show", "i-1").stdout
    del cove.routes[("GET", "instances/i-1/failovers")]  # an API without the extension
    result = run("instance", "show", "i-1")
    assert result.exit_code == 0, result.output
    assert "replica_of        i-0" in result.stdout.splitlines()


GROUPED = {
    "replication": {"synchronous": True, "auto_failover": False, "weight": 300},
    "endpoints": {"read_write": "10.0.0.8:5432", "read_only": "10.0.0.9:5432"},
}


def test_replication_sets_only_what_is_given_and_shows_the_result(cove: FakeCove) -> None:
    cove.on("PUT", "instances/i-2", reply(202))
    cove.on("GET", "instances/i-2", reply(200, {"instance": instance("ACTIVE", **GROUPED)}))
    result = run("instance", "replication", "i-2", "--synchronous", "--weight", "300")
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [
        {"instance": {"replication": {"synchronous": True, "weight": 300}}}
    ]
    assert result.stdout.splitlines() == [
        "synchronous    true",
        "auto_failover  false",
        "weight         300",
        "read_write     10.0.0.8:5432",
        "read_only      10.0.0.9:5432",
    ]
    cove.requests.clear()
    result = run("instance", "replication", "i-2", "--asynchronous", "--no-auto-failover")
    assert cove.bodies("PUT") == [
        {"instance": {"replication": {"synchronous": False, "auto_failover": False}}}
    ]


def test_replication_without_options_only_shows(cove: FakeCove) -> None:
    cove.on("GET", "instances/i-2", reply(200, {"instance": instance("ACTIVE", **GROUPED)}))
    assert run("instance", "replication", "i-2").exit_code == 0
    assert cove.bodies("PUT") == []
    alone = instance("ACTIVE", id="i-1")
    cove.on("GET", "instances/i-1", reply(200, {"instance": alone}))
    result = run("instance", "replication", "i-1")
    assert result.exit_code == 1 and "in no replication group" in result.output
    assert run("instance", "replication", "i-2", "--weight", "5000").exit_code == 2


def test_show_lists_a_group_member_s_endpoints_and_replication(cove: FakeCove) -> None:
    inst = instance("ACTIVE", id="i-2", **GROUPED)
    cove.on("GET", "instances/i-2", reply(200, {"instance": inst}))
    cove.on("GET", "instances/i-2/failovers", reply(200, {"failovers": []}))
    lines = run("instance", "show", "i-2").stdout.splitlines()
    assert "read_write        10.0.0.8:5432" in lines
    assert "replication       synchronous, no automatic failover, weight 300" in lines
