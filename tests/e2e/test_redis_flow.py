"""A Redis instance through the API, checked with the real Redis client: ACL users, root (the
default user), data kept across a restart (AOF), nothing left after delete."""

from __future__ import annotations

import socket

import pytest
import redis
from harness import ControlPlane, processes_mentioning, wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry


def client(inst: dict, user: str | None, password: str) -> redis.Redis:
    # No retries: a refused login must fail at once, not after redis-py's backoff.
    return redis.Redis(
        host=inst["ip"][0],
        port=inst.get("port", 6379),
        username=user,
        password=password,
        socket_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def test_redis_instance_lifecycle(cove_up: ControlPlane) -> None:
    plane = cove_up
    api = plane.http
    inst = plane.create(
        name="cache",
        datastore={"type": "redis"},
        users=[{"name": "app", "password": "app-Pass:1"}],
    )
    iid = inst["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    assert inst["datastore"]["type"] == "redis"
    address = inst["ip"][0]

    app = client(inst, "app", "app-Pass:1")
    assert app.set("k", "v") and app.get("k") == "v"
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.config_get("dir")
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(inst, "app", "wrong").ping()

    # Databases are no Redis concept.
    assert api.get(f"/instances/{iid}/databases").status_code == 501

    # Users: create, list, change a password, delete.
    resp = api.post(f"/instances/{iid}/users", json={"users": [{"name": "bob", "password": "b-1"}]})
    assert resp.status_code == 202, resp.text
    names = [u["name"] for u in api.get(f"/instances/{iid}/users").json()["users"]]
    assert sorted(names) == ["app", "bob"]
    assert client(inst, "bob", "b-1").ping()
    resp = api.put(f"/instances/{iid}/users", json={"users": [{"name": "bob", "password": "b-2"}]})
    assert resp.status_code == 202, resp.text
    assert client(inst, "bob", "b-2").ping()
    assert api.delete(f"/instances/{iid}/users/bob").status_code == 202
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(inst, "bob", "b-2").ping()

    # Root is the default user.
    assert api.get(f"/instances/{iid}/root").json()["rootEnabled"] is False
    root = api.post(f"/instances/{iid}/root").json()["user"]
    assert api.get(f"/instances/{iid}/root").json()["rootEnabled"] is True
    assert client(inst, None, root["password"]).get("k") == "v"

    # A restart keeps data and users.
    assert api.post(f"/instances/{iid}/action", json={"restart": {}}).status_code == 202
    plane.wait_status(iid, "ACTIVE")
    assert client(inst, "app", "app-Pass:1").get("k") == "v"

    # No password on a command line.
    for line in processes_mentioning(str(plane.data_dir)):
        assert "app-Pass:1" not in line and root["password"] not in line

    # Delete leaves nothing behind.
    assert api.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
    assert not (plane.data_dir / "instances" / iid).exists()
    assert not listening(address, 6379)
