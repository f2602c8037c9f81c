"""``cove cluster`` against a fake Cove: what each command sends, what it shows, and how
``--wait`` follows the cluster's task."""

from __future__ import annotations

import json
from typing import Any

from fake_cove import FakeCove, reply, run


def cluster(task: str = "NONE", statuses: tuple[str, ...] = ("ACTIVE",) * 3, **extra: Any) -> Any:
    body = {
        "id": "c-1",
        "name": "shop",
        "task": {"id": 1, "name": task, "description": "..."},
        "datastore": {"type": "mariadb", "version": "10.11"},
        "created": "2026-12-06T04:51:37",
        "instances": [
            {
                "id": f"m-{n}",
                "name": f"shop-member-{n}",
                "type": "member",
                "status": status,
                "flavor": {"id": "2"},
                "volume": {"size": 1},
                "ip": [f"127.42.0.{n}"],
                "health": {"cluster_size": 3, "state": "Synced", "ready": True},
            }
            for n, status in enumerate(statuses, start=1)
        ],
        "ip": ["127.42.0.9"],
    }
    body.update(extra)
    return body


def test_create_sends_alike_members_with_weights_and_waits(cove: FakeCove) -> None:
    cove.on("POST", "clusters", reply(200, {"cluster": cluster("BUILDING", ("BUILD",) * 3)}))
    cove.on(
        "GET",
        "clusters/c-1",
        reply(200, {"cluster": cluster("BUILDING", ("ACTIVE", "BUILD", "BUILD"))}),
        reply(200, {"cluster": cluster()}),
    )
    result = run(
        "cluster",
        "create",
        "shop",
        "--datastore",
        "postgresql",
        "--datastore-version",
        "15",
        "--flavor",
        "2",
        "--size",
        "1",
        "--weight",
        "100",
        "--weight",
        "10",
        "--wait",
    )
    assert result.exit_code == 0, result.output
    (body,) = cove.bodies("POST")
    items = body["cluster"]["instances"]
    assert [i.get("weight") for i in items] == [100, 10, None]
    assert {json.dumps({k: v for k, v in i.items() if k != "weight"}) for i in items} == {
        json.dumps({"flavorRef": "2", "volume": {"size": 1}})
    }
    assert "endpoint   127.42.0.9:3306" in result.stdout
    assert "Synced (3 members)" in result.stdout


def test_too_many_weights_are_refused_before_anything_is_sent(cove: FakeCove) -> None:
    result = run(
        "cluster",
        "create",
        "shop",
        "--datastore",
        "postgresql",
        "--datastore-version",
        "15",
        "--flavor",
        "2",
        "--size",
        "1",
        "--members",
        "2",
        "--weight",
        "1",
        "--weight",
        "2",
        "--weight",
        "3",
    )
    assert result.exit_code == 2 and "3 --weight given for 2 members" in result.output
    assert cove.bodies("POST") == []


def test_a_member_in_error_ends_the_wait(cove: FakeCove) -> None:
    cove.on("POST", "clusters/c-1", reply(202, {"cluster": cluster("GROWING_CLUSTER")}))
    cove.on(
        "GET",
        "clusters/c-1",
        reply(
            200, {"cluster": cluster("GROWING_CLUSTER", ("ACTIVE", "ACTIVE", "ACTIVE", "ERROR"))}
        ),
    )
    result = run("cluster", "grow", "c-1", "--flavor", "2", "--size", "1", "--wait")
    assert result.exit_code == 1
    assert "member m-4 of cluster c-1 is in ERROR" in result.output
    assert cove.bodies("POST") == [{"grow": [{"flavorRef": "2", "volume": {"size": 1}}]}]


def test_list_shrink_restart_and_delete(cove: FakeCove) -> None:
    cove.on("GET", "clusters", reply(200, {"clusters": [cluster()]}))
    listed = run("cluster", "list")
    assert listed.exit_code == 0, listed.output
    assert "c-1" in listed.stdout and "127.42.0.9:3306" in listed.stdout
    cove.on("POST", "clusters/c-1", reply(202, {"cluster": cluster("SHRINKING_CLUSTER")}))
    assert run("cluster", "shrink", "c-1", "m-3").exit_code == 0
    assert run("cluster", "restart", "c-1").exit_code == 0
    assert cove.bodies("POST") == [{"shrink": [{"id": "m-3"}]}, {"restart": {}}]
    cove.on("DELETE", "clusters/c-1", reply(202))
    cove.on("GET", "clusters/c-1", reply(404, {"itemNotFound": {"code": 404, "message": "gone"}}))
    deleted = run("cluster", "delete", "c-1", "--wait")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.strip().endswith("Cluster c-1 deleted.")
