"""Who may connect to an instance (Trove's ``access``): what the API takes and shows, and what
the task manager hands the compute driver to publish and filter. The host's filter itself is
tested for real in tests/integration/test_firewall.py and the e2e tests."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from test_configurations import api as api
from test_configurations import instance, make_active, task_context

from cove.common.ids import utcnow
from cove.compute.firewall import Guarded, render
from cove.db.models import Instance
from cove.db.replication import ensure_group
from cove.domain.access import Access, parse_access
from cove.taskmanager.endpoints import HOST, guard_instances, serve_endpoints

EVERYONE = {"is_public": False, "allowed_cidrs": ["0.0.0.0/0"]}


# -- parsing -------------------------------------------------------------------------------------


def test_a_request_is_merged_into_what_the_instance_has() -> None:
    assert parse_access({}) == Access()
    assert parse_access({"is_public": True}) == Access(is_public=True)
    given = parse_access({"allowed_cidrs": ["10.1.2.3/8", " 192.0.2.0/24"]})
    # Host bits are dropped, as the kernel would match them.
    assert given.allowed_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert parse_access({"is_public": True}, given) == Access(True, given.allowed_cidrs)
    assert parse_access({"allowed_cidrs": ["0.0.0.0/0"]}, given).everyone
    assert not given.everyone
    assert Access().view() == EVERYONE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be an object"),
        ({"public": True}, "not 'public'"),
        ({"is_public": "yes"}, "true or false"),
        ({"allowed_cidrs": "10.0.0.0/8"}, "a list of IPv4 networks"),
        ({"allowed_cidrs": []}, "is empty"),
        ({"allowed_cidrs": [7]}, "a list of IPv4 networks"),
        ({"allowed_cidrs": ["10.0.0.0/33"]}, "not an IPv4 network in CIDR notation"),
        ({"allowed_cidrs": ["2001:db8::/32"]}, "IPv4 only"),
        ({"allowed_cidrs": ["10.0.0.0/8", "10.2.0.0/8"]}, "10.0.0.0/8 twice"),
        ({"allowed_cidrs": ["10.0.0.0/32"] * 101}, "at most 100"),
    ],
)
def test_bad_access_is_refused_with_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_access(body)


# -- the API -------------------------------------------------------------------------------------


def shown(api: Any, iid: str) -> dict[str, Any]:
    return dict(api.get(f"/v1.0/p1/instances/{iid}").json()["instance"])


def test_access_given_on_create_is_shown_and_changed_by_put(api: Any) -> None:
    iid = instance(api, access={"is_public": False, "allowed_cidrs": ["192.0.2.0/24"]})
    assert shown(api, iid)["access"] == {"is_public": False, "allowed_cidrs": ["192.0.2.0/24"]}
    make_active(api, iid)

    # A key left out keeps its value (openstack database instance update --is-public).
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"access": {"is_public": True}}})
    assert resp.status_code == 202, resp.text
    assert shown(api, iid)["access"] == {"is_public": True, "allowed_cidrs": ["192.0.2.0/24"]}

    body = {"instance": {"name": "renamed", "access": {"allowed_cidrs": ["0.0.0.0/0"]}}}
    assert api.put(f"/v1.0/p1/instances/{iid}", json=body).status_code == 202
    view = shown(api, iid)
    assert view["name"] == "renamed"
    assert view["access"] == {"is_public": True, "allowed_cidrs": ["0.0.0.0/0"]}


@pytest.mark.parametrize(
    ("method", "body", "code", "message"),
    [
        ("put", {"access": {"allowed_cidrs": ["nonsense"]}}, 400, "'nonsense' in"),
        ("put", {"access": None}, 400, "must be an object"),
        ("put", {"access": {"is_public": True}, "configuration": None}, 400, "Only one"),
        ("patch", {"access": {"is_public": True}}, 400, "not PATCH"),
    ],
)
def test_bad_access_updates_get_a_trove_error(
    api: Any, method: str, body: dict[str, Any], code: int, message: str
) -> None:
    iid = instance(api)
    make_active(api, iid)
    resp = getattr(api, method)(f"/v1.0/p1/instances/{iid}", json={"instance": body})
    assert resp.status_code == code, resp.text
    assert message in resp.json()["badRequest"]["message"]
    assert shown(api, iid)["access"] == EVERYONE


def test_a_create_with_bad_access_records_nothing(api: Any) -> None:
    body = {
        "name": "db",
        "flavorRef": "1",
        "volume": {"size": 1},
        "access": {"is_public": True, "allowed_cidrs": ["10.0.0.0/8", "10.0.0.0/8"]},
    }
    resp = api.post("/v1.0/p1/instances", json={"instance": body})
    assert resp.status_code == 400, resp.text
    assert "twice" in resp.json()["badRequest"]["message"]
    assert api.get("/v1.0/p1/instances").json()["instances"] == []


def test_an_instance_being_built_keeps_its_access(api: Any) -> None:
    iid = instance(api)
    resp = api.put(f"/v1.0/p1/instances/{iid}", json={"instance": {"access": {"is_public": True}}})
    assert resp.status_code == 422, resp.text
    assert shown(api, iid)["access"] == EVERYONE


# -- what the task manager hands the driver ------------------------------------------------------


def test_a_public_instance_gets_a_port_and_is_published_until_it_is_not(api: Any) -> None:
    iid = instance(api, access={"is_public": True})
    make_active(api, iid)
    tc = task_context(api, iid)
    serve_endpoints(tc)
    [pub] = tc.driver.published  # type: ignore[attr-defined]
    assert (pub.address, pub.port) == ("127.0.0.1", api.settings.public_port_min)
    assert (pub.instance.address, pub.instance.port) == ("127.42.0.9", 5432)
    public = {"address": "127.0.0.1", "type": "public", "port": pub.port}
    assert shown(api, iid)["addresses"][1] == public
    assert shown(api, iid)["ip"] == ["127.42.0.9", "127.0.0.1"]

    other = instance(api, access={"is_public": True})
    make_active(api, other)
    serve_endpoints(tc)
    ports = sorted(p.port for p in tc.driver.published)  # type: ignore[attr-defined]
    assert ports == [pub.port, pub.port + 1]

    body = {"instance": {"access": {"is_public": False}}}
    assert api.put(f"/v1.0/p1/instances/{iid}", json=body).status_code == 202
    serve_endpoints(tc)
    assert [p.instance.instance_id for p in tc.driver.published] == [other]  # type: ignore[attr-defined]
    assert [a["type"] for a in shown(api, iid)["addresses"]] == ["private"]


def test_only_instances_that_let_some_networks_in_are_guarded(api: Any) -> None:
    open_to_all = instance(api)
    guarded = instance(api, access={"is_public": True, "allowed_cidrs": ["192.0.2.0/24"]})
    for iid in (open_to_all, guarded):
        make_active(api, iid)
    tc = task_context(api, open_to_all, guarded)
    serve_endpoints(tc)  # gives the public one its port
    assert guard_instances(tc) is True
    [rule] = tc.driver.guarded  # type: ignore[attr-defined]
    port = api.settings.public_port_min
    assert rule == Guarded(
        guarded, (("127.42.0.9", 5432), ("127.0.0.1", port)), ("192.0.2.0/24",), (HOST,)
    )

    # Its replication group's endpoints are guarded as it is, and its replica is trusted.
    with api.db.session() as s:
        group = ensure_group(s, guarded, utcnow())
        group.rw_address, group.ro_address = "127.42.0.20", "127.42.0.21"
    replica = instance(api)
    make_active(api, replica)
    with api.db.session() as s:
        s.execute(
            update(Instance)
            .where(Instance.id == replica)
            .values(replica_of_id=guarded, address="127.42.0.10")
        )
    guard_instances(tc)
    [rule] = tc.driver.guarded  # type: ignore[attr-defined]
    assert ("127.42.0.20", 5432) in rule.targets and ("127.42.0.21", 5432) in rule.targets
    assert rule.trusted == (HOST, "127.42.0.10/32")

    # Opened to all again: nothing is filtered.
    body = {"instance": {"access": {"allowed_cidrs": ["0.0.0.0/0"]}}}
    assert api.put(f"/v1.0/p1/instances/{guarded}", json=body).status_code == 202
    guard_instances(tc)
    assert tc.driver.guarded == []  # type: ignore[attr-defined]


def test_the_filter_sends_each_target_to_its_instances_rules() -> None:
    script = render(
        "cove_t",
        [
            Guarded("b-2", (("127.42.0.6", 3306),), ("10.0.0.0/8", "192.0.2.0/24"), (HOST,)),
            Guarded("a-1", (("127.42.0.5", 5432), ("127.0.0.1", 20000)), ("10.0.0.0/8",)),
        ],
    )
    lines = [line.strip() for line in script.splitlines()]
    # Replaced as a whole: made if missing, then deleted and written again, in one go.
    assert lines[:3] == ["table ip cove_t {}", "delete table ip cove_t", "table ip cove_t {"]
    assert (
        "ip daddr . tcp dport vmap { 127.42.0.5 . 5432 : jump i_a1, "
        "127.0.0.1 . 20000 : jump i_a1, 127.42.0.6 . 3306 : jump i_b2 }"
    ) in lines
    b = lines[lines.index("chain i_b2 {") :]
    assert b[1:4] == [
        "ip saddr { 127.0.0.1/32 } accept",
        "ip saddr { 10.0.0.0/8, 192.0.2.0/24 } accept",
        "reject with tcp reset",
    ]
    # Nothing guarded: the table goes.
    assert render("cove_t", []).splitlines() == ["table ip cove_t {}", "delete table ip cove_t"]
