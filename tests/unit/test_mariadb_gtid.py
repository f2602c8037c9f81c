"""MariaDB replication without a server: GTID lists, mariadb-backup's binlog info, the settings
every server and every replica gets, and the copy channel's frames (the integration tests run
real replicas)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from cove.common.errors import CommandFailed, GuestError
from cove.domain.guest import ClusterMember, GuestSettings
from cove.domain.replication import ReplicaSource
from cove.guestagent.datastores.mariadb import conf, galera
from cove.guestagent.datastores.mariadb import copy_channel as channel
from cove.guestagent.datastores.mariadb.privileges import TENANT_ACCESS, startup_sql
from cove.guestagent.datastores.mariadb.replication import (
    binlog_info_gtid,
    gtid_seq,
    read_binlog_info,
)


def config(**overrides: object) -> GuestSettings:
    return GuestSettings(
        instance_id="6f1c2a9e-0000-4000-8000-000000000001",
        datastore="mariadb",
        datastore_version="10.11",
        bin_dir="/usr/sbin",
        address="127.42.0.8",
        port=3306,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis+socket:///x",
        heartbeat_interval=5,
        overrides=dict(overrides),  # type: ignore[arg-type]
        instance_dir="/srv/i1",
    )


def test_the_sequence_number_of_domain_zero_is_read_from_any_gtid_list() -> None:
    assert gtid_seq("0-1-100") == 100
    assert gtid_seq("1-7-5,0-3-42") == 42
    assert gtid_seq("0-1-9, 0-2-12") == 12  # a binlog state: one GTID per server id
    assert gtid_seq("0-1-9\n0-2-7\n") == 9  # the state file a clean shutdown leaves
    assert gtid_seq("1-7-5", domain=1) == 5
    assert gtid_seq("") is None
    assert gtid_seq("1-7-5") is None
    for bad in ("0-1", "x-1-2", "0-1-2;", "0-1-2-3"):
        with pytest.raises(ValueError):
            gtid_seq(bad)


def test_the_copy_position_comes_from_the_binlog_info() -> None:
    assert binlog_info_gtid("mariadb-bin.000003\t829\t0-11-3\n") == "0-11-3"
    assert binlog_info_gtid("mariadb-bin.000003\t829\t0-11-3,1-2-7") == "0-11-3,1-2-7"
    # A source that had written no GTID yet: replication starts at its log's beginning.
    assert binlog_info_gtid("mariadb-bin.000001\t329\t\n") == ""
    assert binlog_info_gtid("mariadb-bin.000001\t329") == ""
    for bad in ("", "mariadb-bin.000001", "mariadb-bin.000001\tx\t0-1-2", "f\t1\tnot-a-gtid"):
        with pytest.raises(ValueError):
            binlog_info_gtid(bad)


def test_the_binlog_info_is_found_under_either_name(tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="no binary log position"):
        read_binlog_info(tmp_path)
    (tmp_path / "xtrabackup_binlog_info").write_text("mariadb-bin.000002\t400\t0-5-17\n")
    assert read_binlog_info(tmp_path) == "0-5-17"
    (tmp_path / "mariadb_backup_binlog_info").write_text("mariadb-bin.000002\t400\t0-5-18\n")
    assert read_binlog_info(tmp_path) == "0-5-18"  # the newer tool's name first
    (tmp_path / "mariadb_backup_binlog_info").write_text("garbage")
    with pytest.raises(GuestError, match="cannot read where the copy ends"):
        read_binlog_info(tmp_path)


def test_a_group_s_servers_write_a_gtid_binlog_and_only_a_replica_is_read_only() -> None:
    cfg = config()
    primary = conf.settings(cfg, source=True)
    assert primary["log_bin"] == "/srv/i1/data/mariadb-bin"
    assert primary["relay_log"] == "/srv/i1/data/relay-bin"
    assert primary["binlog_format"] == "ROW"
    assert primary["log_slave_updates"] is True
    assert primary["gtid_strict_mode"] is True
    # A standalone server writes no binary log; a replica and a cluster member always do.
    alone = conf.settings(cfg)
    assert not {"log_bin", "log_slave_updates", "max_binlog_size", "binlog_format"} & set(alone)
    assert "\nlog_bin =" not in conf.my_cnf(cfg)
    assert "log_bin = /srv/i1/data/mariadb-bin\n" in conf.my_cnf(cfg, source=True)
    assert conf.settings(cfg, replica=True)["log_bin"] == "/srv/i1/data/mariadb-bin"
    member = ClusterMember("c1", ["127.0.0.2", "127.0.0.3"])
    assert "log_bin" in conf.settings(cfg, cluster=galera.settings(cfg, member, "pw"))
    assert "read_only" not in primary
    assert conf.settings(cfg, replica=True)["read_only"] is True
    assert "read_only = ON\n" in conf.my_cnf(cfg, replica=True)
    assert "read_only" not in conf.my_cnf(cfg)
    # Derived from the instance id: the same every time, different between instances.
    assert primary["server_id"] == conf.server_id(cfg.instance_id)
    ids = {conf.server_id(f"instance-{n}") for n in range(1000)}
    assert len(ids) == 1000 and all(1 <= i < 2**32 for i in ids)
    assert conf.binlog_size(1) == 32 * conf.MIB
    assert conf.binlog_size(1000) == 1024 * conf.MIB


def test_a_configuration_group_cannot_move_or_shorten_the_binlog() -> None:
    cfg = config(
        expire_logs_days=0, max_binlog_size=4096, log_basename="x", server_id=7, read_only=0
    )
    assert not {"expire_logs_days", "max_binlog_size", "log_basename"} & set(conf.tunables(cfg))
    shown = conf.settings(cfg, source=True)
    assert shown["server_id"] == conf.server_id(cfg.instance_id)
    assert shown["max_binlog_size"] == conf.binlog_size(1)
    assert "read_only" not in shown


def test_the_redo_log_goes_to_the_journal_directory_and_keeps_its_size() -> None:
    cfg = config(innodb_log_file_size=64 << 30, innodb_log_group_home_dir="/elsewhere")
    assert "innodb_log_group_home_dir" not in conf.settings(cfg)  # the data directory's
    assert conf.redo_dir(cfg) == cfg.data_dir
    journaled = replace(cfg, journal_dir="/srv/journals/i1")
    shown = conf.settings(journaled)
    assert shown["innodb_log_group_home_dir"] == "/srv/journals/i1"
    assert "innodb_log_file_size" not in shown  # off the volume: no tenant may grow it
    assert conf.redo_dir(journaled) == Path("/srv/journals/i1")


def test_row_images_are_minimal_but_in_a_cluster_and_no_tenants_choice() -> None:
    cfg = config(binlog_row_image="FULL")
    assert conf.settings(cfg)["binlog_row_image"] == "MINIMAL"
    member = ClusterMember(cluster_id="c1", peers=["127.42.0.8", "127.42.0.9", "127.42.0.10"])
    clustered = conf.settings(cfg, cluster=galera.settings(cfg, member, "pw"))
    assert clustered["binlog_row_image"] == "FULL"


def test_synchronous_mode_never_times_out_and_only_a_primary_waits() -> None:
    cfg = config(rpl_semi_sync_master_timeout=10, rpl_semi_sync_master_enabled=False)
    assert not any(key.startswith("rpl_") for key in conf.settings(cfg))
    assert "rpl_" not in conf.my_cnf(cfg) and "rpl_" not in conf.my_cnf(cfg, replica=True)
    primary = conf.settings(cfg, synchronous=True)
    replica = conf.settings(cfg, replica=True, synchronous=True)
    for shown in (primary, replica):
        assert shown["rpl_semi_sync_slave_enabled"] is True
        assert shown["rpl_semi_sync_master_wait_point"] == "AFTER_SYNC"
        assert shown["rpl_semi_sync_master_timeout"] == 2**64 - 1  # no override shortens it
        assert shown["rpl_semi_sync_master_wait_no_slave"] is True
    assert primary["rpl_semi_sync_master_enabled"] is True
    assert replica["rpl_semi_sync_master_enabled"] is False
    text = conf.my_cnf(cfg, synchronous=True)
    assert "rpl_semi_sync_master_timeout = 18446744073709551615\n" in text
    assert "rpl_semi_sync_master_wait_point = AFTER_SYNC\n" in text
    assert "rpl_semi_sync_master_enabled = ON\n" in text
    assert "rpl_semi_sync_master_enabled = OFF\n" in conf.my_cnf(cfg, True, synchronous=True)
    # Set live in this order: the timeout before the waiting starts.
    order = list(conf.semi_sync_settings(primary=True))
    assert order.index("rpl_semi_sync_master_timeout") < order.index("rpl_semi_sync_master_enabled")


def test_the_init_file_stays_out_of_the_binlog_and_keeps_the_replication_grant() -> None:
    text = startup_sql(conf.native_password_hash("pw"))
    lines = text.splitlines()
    assert lines[0] == "SET SESSION sql_log_bin = 0;"
    cut = next(line for line in lines if f"& {TENANT_ACCESS})" in line)
    assert "NOT (User = 'cove_replication' AND Host = '%')" in cut
    keep = next(line for line in lines if "WHERE User = 'cove_replication'" in line)
    assert f"& {1 << 19})" in keep  # REPLICATION SLAVE, nothing else


@contextmanager
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    with left, right:
        yield left, right


def test_frames_carry_the_stream_and_its_end() -> None:
    with pair() as (source, replica):
        payload = b"".join(
            [
                channel.frame(channel.DATA, b"abc"),
                channel.frame(channel.DATA, b"de"),
                channel.frame(channel.END),
            ]
        )
        source.sendall(payload)
        assert list(channel._chunks(replica)) == [b"abc", b"de"]


def test_a_stream_cut_short_or_failed_is_never_whole() -> None:
    with pair() as (source, replica):
        source.sendall(channel.frame(channel.DATA, b"abc") + channel.frame(channel.DATA, b"de")[:6])
        source.shutdown(socket.SHUT_WR)
        with pytest.raises(GuestError, match="cut short"):
            list(channel._chunks(replica))
    with pair() as (source, replica):
        source.sendall(
            channel.frame(channel.DATA, b"abc") + channel.frame(channel.FAILED, b"disk full")
        )
        with pytest.raises(GuestError, match="could not copy its data: disk full"):
            list(channel._chunks(replica))


class FakeStream:
    def __init__(self, pieces: list[bytes], fails: bool = False) -> None:
        self.pieces = pieces
        self.fails = fails

    def chunks(self) -> Iterator[bytes]:
        yield from self.pieces
        if self.fails:
            raise CommandFailed("mariadb-backup exited with status 1: it broke")


def offer_of(stream: FakeStream, ttl: float = 30.0) -> tuple[channel.CopyOffer, list[str]]:
    names: list[str] = []

    @contextmanager
    def open_copy(name: str) -> Iterator[FakeStream]:
        names.append(name)
        yield stream

    offer = channel.CopyOffer("127.0.0.1", open_copy, "10.11", ttl)  # type: ignore[arg-type]
    offer.start()
    return offer, names


def source_of(offer: channel.CopyOffer, token: str | None = None) -> ReplicaSource:
    return ReplicaSource(
        "i-src",
        "127.0.0.1",
        3306,
        "cove_replication",
        "pw",
        copy_port=offer.port,
        copy_token=offer.token if token is None else token,
    )


def test_an_offer_streams_one_copy_to_the_token_and_then_closes() -> None:
    offer, names = offer_of(FakeStream([b"x" * 10, b"y" * 3]))
    assert offer.token not in repr(source_of(offer))
    # A wrong token is turned away; the offer waits on for the right one.
    with pytest.raises(GuestError, match="closed the connection"):
        channel.receive(source_of(offer, "wrong"))
    header, chunks = channel.receive(source_of(offer))
    assert header == {"version": "10.11"}
    assert b"".join(chunks) == b"x" * 10 + b"y" * 3
    assert names == [f"copy-{offer.port}"]
    with pytest.raises(GuestError, match="cannot reach the source"):
        channel.receive(source_of(offer))


def test_a_failed_copy_tells_the_replica_why() -> None:
    offer, _ = offer_of(FakeStream([b"x"], fails=True))
    _, chunks = channel.receive(source_of(offer))
    with pytest.raises(GuestError, match="it broke"):
        list(chunks)


def test_an_offer_nobody_takes_expires() -> None:
    offer, names = offer_of(FakeStream([b"x"]), ttl=0.2)

    def closed() -> bool:
        try:
            socket.create_connection(("127.0.0.1", offer.port), 1).close()
        except OSError:
            return True
        return False

    deadline = time.monotonic() + 30
    while not closed():
        assert time.monotonic() < deadline, "the offer did not expire"
        time.sleep(0.05)
    assert names == []
