"""The cluster requests' checks, views and bookkeeping, against a real SQLite control database.
The task manager is the real one on the fake bus with the fake compute driver once a test
serves it; no guest agent answers, so members stay as the API recorded them unless a test
says otherwise (the Galera build itself is tests/e2e/test_cluster_flow.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_instance_admin import DEADLINE, PEOPLE, Cloud, make_cloud

from accounts import add_account
from cove.common.settings import Settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Cluster, Instance
from cove.db.networks import sync_default_network
from cove.domain.clusters import RULES, ClusterSecret, ClusterTask, cluster_task, shards
from cove.domain.status import Task


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        register_version(s, FoundVersion("mariadb", "10.11", "10.11.6", "/usr/sbin"))
        register_version(s, FoundVersion("redis", "7.0", "7.0.15", "/usr/bin"))
        sync_default_network(s, settings)
    return {who: add_account(db, *person) for who, person in PEOPLE.items()}


@pytest.fixture
def cloud(
    tmp_path: Any, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[Cloud]:
    yield from make_cloud(tmp_path, seeded_db, api_app, seed)


def seeds_call(cloud: Cloud, **changes: Any) -> Any:
    """What the seeds' script sends through troveclient: the datastore and version by id,
    ``net-id`` at the top level of each member, the same name for all three."""
    datastores = cloud.request("member", "GET", "datastores").json()["datastores"]
    maria = next(d for d in datastores if d["name"] == "mariadb")
    member = {"name": "shop-member-member", "flavorRef": "2", "volume": {"size": 1}}
    member["net-id"] = "default"
    body: dict[str, Any] = {
        "name": "shop",
        "datastore": {"type": maria["id"], "version": maria["versions"][0]["id"]},
        "instances": [dict(member) for _ in range(3)],
    }
    body.update(changes)
    return cloud.request("member", "POST", "clusters", {"cluster": body})


def made(cloud: Cloud, **changes: Any) -> dict[str, Any]:
    resp = seeds_call(cloud, **changes)
    assert resp.status_code == 200, resp.text
    cluster: dict[str, Any] = resp.json()["cluster"]
    return cluster


def members_ready(cloud: Cloud, cluster: dict[str, Any]) -> None:
    for member in cluster["instances"]:
        cloud.ready(member["id"])


def test_the_seeds_call_records_a_building_cluster_of_three_members(cloud: Cloud) -> None:
    cluster = made(cloud, locality="affinity", extended_properties={"owner": "shop"})
    assert "status" not in cluster
    assert cluster["task"] == {
        "id": 2,
        "name": "BUILDING",
        "description": "Building the initial cluster.",
    }
    assert cluster["datastore"] == {"type": "mariadb", "version": "10.11"}
    assert cluster["locality"] == "affinity"
    assert cluster["extended_properties"] == {"owner": "shop"}
    members = cluster["instances"]
    assert [m["name"] for m in members] == ["shop-member-member"] * 3
    assert {m["type"] for m in members} == {"member"}
    assert {m["status"] for m in members} == {"BUILD"}
    assert {m["flavor"]["id"] for m in members} == {"2"}
    assert {m["volume"]["size"] for m in members} == {1}
    rows = [cloud.row(m["id"]) for m in members]
    assert [r.cluster_index for r in rows] == [0, 1, 2]
    assert {r.cluster_id for r in rows} == {cluster["id"]}
    # Each member was handed to the task managers (nobody serves them here: the casts wait).
    shown = cloud.request("member", "GET", f"clusters/{cluster['id']}").json()["cluster"]
    assert [m["id"] for m in shown["instances"]] == [m["id"] for m in members]


def test_members_are_left_out_of_the_instance_list_unless_asked(cloud: Cloud) -> None:
    cluster = made(cloud)
    alone = cloud.create()
    ids = {m["id"] for m in cluster["instances"]}
    listed = {i["id"] for i in cloud.request("member", "GET", "instances").json()["instances"]}
    assert listed == {alone}
    everything = cloud.request("member", "GET", "instances/detail?include_clustered=true")
    assert {i["id"] for i in everything.json()["instances"]} == ids | {alone}
    member = next(iter(ids))
    assert cloud.show("member", member)["cluster_id"] == cluster["id"]
    assert "cluster_id" not in cloud.show("member", alone)
    inside = cloud.request("member", "GET", f"clusters/{cluster['id']}/instances/{member}")
    assert inside.status_code == 200 and inside.json()["instance"]["id"] == member
    outside = cloud.request("member", "GET", f"clusters/{cluster['id']}/instances/{alone}")
    assert outside.status_code == 404, outside.text


def test_the_task_reads_none_once_every_member_is_built(cloud: Cloud) -> None:
    cluster = made(cloud)
    members_ready(cloud, cluster)
    shown = cloud.request("member", "GET", "clusters").json()["clusters"]
    assert [c["id"] for c in shown] == [cluster["id"]]
    assert shown[0]["task"]["name"] == "NONE"
    assert {m["status"] for m in shown[0]["instances"]} == {"ACTIVE"}
    assert {m["ip"][0] for m in shown[0]["instances"]} == {"127.42.0.9"}


def test_another_projects_cluster_is_not_found(cloud: Cloud) -> None:
    cluster = made(cloud)
    for method in ("GET", "DELETE"):
        resp = cloud.request("stranger", method, f"clusters/{cluster['id']}")
        assert resp.status_code == 404, resp.text
        assert "itemNotFound" in resp.json()
    assert cloud.request("stranger", "GET", "clusters").json()["clusters"] == []


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"instances": [{"flavorRef": "2", "volume": {"size": 1}}] * 2}, 400, "from 3"),
        ({"datastore": {"type": "mariadb"}}, 400, "type and version"),
        ({"locality": "anti-affinity"}, 400, "one host"),
        ({"locality": "nearby"}, 400, "Locality must be one of"),
        ({"name": ""}, 400, "name"),
        (
            {
                "instances": [
                    {"flavorRef": "2", "volume": {"size": 1}},
                    {"flavorRef": "3", "volume": {"size": 1}},
                    {"flavorRef": "2", "volume": {"size": 1}},
                ]
            },
            400,
            "flavor for each instance",
        ),
        (
            {"instances": [{"flavorRef": "2", "volume": {"size": n}} for n in (1, 2, 1)]},
            400,
            "volume size for each instance",
        ),
        ({"instances": [{"flavorRef": "2"}] * 3}, 400, "volume"),
        ({"instances": [{"volume": {"size": 1}}] * 3}, 400, "flavor"),
        (
            {"instances": [{"flavorRef": "2", "volume": {"size": 1}, "weight": 5}] * 3},
            400,
            "weight",
        ),
        (
            {"instances": [{"flavorRef": "2", "volume": {"size": 1}, "net-id": "nowhere"}] * 3},
            400,
            "nowhere",
        ),
        (
            {
                "instances": [
                    {"flavorRef": "2", "volume": {"size": 1}, "net-id": "default", "nics": [{}]}
                ]
                * 3
            },
            400,
            "not both",
        ),
        ({"instances": [{"flavorRef": "nope", "volume": {"size": 1}}] * 3}, 404, "nope"),
        ({"configuration": "nope"}, 404, "nope"),
    ],
)
def test_what_a_cluster_request_may_not_say(
    cloud: Cloud, changes: dict[str, Any], status: int, words: str
) -> None:
    resp = seeds_call(cloud, **changes)
    assert resp.status_code == status, resp.text
    (fault,) = resp.json().values()
    assert words in fault["message"], fault
    with cloud.db.session() as s:
        assert s.query(Cluster).count() == 0 and s.query(Instance).count() == 0


def test_a_cluster_beyond_the_quota_records_nothing(cloud: Cloud) -> None:
    shop = cloud.projects["member"]
    resp = cloud.request("cloud", "PUT", f"mgmt/quotas/{shop}", {"quotas": {"instances": 2}})
    assert resp.status_code == 200, resp.text
    refused = seeds_call(cloud)
    assert refused.status_code == 413, refused.text
    with cloud.db.session() as s:
        assert s.query(Cluster).count() == 0 and s.query(Instance).count() == 0


def test_actions(cloud: Cloud) -> None:
    cluster = made(cloud)
    path = f"clusters/{cluster['id']}"
    two = cloud.request("member", "POST", path, {"restart": {}, "grow": []})
    assert two.status_code == 400, two.text
    assert cloud.request("member", "POST", path, {"upgrade": {}}).status_code == 501
    attach = {"configuration_attach": {"configuration_id": "x"}}
    assert cloud.request("member", "POST", path, attach).status_code == 422
    assert cloud.request("member", "POST", path, {"configuration_attach": {}}).status_code == 400
    assert cloud.request("member", "POST", path, {"fly": {}}).status_code == 400
    assert cloud.request("member", "POST", path, {"reset-status": {}}).status_code == 403
    cloud.set_row(cluster["instances"][0]["id"], task=Task.NONE.value)
    # A cloud administrator reaches it through its own project's path.
    reset = cloud.request("cloud", "POST", path, {"reset-status": {}})
    assert reset.status_code == 202, reset.text
    with cloud.db.session() as s:
        row = s.get(Cluster, cluster["id"])
        assert row is not None and row.task == "NONE"


def test_grow_shrink_and_restart_check_what_they_are_asked(cloud: Cloud) -> None:
    cluster = made(cloud)
    path = f"clusters/{cluster['id']}"
    ids = [m["id"] for m in cluster["instances"]]
    member = {"flavorRef": "2", "volume": {"size": 1}}
    # Nothing may start while the cluster is being built.
    busy = cloud.request("member", "POST", path, {"grow": [member]})
    assert busy.status_code == 422 and "BUILDING" in busy.text
    members_ready(cloud, cluster)
    for body, words in (
        ({"grow": {}}, "list of instances"),
        ({"grow": []}, "at least one"),
        ({"grow": [{"flavorRef": "3", "volume": {"size": 1}}]}, "flavor 2, volume 1 GB"),
        ({"grow": [{"flavorRef": "2", "volume": {"size": 2}}]}, "flavor 2, volume 1 GB"),
        ({"grow": [{**member, "colour": "red"}]}, "colour"),
        ({"grow": [{**member, "net-id": "nowhere"}]}, "nowhere"),
        ({"shrink": [{"id": ids[0]}]}, "leave 2 member(s)"),
        ({"shrink": [{"id": "someone"}]}, "not a member"),
        ({"shrink": ["x"]}, '{"id": "<instance>"}'),
        ({"restart": {"now": True}}, "no arguments"),
    ):
        resp = cloud.request("member", "POST", path, body)
        assert resp.status_code == 400, (body, resp.text)
        assert words in resp.json()["badRequest"]["message"], (body, resp.text)
    grown = cloud.request("member", "POST", path, {"grow": [{**member, "name": "fourth"}]})
    assert grown.status_code == 202, grown.text
    shown = grown.json()["cluster"]
    assert shown["task"]["name"] == "GROWING_CLUSTER"
    assert [m["name"] for m in shown["instances"]][-1] == "fourth"
    assert cloud.row(shown["instances"][-1]["id"]).cluster_index == 3
    # A member whose build failed holds every other action up, but may be shrunk away.
    fourth = shown["instances"][-1]["id"]
    cloud.set_row(fourth, task=Task.BUILD_ERROR.value)
    stuck = cloud.request("member", "POST", path, {"restart": {}})
    assert stuck.status_code == 422 and fourth in stuck.text
    gone = cloud.request("member", "POST", path, {"shrink": [{"id": fourth}]})
    assert gone.status_code == 202, gone.text
    assert cloud.row(fourth).task == Task.DELETING.value
    cloud.set_row(fourth, task=Task.NONE.value)
    shrunk = cloud.request("member", "POST", path, {"shrink": [{"id": ids[1]}]})
    assert shrunk.status_code == 202, shrunk.text
    assert shrunk.json()["cluster"]["task"]["name"] == "SHRINKING_CLUSTER"
    assert cloud.row(ids[1]).task == Task.DELETING.value
    again = cloud.request("member", "POST", path, {"restart": {}})
    assert again.status_code == 422, again.text
    cloud.set_row(ids[1], task=Task.NONE.value)
    restarted = cloud.request("member", "POST", path, {"restart": {}})
    assert restarted.status_code == 202, restarted.text
    assert restarted.json()["cluster"]["task"]["name"] == "RESTARTING_CLUSTER"
    # One member at a time: the first now, the others after it (cove.taskmanager.restart).
    assert [cloud.row(i).task for i in ids] == [Task.REBOOTING.value, "NONE", "NONE"]


def test_a_member_is_deleted_resized_or_replicated_only_through_its_cluster(
    cloud: Cloud,
) -> None:
    cluster = made(cloud)
    members_ready(cloud, cluster)
    member = cluster["instances"][0]["id"]
    deleted = cloud.request("member", "DELETE", f"instances/{member}")
    assert deleted.status_code == 400 and cluster["id"] in deleted.text
    resized = cloud.request(
        "member", "POST", f"instances/{member}/action", {"resize": {"volume": {"size": 2}}}
    )
    assert resized.status_code == 400 and "through the cluster" in resized.text
    replica = cloud.request(
        "member", "POST", "instances", {"instance": {"name": "ro", "replica_of": member}}
    )
    assert replica.status_code == 400 and "through the cluster" in replica.text


def test_deleting_a_cluster_deletes_every_member_then_the_cluster(cloud: Cloud) -> None:
    cluster = made(cloud)
    path = f"clusters/{cluster['id']}"
    building = cloud.request("member", "DELETE", path)
    assert building.status_code == 422 and "BUILDING" in building.text
    members_ready(cloud, cluster)
    assert cloud.request("member", "DELETE", path).status_code == 202
    shown = cloud.request("member", "GET", path).json()["cluster"]
    assert shown["task"]["name"] == "DELETING"
    assert {m["status"] for m in shown["instances"]} == {"SHUTDOWN"}
    cloud.serve_taskmanager()
    # Asked again (idempotent): the casts lost before the task manager served are sent again.
    assert cloud.request("member", "DELETE", path).status_code == 202
    deadline = time.monotonic() + DEADLINE
    while cloud.request("member", "GET", path).status_code != 404:
        assert time.monotonic() < deadline, "the cluster was not deleted"
        time.sleep(0.05)
    assert all(cloud.row(m["id"]).deleted for m in cluster["instances"])


def test_the_task_a_cluster_shows() -> None:
    assert cluster_task(ClusterTask.BUILDING, [Task.NONE, Task.BUILDING]) is ClusterTask.BUILDING
    assert cluster_task(ClusterTask.BUILDING, [Task.NONE, Task.BUILD_ERROR]) is ClusterTask.NONE
    assert cluster_task(ClusterTask.GROWING_CLUSTER, [Task.BUILDING]) is ClusterTask.GROWING_CLUSTER
    assert cluster_task(ClusterTask.SHRINKING_CLUSTER, [Task.NONE]) is ClusterTask.NONE
    assert cluster_task(ClusterTask.DELETING, []) is ClusterTask.DELETING
    assert cluster_task(ClusterTask.NONE, [Task.REBOOTING]) is ClusterTask.NONE


def test_a_postgresql_cluster_is_a_weighted_replication_group(cloud: Cloud) -> None:
    weights = [100, 10, 50]
    items = [{"flavorRef": "2", "volume": {"size": 1}, "weight": w} for w in weights]
    cluster = made(cloud, datastore={"type": "postgresql", "version": "15"}, instances=items)
    members = cluster["instances"]
    assert [m["type"] for m in members] == ["primary", "replica", "replica"]
    assert [m["weight"] for m in members] == weights
    primary = members[0]["id"]
    assert [cloud.row(m["id"]).replica_of_id for m in members] == [None, primary, primary]
    members_ready(cloud, cluster)
    path = f"clusters/{cluster['id']}"
    refused = cloud.request("member", "POST", path, {"shrink": [{"id": primary}]})
    assert refused.status_code == 400 and "primary" in refused.text
    two = cloud.request(
        "member",
        "POST",
        "clusters",
        {"cluster": {**seeds_body(cloud, "postgresql", "15"), "instances": items[:1]}},
    )
    assert two.status_code == 400 and "from 2" in two.text
    grown = cloud.request(
        "member", "POST", path, {"grow": [{"flavorRef": "2", "volume": {"size": 1}, "weight": 70}]}
    )
    assert grown.status_code == 202, grown.text
    newcomer = grown.json()["cluster"]["instances"][-1]
    assert newcomer["type"] == "replica" and newcomer["weight"] == 70
    assert cloud.row(newcomer["id"]).replica_of_id == primary
    detach = cloud.request(
        "member", "PUT", f"instances/{members[1]['id']}", {"instance": {"replica_of": None}}
    )
    assert detach.status_code == 400 and "through the cluster" in detach.text


def seeds_body(cloud: Cloud, datastore: str, version: str) -> dict[str, Any]:
    return {"name": "pg", "datastore": {"type": datastore, "version": version}}


def test_a_datastore_without_clusters_is_501(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RULES, "redis")
    resp = seeds_call(cloud, datastore={"type": "redis", "version": "7.0"})
    assert resp.status_code == 501, resp.text
    assert resp.json()["notImplemented"]["message"] == "Clusters not supported for redis-7.0."


def test_a_sharded_cluster_keeps_its_members_and_a_sealed_secret(cloud: Cloud) -> None:
    cluster = made(cloud, datastore={"type": "redis", "version": "7.0"})
    with cloud.db.session() as s:
        row = s.get(Cluster, cluster["id"])
        assert row is not None and row.secret is not None
        secret = cloud.context.sealer.open(row.id, row.secret, ClusterSecret)
        assert len(secret.password) >= 32 and secret.password not in row.secret
    assert {m["type"] for m in cluster["instances"]} == {"member"}
    members_ready(cloud, cluster)
    path = f"clusters/{cluster['id']}"
    # Built members alone do not make it ready: its last member splits the slots first.
    assert cloud.request("member", "GET", path).json()["cluster"]["task"]["name"] == "BUILDING"
    with cloud.db.session() as s:
        formed = s.get(Cluster, cluster["id"])
        assert formed is not None
        formed.task = "NONE"
    member = {"flavorRef": "2", "volume": {"size": 1}}
    assert cloud.request("member", "POST", path, {"grow": [member]}).status_code == 501
    shrink = {"shrink": [{"id": cluster["instances"][0]["id"]}]}
    assert cloud.request("member", "POST", path, shrink).status_code == 501


def test_shards_split_the_slots_and_give_each_master_a_replica_when_members_allow() -> None:
    three = shards(["a", "b", "c"])
    assert [(s.master, s.first_slot, s.last_slot, s.replicas) for s in three] == [
        ("a", 0, 5460, ()),
        ("b", 5461, 10921, ()),
        ("c", 10922, 16383, ()),
    ]
    seven = shards(list("abcdefg"))
    assert [s.master for s in seven] == ["a", "b", "c"]
    assert [s.replicas for s in seven] == [("d", "g"), ("e",), ("f",)]
    covered = [
        slot for s in shards(list("abcdef")) for slot in range(s.first_slot, s.last_slot + 1)
    ]
    assert covered == list(range(16384))


def test_a_clusters_tasks_are_told_once_when_their_last_member_is_done(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dbaas.cluster_<action>.end`` once per task asked of the cluster, by whichever task
    manager ends its last member's part (an error when a member failed)."""
    from cove.rpc import RequestContext

    told: list[dict[str, Any]] = []
    events = cloud.tm.events
    monkeypatch.setattr(events, "send", lambda event, project: told.append(event.message()))
    cluster = made(cloud)
    ids = [m["id"] for m in cluster["instances"]]
    for n, member in enumerate(ids):
        assert not told, n
        cloud.ready(member)
        events.member_task_ended(member, RequestContext())
    events.member_task_ended(ids[-1], RequestContext())  # told already: not again
    (created,) = told
    assert created["event_type"] == "dbaas.cluster_create.end"
    payload = created["payload"]
    assert payload["cluster_id"] == cluster["id"] and payload["cluster_name"] == "shop"
    assert sorted(payload["instance_ids"]) == sorted(ids) and payload["datastore"] == "mariadb"

    # A rolling restart, member after member, told by the one that ends the chain.
    told.clear()
    cloud.bus.answer("restart", None)
    cloud.serve_taskmanager()
    path = f"clusters/{cluster['id']}"
    assert cloud.request("member", "POST", path, {"restart": {}}).status_code == 202

    def of_cluster() -> list[str]:
        return [m["event_type"] for m in told if m["event_type"].startswith("dbaas.cluster_")]

    def restarts() -> int:
        return sum(m["event_type"] == "dbaas.instance_restart.end" for m in told)

    deadline = time.monotonic() + DEADLINE
    while not (of_cluster() and restarts() == 3):  # each member's own too
        assert time.monotonic() < deadline, "the restart was not told"
        time.sleep(0.05)
    for member in ids:  # what each member's task end does after its workflow: nothing more
        events.member_task_ended(member, RequestContext())
    assert of_cluster() == ["dbaas.cluster_restart.end"]

    # A delete, told once the cluster's row goes with its last member.
    told.clear()
    assert cloud.request("member", "DELETE", path).status_code == 202
    while cloud.request("member", "GET", path).status_code != 404:
        assert time.monotonic() < deadline + DEADLINE, "the cluster was not deleted"
        time.sleep(0.05)
    while not of_cluster():
        assert time.monotonic() < deadline + DEADLINE, "the delete was not told"
        time.sleep(0.05)
    assert of_cluster() == ["dbaas.cluster_delete.end"]
    (deleted,) = [m for m in told if m["event_type"] == "dbaas.cluster_delete.end"]
    assert deleted["payload"]["instance_ids"] == []


