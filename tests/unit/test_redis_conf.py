import pytest

from cove.common.errors import Unprocessable
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.redis import conf


def config(ram=256, **overrides):
    return GuestSettings(
        instance_id="r1",
        datastore="redis",
        datastore_version="7.0",
        bin_dir="/usr/bin",
        address="127.42.0.7",
        port=6379,
        ram_mb=ram,
        vcpus=1,
        volume_gb=1,
        transport_url="redis+socket:///x",
        heartbeat_interval=5,
        instance_dir="/d/r1",
        overrides=overrides,
    )


def test_values_are_quoted_for_redis_conf():
    assert conf.quote("plain") == '"plain"'
    assert conf.quote("") == '""'
    assert conf.quote('a "b"') == '"a \\"b\\""'
    assert conf.quote("a\\b") == '"a\\\\b"'
    # No line break, tab or other control byte survives as itself; UTF-8 goes byte by byte.
    assert conf.quote("x\ny") == '"x\\x0ay"'
    assert conf.quote("\t") == '"\\x09"'
    assert conf.quote("é") == '"\\xc3\\xa9"'
    assert conf.render_value(True) == "yes"
    assert conf.render_value(False) == "no"
    assert conf.render_value(10) == "10"
    assert conf.render_value("allkeys-lru") == "allkeys-lru"
    assert conf.render_value("a b") == '"a b"'
    assert conf.render_value('a"b') == '"a\\"b"'
    assert conf.render_value("#x") == '"#x"'


def test_overrides_lie_over_the_flavor_defaults():
    text = conf.redis_conf(config(**{"maxmemory-policy": "allkeys-lru", "hz": 20}))
    lines = text.splitlines()
    assert "maxmemory-policy allkeys-lru" in lines
    assert "maxmemory-policy noeviction" not in lines
    assert "hz 20" in lines
    assert "maxmemory 192mb" in lines
    assert "appendonly yes" in lines
    assert 'save ""' in lines
    effective = conf.settings(config(**{"lazyfree-lazy-eviction": True}))
    assert conf.show_value(effective["lazyfree-lazy-eviction"]) == "yes"
    assert conf.settings(config(ram=1024))["maxmemory"] == "768mb"


@pytest.mark.parametrize("name", ["a b", "x\nport", ""])
def test_names_that_are_not_plain_are_refused(name):
    with pytest.raises(Unprocessable):
        conf.redis_conf(config(**{name: "1"}))


@pytest.mark.parametrize("name", ["dir", "appendonly", "requirepass", "bind", "loadmodule"])
def test_denied_names_are_left_out(name):
    # A group made before its parameter was denied must not keep the server from starting.
    text = conf.redis_conf(config(**{name: "/elsewhere", "hz": 20}))
    assert "/elsewhere" not in text and "hz 20" in text


def test_a_value_cannot_add_a_directive():
    text = conf.redis_conf(config(**{"notify-keyspace-events": 'x"\nloadmodule /tmp/evil.so'}))
    assert not any(line.startswith("loadmodule") for line in text.splitlines())
