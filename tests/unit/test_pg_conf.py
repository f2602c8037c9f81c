import dataclasses

import pytest

from cove.common.errors import Unprocessable
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.postgresql import conf


def config(ram=2048, **overrides):
    return GuestSettings(
        instance_id="i1",
        datastore="postgresql",
        datastore_version="15",
        bin_dir="/x",
        address="127.42.0.9",
        port=5432,
        ram_mb=ram,
        vcpus=2,
        volume_gb=1,
        transport_url="redis+socket:///x",
        heartbeat_interval=5,
        instance_dir="/d/i1",
        overrides=overrides,
    )


def test_memory_follows_the_flavor():
    small = conf.memory_settings(512, 1)
    large = conf.memory_settings(8192, 4)
    assert small["shared_buffers"] == "128MB"
    assert large["shared_buffers"] == "2048MB"
    assert int(large["max_connections"]) > int(small["max_connections"])


def test_server_listens_on_its_own_address_and_socket_dir():
    text = conf.postgresql_conf(config())
    assert "listen_addresses = '127.42.0.9'" in text
    assert "unix_socket_directories = '/d/i1/run'" in text
    assert "shared_buffers = '512MB'" in text
    assert "password_encryption = 'scram-sha-256'" in text


def test_hba_only_allows_password_logins_and_the_agent():
    hba = conf.pg_hba_conf()
    assert "trust" not in hba
    assert "local all os_admin peer map=cove" in hba


def test_values_are_quoted_for_postgresql_conf():
    assert conf.quote("plain") == "'plain'"
    assert conf.quote("it's") == "'it''s'"
    assert conf.quote("a\\b") == "'a\\\\b'"
    assert conf.quote("x'\nport = 1") == "'x''\nport = 1'"  # values are one line anyway
    assert conf.render_value(True) == "on"
    assert conf.render_value(False) == "off"
    assert conf.render_value(4096) == "4096"
    assert conf.render_value(1.5) == "1.5"
    assert conf.render_value("4096") == "'4096'"


def test_overrides_lie_over_the_flavor_defaults():
    text = conf.postgresql_conf(
        config(work_mem=8192, TimeZone="Europe/Paris", enable_seqscan=False, application_name="a'b")
    )
    lines = text.splitlines()
    assert "work_mem = 8192" in lines
    assert not any(line.startswith("work_mem = '") for line in lines)
    # PostgreSQL names ignore case: the group's spelling replaces the flavor's setting.
    assert "TimeZone = 'Europe/Paris'" in lines
    assert not any(line.startswith("timezone =") for line in lines)
    assert "enable_seqscan = off" in lines
    assert "application_name = 'a''b'" in lines
    effective = conf.settings(config(work_mem=8192))
    assert effective["work_mem"] == 8192
    assert effective["shared_buffers"] == "512MB"


@pytest.mark.parametrize("name", ["bad name", "x = 1\nport", "a-b", ""])
def test_names_that_are_not_plain_are_refused(name):
    with pytest.raises(Unprocessable):
        conf.postgresql_conf(config(**{name: "1"}))


@pytest.mark.parametrize("name", ["port", "data_directory", "shared_preload_libraries"])
def test_denied_names_are_left_out(name):
    # A group made before its parameter was denied must not keep the server from starting.
    text = conf.postgresql_conf(config(**{name: "'/elsewhere'", "work_mem": 64}))
    assert "/elsewhere" not in text and "work_mem = 64" in text


def test_effective_configuration_shows_values_as_the_server_reads_them():
    cfg = dataclasses.replace(config(), overrides={"work_mem": 64, "DateStyle": "ISO, DMY"})
    shown = {k: conf.show_value(v) for k, v in conf.settings(cfg).items()}
    assert shown["work_mem"] == "64"
    assert shown["DateStyle"] == "ISO, DMY"
    assert shown["logging_collector"] == "off"
