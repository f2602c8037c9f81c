"""``/healthz`` and ``/readyz``, and what tenants are told while the bus is down: that something
is unavailable, never where the bus is (the API's log has that, with the request id).

Real control database (SQLite); the bus is the fake of tests/fakes.py, or a real ``RpcClient``
to a socket that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accounts import add_account, password_auth
from cove.api.context import ApiContext, build_context
from cove.common.errors import BusUnavailable
from cove.common.ids import utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import GuestState, Instance
from cove.db.networks import sync_default_network
from cove.domain.status import ComputeState, Task
from cove.rpc import RpcClient
from fakes import FakeBus

#: The message a client gets while the bus is down.
BUS_DOWN = "A service Cove depends on cannot be reached; try again later."


def seed(db: Database, settings: Settings) -> tuple[str, str]:
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    return add_account(db, "p1", "u1", "member", project_id="p1")


@pytest.fixture
def make_api(
    tmp_path: Path, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[Callable[[Any], tuple[TestClient, ApiContext]]]:
    """``make_api(bus)``: a client of an API on ``bus`` (with a member's token of p1), and its
    context."""
    settings = load_settings(data_dir=tmp_path)
    project_id, password = seeded_db(settings, seed)
    db = Database(settings.database_url)

    def make(bus: Any) -> tuple[TestClient, ApiContext]:
        context = build_context(settings, db, bus)
        client = TestClient(api_app(context))
        assert context.identity is not None
        token, _ = context.identity.authenticate(password_auth("u1", password, project_id))
        client.headers["X-Auth-Token"] = token
        return client, context

    yield make
    db.dispose()


@pytest.fixture
def missing_socket(tmp_path: Path) -> Iterator[RpcClient]:
    """A real bus client whose Redis socket does not exist (nor its directory)."""
    bus = RpcClient(f"redis+socket://{tmp_path}/run/bus/redis.sock", connect_timeout=0.3)
    yield bus
    bus.close()


def test_healthz_answers_without_a_token(make_api: Any) -> None:
    client, _ = make_api(FakeBus())
    resp = client.get("/healthz", headers={"X-Auth-Token": ""})
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_and_the_bus_answer(make_api: Any) -> None:
    bus = FakeBus()
    client, _ = make_api(bus)
    resp = client.get("/readyz", headers={"X-Auth-Token": ""})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ok", "checks": {"database": "ok", "bus": "ok"}}
    assert bus.declared == ["taskmanager"]


def test_readyz_names_a_failing_bus_but_not_where_it_is(
    make_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bus = FakeBus()
    where = "redis+socket:///srv/cove-secret/bus.sock"
    bus.fail("declare_topic", BusUnavailable(f"message bus at {where} is unreachable: ENOENT"))
    client, _ = make_api(bus)
    with caplog.at_level(logging.WARNING, logger="cove.api.health"):
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "checks": {"database": "ok", "bus": "failed"}}
    assert "cove-secret" not in resp.text
    assert where in caplog.text  # operators learn where


def test_readyz_names_an_unreachable_control_database(make_api: Any, tmp_path: Path) -> None:
    client, context = make_api(FakeBus())
    context.db = Database(f"sqlite:///{tmp_path}/no/such/dir/cove.sqlite")
    try:
        resp = client.get("/readyz")
    finally:
        context.db.dispose()
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "checks": {"database": "failed", "bus": "ok"}}
    assert str(tmp_path) not in resp.text


def test_readyz_with_a_bus_client_whose_socket_is_missing(
    make_api: Any, missing_socket: RpcClient, tmp_path: Path
) -> None:
    client, _ = make_api(missing_socket)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"] == {"database": "ok", "bus": "failed"}
    assert str(tmp_path) not in resp.text and "sock" not in resp.text


def test_probes_in_quick_succession_cost_one_check(make_api: Any) -> None:
    bus = FakeBus()
    client, context = make_api(bus)
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    assert bus.declared == ["taskmanager"]
    context.readiness.reuse_seconds = 0
    client.get("/readyz")
    assert bus.declared == ["taskmanager", "taskmanager"]
    # A failure shows at the next check, and so does the recovery.
    bus.fail("declare_topic", BusUnavailable("down"))
    assert client.get("/readyz").status_code == 503
    bus.fail("declare_topic", None)
    assert client.get("/readyz").status_code == 200


# -- tenants while the bus is down -----------------------------------------------------------------


def test_tenants_are_not_told_where_the_bus_is(
    make_api: Any, missing_socket: RpcClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, context = make_api(missing_socket)
    spec = {"name": "orders", "flavorRef": "1", "volume": {"size": 1}}
    # A build is recorded before the task managers are told: with the bus away it is still
    # accepted (their monitor takes it up), and shows nothing of the bus.
    resp = client.post("/v1.0/p1/instances", json={"instance": spec})
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    shown = client.get(f"/v1.0/p1/instances/{iid}")
    assert shown.json()["instance"]["status"] == "BUILD" and str(tmp_path) not in shown.text
    # A read the guest must answer gets Trove's 503, in words that name nothing.
    now = utcnow()
    with context.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.task, inst.compute_state = Task.NONE.value, ComputeState.ACTIVE.value
        inst.address, inst.agent_started_at = "127.42.0.9", now
        s.add(GuestState(instance_id=iid, status="healthy", payload="{}", heartbeat_at=now))
    with caplog.at_level(logging.WARNING, logger="cove.api.errors"):
        resp = client.get(f"/v1.0/p1/instances/{iid}/databases")
    assert resp.status_code == 503, resp.text
    assert resp.json() == {"serviceUnavailable": {"code": 503, "message": BUS_DOWN}}
    for secret in (str(tmp_path), "redis", "sock"):
        assert secret not in resp.text
    # The log keeps what happened, under the request's id.
    request_id = resp.headers["x-openstack-request-id"]
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and f"{tmp_path}/run/bus/redis.sock" in logged[0]
