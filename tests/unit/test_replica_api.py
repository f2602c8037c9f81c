"""The replica requests' checks, views and bookkeeping, against a real SQLite control database
(no task manager serves here: a replica stays as the API recorded it)."""

from __future__ import annotations

from typing import Any

import pytest
from test_instance_admin import Cloud, cloud

from cove.domain.status import Task

__all__ = ["cloud"]


def ready_instance(c: Cloud) -> str:
    iid = c.create()
    c.ready(iid)
    return iid


def replicate(c: Cloud, source: str, who: str = "member", **fields: Any) -> Any:
    spec = {"name": "orders-ro", "replica_of": source, **fields}
    return c.request(who, "POST", "instances", {"instance": spec})


def test_replicas_take_everything_from_their_source_and_show_in_both_views(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    resp = replicate(cloud, source, replica_count=2)
    assert resp.status_code == 200, resp.text
    first = resp.json()["instance"]
    assert first["name"] == "orders-ro-1" and first["status"] == "BUILD"
    assert first["replica_of"]["id"] == source and first["replica_of"]["links"]
    shown = cloud.show("member", source)
    replicas = [r["id"] for r in shown["replicas"]]
    assert len(replicas) == 2 and replicas[0] == first["id"]
    second = cloud.show("member", replicas[1])
    assert second["name"] == "orders-ro-2"
    row, copy = cloud.row(source), cloud.row(replicas[1])
    assert (copy.flavor_id, copy.volume_size, copy.datastore_version_id, copy.network_id) == (
        row.flavor_id,
        row.volume_size,
        row.datastore_version_id,
        row.network_id,
    )
    assert "replicas" not in second and "replica_of" not in shown
    listed = cloud.request("member", "GET", "instances").json()["instances"]
    assert {i["id"]: "replica_of" in i for i in listed}[replicas[1]]


@pytest.mark.parametrize(
    "extra",
    [
        {"flavorRef": "1"},
        {"volume": {"size": 1}},
        {"datastore": {"type": "postgresql"}},
        {"databases": [{"name": "x"}]},
        {"users": [{"name": "u", "password": "Secret-pw-1"}]},
        {"restorePoint": {"backupRef": "x"}},
        {"replica_count": 0},
        {"replica_count": 4},
        {"replica_count": "2"},
        {"replica_count": 2, "name": "n" * 254},
    ],
)
def test_what_a_replica_request_may_not_say(cloud: Cloud, extra: dict[str, Any]) -> None:
    source = ready_instance(cloud)
    resp = replicate(cloud, source, **extra)
    assert resp.status_code == 400, resp.text
    assert "badRequest" in resp.json()


def test_one_replica_keeps_its_name_and_may_name_its_own_network(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    resp = replicate(cloud, source, nics=[{"net-id": "default"}])
    assert resp.status_code == 200, resp.text
    assert resp.json()["instance"]["name"] == "orders-ro"
    unknown = replicate(cloud, source, nics=[{"net-id": "nowhere"}])
    assert unknown.status_code == 400, unknown.text
    assert replicate(cloud, source, configuration="nope").status_code == 404


def test_a_failed_detach_keeps_the_name(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    body = {"instance": {"name": "renamed", "replica_of": None}}
    assert cloud.request("member", "PUT", f"instances/{source}", body).status_code == 400
    assert cloud.show("member", source)["name"] == "orders"


def test_a_replica_needs_a_serving_primary_of_the_project(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    assert replicate(cloud, source, who="stranger").status_code == 404
    assert replicate(cloud, "not-an-instance").status_code == 404
    replica = replicate(cloud, source).json()["instance"]["id"]
    cloud.ready(replica)
    chained = replicate(cloud, replica)
    assert chained.status_code == 400 and "itself a replica" in chained.text
    building = cloud.create()
    assert replicate(cloud, building).status_code == 422


def test_replicas_count_against_the_quota(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    quota = {"quotas": {"instances": 2}}
    admin = cloud.request("cloud", "PUT", f"mgmt/quotas/{cloud.projects['member']}", quota)
    assert admin.status_code == 200, admin.text
    over = replicate(cloud, source, replica_count=2)
    assert over.status_code == 413, over.text
    assert cloud.show("member", source).get("replicas") is None  # nothing recorded
    assert replicate(cloud, source).status_code == 200


def test_a_replica_refuses_writes_and_its_source_refuses_deletion(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    replica = replicate(cloud, source).json()["instance"]["id"]
    cloud.ready(replica)
    path = f"instances/{replica}"
    for method, sub, body in (
        ("POST", "databases", {"databases": [{"name": "x"}]}),
        ("POST", "users", {"users": [{"name": "u", "password": "Secret-pw-1"}]}),
        ("DELETE", "databases/x", None),
        ("POST", "root", None),
    ):
        resp = cloud.request("member", method, f"{path}/{sub}", body)
        assert resp.status_code == 422, (sub, resp.text)
        assert "read-only replica" in resp.text
    refused = cloud.request("member", "DELETE", f"instances/{source}")
    assert refused.status_code == 403 and replica in refused.text
    assert cloud.request("member", "DELETE", path).status_code == 202


@pytest.mark.parametrize("body", [{"replica_of": None}, {"replica_of": ""}, {"slave_of": "x"}])
def test_detaching_a_replica_starts_its_task(cloud: Cloud, body: dict[str, Any]) -> None:
    source = ready_instance(cloud)
    replica = replicate(cloud, source).json()["instance"]["id"]
    cloud.ready(replica)
    resp = cloud.request("member", "PUT", f"instances/{replica}", {"instance": body})
    assert resp.status_code == 202, resp.text
    assert cloud.row(replica).task == Task.DETACHING.value
    assert cloud.show("member", replica)["status"] == "DETACH"
    again = cloud.request("member", "PUT", f"instances/{replica}", {"instance": body})
    assert again.status_code == 422


def test_only_a_replica_detaches(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    cleared = cloud.request(
        "member", "PUT", f"instances/{source}", {"instance": {"replica_of": None}}
    )
    assert cleared.status_code == 400 and "not a replica" in cleared.text
    attach = {"instance": {"replica_of": source}}
    assert cloud.request("member", "PUT", f"instances/{source}", attach).status_code == 400


def test_a_replica_is_not_backed_up(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    replica = replicate(cloud, source).json()["instance"]["id"]
    cloud.ready(replica)
    body = {"backup": {"name": "b", "instance": replica}}
    refused = cloud.request("member", "POST", "backups", body)
    assert refused.status_code == 422 and "back up its source" in refused.text
    schedule = {"backup_schedule": {"instance_id": replica, "cron": "0 3 * * *"}}
    assert cloud.request("member", "POST", "backup_schedules", schedule).status_code == 422


def test_growing_a_source_grows_its_smaller_replicas_within_the_quota(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    replicas = [r["id"] for r in [replicate(cloud, source).json()["instance"] for _ in range(2)]]
    for r in replicas:
        cloud.ready(r)
    cloud.set_row(replicas[1], volume_size=3)  # already larger than asked: left as it is
    grow = {"resize": {"volume": {"size": 2}}}
    quota = {"quotas": {"volumes": 5}}  # 1 + 1 + 3 now; growing both smaller ones needs 7
    assert (
        cloud.request("cloud", "PUT", f"mgmt/quotas/{cloud.projects['member']}", quota).status_code
        == 200
    )
    over = cloud.request("member", "POST", f"instances/{source}/action", grow)
    assert over.status_code == 413, over.text
    assert (cloud.row(source).volume_size, cloud.row(replicas[0]).volume_size) == (1, 1)
    quota = {"quotas": {"volumes": 7}}
    assert (
        cloud.request("cloud", "PUT", f"mgmt/quotas/{cloud.projects['member']}", quota).status_code
        == 200
    )
    ok = cloud.request("member", "POST", f"instances/{source}/action", grow)
    assert ok.status_code == 202, ok.text
    rows = [cloud.row(i) for i in (source, *replicas)]
    assert [(r.volume_size, r.task) for r in rows] == [
        (2, Task.RESIZING.value),
        (2, Task.RESIZING.value),
        (3, Task.NONE.value),
    ]


def test_a_busy_replica_refuses_its_source_s_growth(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    replica = replicate(cloud, source).json()["instance"]["id"]  # still building
    grow = {"resize": {"volume": {"size": 2}}}
    refused = cloud.request("member", "POST", f"instances/{source}/action", grow)
    assert refused.status_code == 422, refused.text
    assert (cloud.row(source).volume_size, cloud.row(source).task) == (1, Task.NONE.value)
    assert cloud.row(replica).volume_size == 1


def test_a_replica_lets_in_whom_its_source_lets_in_unless_told_otherwise(cloud: Cloud) -> None:
    source = ready_instance(cloud)
    body = {"instance": {"access": {"is_public": True, "allowed_cidrs": ["192.0.2.0/24"]}}}
    assert cloud.request("member", "PUT", f"instances/{source}", body).status_code == 202
    # Its networks, not published.
    inherited = replicate(cloud, source).json()["instance"]["access"]
    assert inherited == {"is_public": False, "allowed_cidrs": ["192.0.2.0/24"]}
    # A key the request leaves out is the source's, not the default's.
    resp = replicate(cloud, source, access={"is_public": True})
    assert resp.json()["instance"]["access"] == {
        "is_public": True,
        "allowed_cidrs": ["192.0.2.0/24"],
    }
    bad = replicate(cloud, source, access={"allowed_cidrs": ["192.0.2.0/99"]})
    assert bad.status_code == 400, bad.text
    assert "192.0.2.0/99" in bad.json()["badRequest"]["message"]
