"""The MariaDB backup engine without a server: its defaults file, the LSN it records, the
backups it refuses to restore and the modes it leaves (the integration tests run mariadb-backup
against real servers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cove.common.errors import GuestError, Unprocessable
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.base import RestoreSource
from cove.guestagent.datastores.mariadb.backup import (
    FORMAT,
    MariadbBackups,
    check_meta,
    defaults_text,
    make_private,
    to_lsn,
)
from cove.guestagent.datastores.mariadb.server import MariaServer

CHECKPOINTS = """backup_type = full-backuped
from_lsn = 0
to_lsn = 44848
last_lsn = 478108
recover_binlog_info = 0
"""


def engine(root: Path) -> MariadbBackups:
    config = GuestSettings(
        instance_id="m1",
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
        instance_dir=str(root),
    )
    return MariadbBackups(MariaServer(config, lambda _code: None))


def test_the_defaults_file_includes_my_cnf_first_then_logs_in_as_the_agent() -> None:
    text = defaults_text(Path("/i/conf/my.cnf"), "Ab-_9")
    assert text.splitlines() == [
        "!include /i/conf/my.cnf",
        "[mariadb-backup]",
        "user = cove_admin",
        "password = Ab-_9",
    ]
    assert defaults_text(Path("/m"), 'a "b" #c').endswith('password = "a \\"b\\" #c"\n')
    with pytest.raises(Unprocessable):
        defaults_text(Path("/m"), "a\n[client]")


def test_the_to_lsn_is_read_from_the_checkpoints() -> None:
    assert to_lsn(CHECKPOINTS) == "44848"
    assert to_lsn("from_lsn = 0\n") is None
    assert to_lsn("to_lsn = soon\n") is None


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        ({"format": "pg_basebackup-tar", "version": "10.11"}, "not a MariaDB backup"),
        ({"version": "10.11"}, "not a MariaDB backup"),
        ({"format": FORMAT, "version": "10.6"}, "made by MariaDB 10.6, this instance runs 10.11"),
        ({"format": FORMAT}, "made by MariaDB None"),
    ],
)
def test_a_backup_of_another_kind_or_version_is_refused(meta: dict[str, str], why: str) -> None:
    with pytest.raises(GuestError, match=re.escape(why)):
        check_meta(meta, "10.11")
    check_meta({"format": FORMAT, "version": "10.11"}, "10.11")


def test_a_refused_restore_leaves_the_data_directory_alone(tmp_path: Path) -> None:
    backups = engine(tmp_path)
    kept = tmp_path / "data" / "ibdata1"
    kept.parent.mkdir()
    kept.write_bytes(b"x")
    good = RestoreSource(chunks=[], meta={"format": FORMAT, "version": "10.11"})
    with pytest.raises(GuestError, match="backup 2 of the chain is a full backup"):
        backups.restore([good, good])
    with pytest.raises(GuestError, match=r"this instance runs 10\.11"):
        backups.restore([RestoreSource(chunks=[], meta={"format": FORMAT, "version": "11.4"})])
    assert kept.read_bytes() == b"x"


def test_an_incremental_backup_on_a_parent_of_another_version_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(GuestError, match=r"made by MariaDB 10\.6"),
        engine(tmp_path).open_backup({"format": FORMAT, "version": "10.6", "to_lsn": "1"}),
    ):
        pass


def test_restored_files_are_made_private(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir(mode=0o755)
    (tmp_path / "shop" / "t.ibd").write_bytes(b"")
    (tmp_path / "xtrabackup_binlog_pos_innodb").write_bytes(b"")
    for path in tmp_path.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    make_private(tmp_path)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")} == {
        "shop": 0o700,
        "t.ibd": 0o600,
        "xtrabackup_binlog_pos_innodb": 0o600,
    }
    (tmp_path / "shop" / "link").symlink_to("/etc/passwd")
    with pytest.raises(GuestError, match="symbolic link"):
        make_private(tmp_path)
