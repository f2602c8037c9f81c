"""The catalogues of configurable parameters, read from the real PostgreSQL and Redis binaries
of this machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cove.compute.discovery import find_postgresql
from cove.compute.parameters import postgresql, redis
from cove.domain.parameters import Parameter, ParamType, denied

pytestmark = pytest.mark.integration

REDIS_BIN = Path("/usr/bin")


def catalogue(params: list[Parameter]) -> dict[str, Parameter]:
    by_name = {p.name: p for p in params}
    assert len(by_name) == len(params), "a parameter is listed twice"
    return by_name


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_catalogue_comes_from_the_server() -> None:
    started = time.monotonic()
    params = catalogue(postgresql.read_parameters(find_postgresql()[-1].bin_dir))
    took = time.monotonic() - started
    assert took < 10, took

    work_mem = params["work_mem"]
    assert work_mem.type is ParamType.INTEGER
    assert not work_mem.restart_required
    assert work_mem.min == 64 and work_mem.max == 2147483647  # kB
    assert params["max_connections"].restart_required
    assert params["max_connections"].min == 4  # fewer and the server refuses to start
    assert params["max_prepared_transactions"].restart_required
    assert params["random_page_cost"].type is ParamType.FLOAT
    assert params["enable_seqscan"].type is ParamType.BOOLEAN
    # Enumerated settings carry the values the server accepts (from pg_settings).
    level = params["log_min_messages"]
    assert level.type is ParamType.STRING and level.allowed is not None
    assert "warning" in level.allowed and "debug5" in level.allowed
    assert params["DateStyle"].allowed is None  # free text
    # Never: paths, addresses, internal settings, anything denied.
    never = ("data_directory", "port", "listen_addresses", "hba_file", "wal_level")
    for name in (*never, "shared_buffers", "extension_destdir"):
        assert name not in params
    assert "server_version" not in params and "block_size" not in params
    assert not [name for name in params if denied("postgresql", name)]


@pytest.mark.skipif(not (REDIS_BIN / "redis-server").exists(), reason="needs /usr/bin/redis-server")
def test_redis_catalogue_comes_from_a_throw_away_server(tmp_path: Path) -> None:
    started = time.monotonic()
    params = catalogue(redis.read_parameters(str(REDIS_BIN)))
    took = time.monotonic() - started
    assert took < 5, took

    policy = params["maxmemory-policy"]
    assert policy.type is ParamType.STRING and not policy.restart_required
    assert policy.allowed is not None
    assert {"noeviction", "allkeys-lru", "volatile-ttl"} <= set(policy.allowed)
    samples = params["maxmemory-samples"]
    assert samples.type is ParamType.INTEGER and not samples.restart_required
    hz = params["hz"]
    assert hz.type is ParamType.INTEGER and hz.min == 0 and hz.max is not None
    assert params["slowlog-log-slower-than"].min is None  # -1 turns the slow log off
    assert params["lazyfree-lazy-eviction"].type is ParamType.BOOLEAN
    # Immutable at runtime: only a restart takes them.
    assert params["databases"].restart_required
    # Bounds of settings only a start reads come from a start: 0 databases would not start.
    assert params["databases"].min == 1 and params["databases"].max == 2147483647
    assert params["tcp-backlog"].restart_required
    never = ("appendonly", "dir", "port", "requirepass", "bind", "save", "maxclients")
    for name in (*never, "maxmemory", "maxmemory-clients"):
        assert name not in params
    assert not [name for name in params if denied("redis", name)]