def test_a_failed_member_makes_its_clusters_task_an_error(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cove.rpc import RequestContext

    told: list[dict[str, Any]] = []
    events = cloud.tm.events
    monkeypatch.setattr(events, "send", lambda event, project: told.append(event.message()))
    cluster = made(cloud)
    first, *others = [m["id"] for m in cluster["instances"]]
    cloud.set_row(first, task=Task.BUILD_ERROR.value, fault_message="no space left")
    for member in others:
        cloud.ready(member)
    events.member_task_ended(others[-1], RequestContext())
    (failed,) = told
    assert failed["event_type"] == "dbaas.cluster_create.error"
    assert failed["payload"]["message"] == "no space left"


def test_a_sharded_cluster_is_told_by_its_formation_or_its_failed_member(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built members alone do not end a sharded cluster's build (its last member forms it and
    ends it); one member failing ends it, as an error, since no formation will come."""
    from cove.rpc import RequestContext

    told: list[dict[str, Any]] = []
    events = cloud.tm.events
    monkeypatch.setattr(events, "send", lambda event, project: told.append(event.message()))
    cluster = made(cloud, datastore={"type": "redis", "version": "7.0"})
    first, *others = [m["id"] for m in cluster["instances"]]
    for member in others:
        cloud.ready(member)
        events.member_task_ended(member, RequestContext())
    assert not told
    cloud.set_row(first, task=Task.BUILD_ERROR.value, fault_message="out of memory")
    events.member_task_ended(first, RequestContext())
    assert [m["event_type"] for m in told] == ["dbaas.cluster_create.error"]
