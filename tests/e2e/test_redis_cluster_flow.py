"""A Redis Cluster of three members made through the API: every hash slot served, root on
every member, and a cluster-aware client (redis-py's RedisCluster) writing and reading keys
that spread over every master; deleting it leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from harness import ControlPlane, delete_clusters, wait_for
from redis.cluster import ClusterNode, RedisCluster

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 300.0


def test_a_cluster_aware_client_reaches_every_slot(cove_up: ControlPlane) -> None:
    api = cove_up.account("redis-clusters", "redis-cluster-user", "member").http
    try:
        sharded(cove_up, api)
    except BaseException:
        delete_clusters(api)
        raise


def sharded(plane: ControlPlane, api: Any) -> None:
    version = api.get("/datastores/redis").json()["datastore"]["versions"][0]["name"]
    body = {
        "cluster": {
            "name": "cache",
            "datastore": {"type": "redis", "version": version},
            "instances": [{"flavorRef": "2", "volume": {"size": 1}} for _ in range(3)],
        }
    }
    made = api.post("/clusters", json=body)
    assert made.status_code == 200, made.text
    cid = made.json()["cluster"]["id"]

    def ready() -> dict[str, Any] | None:
        shown: dict[str, Any] = api.get(f"/clusters/{cid}").json()["cluster"]
        statuses = [m["status"] for m in shown["instances"]]
        assert "ERROR" not in statuses, shown
        healthy = all(m.get("health", {}).get("state") == "ok" for m in shown["instances"])
        done = shown["task"]["name"] == "NONE" and statuses == ["ACTIVE"] * 3 and healthy
        return shown if done else None

    cluster = wait_for(ready, READY_TIMEOUT, interval=0.5, what="the cluster serving every slot")
    ips = [m["ip"][0] for m in cluster["instances"]]
    assert sorted(cluster["ip"]) == sorted(ips)
    assert {m["health"]["cluster_size"] for m in cluster["instances"]} == {3}
    # Growing or shrinking would move slots and keys: not yet.
    grow = api.post(f"/clusters/{cid}", json={"grow": [{"flavorRef": "2", "volume": {"size": 1}}]})
    assert grow.status_code == 501, grow.text

    password = api.post(f"/clusters/{cid}/root").json()["user"]["password"]
    client = RedisCluster(
        startup_nodes=[ClusterNode(ip, 6379) for ip in ips], password=password, socket_timeout=5
    )
    try:
        for n in range(300):
            client.set(f"key:{n}", f"value {n}")
        assert [client.get(f"key:{n}") for n in range(300)] == [
            f"value {n}".encode() for n in range(300)
        ]
        # Every master holds some of them: the keys spread over the slots.
        counts = []
        for ip in ips:
            with redis.Redis(host=ip, port=6379, password=password) as node:
                counts.append(node.dbsize())
        assert sum(counts) == 300 and all(counts), counts
    finally:
        client.close()

    assert api.delete(f"/clusters/{cid}").status_code == 202
    wait_for(lambda: api.get(f"/clusters/{cid}").status_code == 404, 120, what="cluster gone")
    for member in cluster["instances"]:
        assert not (plane.data_dir / "instances" / member["id"]).exists()
