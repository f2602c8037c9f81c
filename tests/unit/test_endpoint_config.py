"""HAProxy's configuration for groups and clusters (cove.compute.endpoints.render), and what
makes a change a reload."""

from __future__ import annotations

from pathlib import Path

from cove.compute.endpoints import (
    Backend,
    ClusterEndpoint,
    GroupEndpoint,
    PublishedEndpoint,
    render,
    skeleton,
)

GROUP = GroupEndpoint(
    group_id="g-1",
    port=5432,
    rw_address="127.42.0.10",
    ro_address="127.42.0.11",
    primary=Backend("p-1", "127.42.0.1", 5432),
    replicas=(Backend("r-1", "127.42.0.2", 5432),),
)
CLUSTER = ClusterEndpoint(
    cluster_id="c-1",
    port=3306,
    address="127.42.0.20",
    members=(
        Backend("m-2", "127.42.0.4", 3306),
        Backend("m-1", "127.42.0.3", 3306),
    ),
    out=frozenset({"m-2"}),
)


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(name)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), None)
    return [line.strip() for line in lines[start + 1 : end]]


def test_a_cluster_balances_over_its_members_and_leaves_out_the_busy_ones() -> None:
    text = render([GROUP], Path("/run/h.sock"), None, 1000, [CLUSTER])
    assert section(text, "frontend lb_c1") == ["bind 127.42.0.20:3306", "default_backend lb_c1"]
    assert section(text, "backend lb_c1") == [
        "balance leastconn",
        "default-server inter 500ms fall 1 rise 2 on-marked-down shutdown-sessions",
        "timeout check 2s",
        "option redispatch",
        "retries 2",
        "server m_m1 127.42.0.3:3306 check",
        "server m_m2 127.42.0.4:3306 check disabled",
    ]
    # The group's sections are still there.
    assert "frontend rw_g1" in text.splitlines()


def test_a_member_leaving_the_rotation_is_a_reload() -> None:
    served = skeleton([GROUP], [CLUSTER])
    assert skeleton([GROUP], [CLUSTER]) == served
    back = ClusterEndpoint("c-1", 3306, "127.42.0.20", CLUSTER.members)
    assert skeleton([GROUP], [back]) != served
    assert skeleton([GROUP]) != served


def test_members_with_a_check_port_are_asked_over_http() -> None:
    checked = ClusterEndpoint("c-1", 3306, "127.42.0.20", CLUSTER.members, check_port=9200)
    text = render([], Path("/run/h.sock"), None, 1000, [checked])
    assert section(text, "backend lb_c1") == [
        "balance leastconn",
        "default-server inter 500ms fall 1 rise 2 on-marked-down shutdown-sessions",
        "timeout check 2s",
        "option redispatch",
        "retries 2",
        "option httpchk GET /",
        "http-check expect status 200",
        "server m_m1 127.42.0.3:3306 check port 9200",
        "server m_m2 127.42.0.4:3306 check port 9200",
    ]


def test_a_public_instance_has_a_frontend_on_the_public_address_and_is_a_reload() -> None:
    pub = PublishedEndpoint("203.0.113.5", 20001, Backend("i-1", "127.42.0.1", 5432))
    text = render([], Path("/run/h.sock"), None, 1000, [], [pub])
    assert section(text, "frontend pub_i1") == ["bind 203.0.113.5:20001", "default_backend pub_i1"]
    assert section(text, "backend pub_i1") == ["server instance 127.42.0.1:5432"]
    assert skeleton([GROUP], [], [pub]) != skeleton([GROUP], [], [])
