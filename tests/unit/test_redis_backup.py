"""The Redis backup stream without a server: its header, redis-cli's end mark and the restored
ACL file (the integration tests run the whole thing against real servers)."""

from __future__ import annotations

import pytest

from cove.common.errors import GuestError
from cove.guestagent.datastores.redis.backup import (
    MAGIC,
    BackupStream,
    header,
    rdb_only,
    read_header,
    restored_acl,
)

#: The shape of an RDB: magic and version, a body, the end opcode and an 8-byte checksum.
RDB = b"REDIS0010" + bytes(range(255)) * 3 + b"\xff" + b"\x01\x02\x03\x04\x05\x06\x07\x08"
MARK = b"3d610213f01c6f2fc26d9c284d9632d8aa448489"
ACL = ["user app on #" + "a" * 64 + " ~* &* +@all", "user default off resetchannels -@all"]


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 49, 50, 4096])
def test_the_diskless_end_mark_is_cut_off_wherever_the_chunks_end(size: int) -> None:
    assert b"".join(rdb_only(pieces(RDB + MARK, size))) == RDB
    # A disk-based sync sends no mark: the RDB stays whole.
    assert b"".join(rdb_only(pieces(RDB, size))) == RDB


@pytest.mark.parametrize(
    "output", [b"", b"ERR", b"-NOAUTH Authentication required.\n", RDB[:-1], RDB + MARK[:-1]]
)
def test_output_that_is_no_whole_rdb_is_refused(output: bytes) -> None:
    with pytest.raises(GuestError, match="redis-cli"):
        b"".join(rdb_only(pieces(output, 5)))


def test_the_header_reads_back_and_leaves_the_rdb_to_stream() -> None:
    stream = BackupStream(pieces(header(ACL) + RDB, 3))
    assert read_header(stream) == ACL
    assert b"".join(stream.rest()) == RDB


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (b"PGDMP" + bytes(20), "header is missing"),
        (MAGIC + b"\xff\xff\xff\xff", "too long"),
        (MAGIC + (100).to_bytes(4, "big") + b"user", "ends inside"),
        (header(["user cove_admin on ~* +@all", ACL[1]]), "no tenant user"),
        (header(["flushall", ACL[1]]), "no tenant user"),
        (header(["user app on\r+@all", ACL[1]]), "no tenant user"),
        (header(ACL[:1]), "lack the default user"),
    ],
)
def test_a_header_not_of_ours_is_refused(stream: bytes, why: str) -> None:
    with pytest.raises(GuestError, match=why):
        read_header(BackupStream([stream]))


def test_the_restored_acl_keeps_the_agents_line_and_takes_the_backups_root() -> None:
    current = (
        "user cove_admin on #" + "b" * 64 + " ~* &* +@all\n"
        "user default off resetpass resetkeys resetchannels -@all\n"
    )
    assert restored_acl(current, ACL).splitlines() == [current.splitlines()[0], *ACL]
    with pytest.raises(GuestError, match="agent's user"):
        restored_acl("user default off\n", ACL)
