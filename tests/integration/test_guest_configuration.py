"""Configuration groups on the guest side, against real servers: dynamic settings in effect at
once, static ones (and the flavor's static memory) waiting for a restart, memory that follows a
new flavor, and a value the server refuses leaving it running on its previous files.

PostgreSQL refuses to run as root, so its manager runs inside a real guest agent started by
the local driver as the service user and is driven over the bus; Redis runs in-process."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from guesthost import Host
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common.errors import GuestError
from cove.compute.discovery import find_postgresql
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.datastores import load_manager
from cove.guestagent.datastores.redis.manager import RedisManager
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient
from servers import free_address

pytestmark = pytest.mark.integration

REDIS_BIN = Path("/usr/bin")
MB = 1024 * 1024


# -- PostgreSQL ---------------------------------------------------------------------------------


class PgGuest:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.spec = host.spec()
        self.id = self.spec.instance_id
        self.conf = host.driver.instance_dir(self.id) / "conf" / "postgresql.conf"

    def call(self, method: str, **args: Any) -> Any:
        return self.host.call(self.id, method, **args)

    def apply(self, ram_mb: int = 512, revision: int = 0, **overrides: Any) -> bool:
        answer = self.call(
            "apply_configuration",
            ram_mb=ram_mb,
            vcpus=1,
            volume_gb=1,
            overrides=overrides,
            revision=revision,
        )
        return bool(answer["restart_required"])

    def show(self, name: str) -> str:
        """What a new session of the tenant's user sees."""
        with psycopg.connect(
            host=self.spec.address, user="u1", password="pw-u1-Xy7", dbname="a", connect_timeout=5
        ) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
        assert row is not None
        return str(row[0])


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_configuration_on_a_real_server(host: Host) -> None:
    guest = PgGuest(host)
    host.create(guest.spec)
    GuestClient(host.bus, guest.id).prepare(
        RequestContext(), [DatabaseSpec("a")], [UserSpec("u1", "pw-u1-Xy7", "%", ("a",))]
    )
    report = host.wait_event(60, method="report", instance_id=guest.id, operation="prepare")
    assert report["outcome"] == "success", report
    assert guest.show("work_mem") == "2MB"  # from the 512 MB flavor

    # Dynamic: in effect at once, by PostgreSQL's own reckoning; text quoted safely.
    odd_text = "it's a \\ test"
    assert guest.apply(work_mem=8192, application_name=odd_text) is False
    assert guest.show("work_mem") == "8MB"
    assert guest.show("application_name") == odd_text
    assert guest.call("get_status") == "healthy"
    effective = guest.call("get_configuration")
    assert effective["work_mem"] == "8192"
    assert effective["application_name"] == odd_text
    assert effective["shared_buffers"] == "128MB"

    # Static: written, waiting for a restart, not yet in effect.
    assert guest.apply(work_mem=8192, max_prepared_transactions=7) is True
    assert guest.show("max_prepared_transactions") == "0"
    assert guest.show("work_mem") == "8MB"
    assert guest.call("get_status") == "restart_required"

    # A value the server refuses: named in the error, previous files kept, server running.
    before = guest.conf.read_text()
    with pytest.raises(GuestError, match="DateStyle"):
        guest.apply(work_mem=4096, max_prepared_transactions=7, DateStyle="bogus")
    assert guest.conf.read_text() == before
    assert guest.show("DateStyle") == "ISO, MDY"
    assert guest.show("work_mem") == "8MB"
    assert "DateStyle" not in guest.call("get_configuration")
    assert guest.call("get_status") == "restart_required"

    guest.call("restart")
    assert guest.call("get_status") == "healthy"
    assert guest.show("max_prepared_transactions") == "7"
    assert guest.show("work_mem") == "8MB"

    # A bigger flavor: shared_buffers takes a restart, the rest follows.
    assert guest.apply(ram_mb=1024, max_prepared_transactions=7) is True
    assert guest.show("shared_buffers") == "128MB"
    assert guest.show("work_mem") == "4MB"  # the override is gone: the flavor's again
    assert guest.call("get_status") == "restart_required"
    guest.call("restart")
    assert guest.show("shared_buffers") == "256MB"
    assert guest.show("max_prepared_transactions") == "7"
    assert guest.call("get_status") == "healthy"

    # Every override taken away (a group detached): the dynamic default is back at once, the
    # static one waits for a restart.
    assert guest.apply(ram_mb=1024, work_mem=8192, max_prepared_transactions=7) is False
    assert guest.show("work_mem") == "8MB"
    assert guest.apply(ram_mb=1024) is True
    assert guest.show("work_mem") == "4MB"
    assert guest.show("max_prepared_transactions") == "7"
    assert guest.call("get_status") == "restart_required"
    guest.call("restart")
    assert guest.show("max_prepared_transactions") == "0"

    # Pushes that overtook each other: settings read before a change, arriving after the
    # change's own push, are not taken.
    assert guest.apply(ram_mb=1024, revision=5, work_mem=16384) is False
    assert guest.show("work_mem") == "16MB"
    assert guest.apply(ram_mb=1024, revision=4, work_mem=8192) is False
    assert guest.show("work_mem") == "16MB"
    assert guest.call("get_configuration")["work_mem"] == "16384"
    assert guest.apply(ram_mb=1024, revision=5) is False  # the same revision again is taken
    assert guest.show("work_mem") == "4MB"


# -- Redis --------------------------------------------------------------------------------------


@pytest.fixture
def redis_manager() -> Iterator[RedisManager]:
    base = Path(tempfile.mkdtemp(prefix="cove-redis-conf-"))
    for sub in ("data", "conf", "log", "run"):
        (base / sub).mkdir()
    config = GuestSettings(
        instance_id="r1",
        datastore="redis",
        datastore_version="7.0",
        bin_dir=str(REDIS_BIN),
        address=free_address(6379),
        port=6379,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
        instance_dir=str(base),
    )
    manager = load_manager(config)
    assert isinstance(manager, RedisManager)
    try:
        yield manager
    finally:
        manager.stop()
        shutil.rmtree(base, ignore_errors=True)


def apply(manager: RedisManager, ram_mb: int = 256, **overrides: Any) -> bool:
    return manager.apply_configuration(
        dataclasses.replace(manager.config, ram_mb=ram_mb, overrides=overrides)
    )


def live(manager: RedisManager, name: str) -> str:
    with manager.server.connect() as client:
        value = client.config_get(name)[name]
    return str(value)


@pytest.mark.skipif(not (REDIS_BIN / "redis-server").exists(), reason="needs /usr/bin/redis-server")
def test_redis_configuration_on_a_real_server(redis_manager: RedisManager) -> None:
    manager = redis_manager
    manager.prepare([], [])
    assert live(manager, "maxmemory") == str(192 * MB)

    # Dynamic: CONFIG SET at once; text quoted safely in redis.conf.
    odd_text = 'a "b" \\ c é'
    assert (
        apply(manager, **{"maxmemory-policy": "allkeys-lru", "ignore-warnings": odd_text}) is False
    )
    assert live(manager, "maxmemory-policy") == "allkeys-lru"
    assert not manager.restart_pending
    assert manager.effective_configuration()["maxmemory-policy"] == "allkeys-lru"

    # Immutable at runtime: written, waiting for a restart.
    group = {"maxmemory-policy": "allkeys-lru", "ignore-warnings": odd_text, "databases": 32}
    assert apply(manager, **group) is True
    assert live(manager, "databases") == "16"
    assert manager.restart_pending

    # A value Redis refuses: named, what was set is set back, the file is the previous one.
    before = manager.server.conf_file.read_text()
    with pytest.raises(GuestError, match="client-output-buffer-limit"):
        apply(manager, **group, hz=42, **{"client-output-buffer-limit": "bogus"})
    assert live(manager, "hz") == "10"
    assert manager.server.conf_file.read_text() == before
    assert manager.status().value == "healthy"
    assert "hz" not in manager.effective_configuration()
    # A denied name (in a group made before it was denied) is left out: never in the file.
    assert apply(manager, **group, dir="/tmp") is True
    assert manager.server.conf_file.read_text() == before
    assert live(manager, "dir") != "/tmp"

    manager.restart()
    assert not manager.restart_pending
    assert live(manager, "databases") == "32"
    assert live(manager, "ignore-warnings") == odd_text
    assert live(manager, "maxmemory-policy") == "allkeys-lru"

    # A bigger flavor: maxmemory follows live; a removed override waits for a restart.
    assert apply(manager, ram_mb=512, **group) is False
    assert live(manager, "maxmemory") == str(384 * MB)
    assert apply(manager, ram_mb=512, **{"maxmemory-policy": "allkeys-lru"}) is True
    assert live(manager, "databases") == "32"
    manager.restart()
    assert live(manager, "databases") == "16"
    assert live(manager, "maxmemory") == str(384 * MB)
    anonymous = redis.Redis(
        unix_socket_path=str(manager.server.socket), retry=Retry(NoBackoff(), 0)
    )
    with anonymous, pytest.raises(redis.RedisError):
        anonymous.config_get("*")  # the default user (root) stays off

    # The memory a flavor must have: the floor, until the data needs more (4/3 of it, since
    # Redis may use 3/4 of the flavor's memory).
    assert manager.min_ram_mb() == 128
    with manager.server.connect() as client:
        client.set("big", "x" * (150 * MB))
    assert manager.min_ram_mb() >= 200
