"""Streams into and out of commands (cove.guestagent.process): a stream is used whole, its
checks run even when the command stops reading early, and its reader's threads stop."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.common.errors import ArtifactDamaged, CommandFailed
from cove.domain.backups import SealKey
from cove.guestagent import process
from cove.storage import sealed
from cove.storage.sealed import Sealed, unsealed

KEY = SealKey("k-test", secrets.token_hex(32))


def sealed_blob(size: int) -> tuple[bytes, str]:
    stream = Sealed([os.urandom(size)], KEY)
    blob = b"".join(stream)
    return blob, stream.checksum


def unseal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("unseal")]


def test_a_stream_goes_into_the_command(tmp_path: Path) -> None:
    blob, checksum = sealed_blob(3 * sealed.FRAME)
    out = tmp_path / "out"
    process.stream_in(
        ["dd", f"of={out}", "bs=64k", "status=none"],
        unsealed([blob], KEY, checksum),
        errors=tmp_path / "err.log",
    )
    assert out.stat().st_size == 3 * sealed.FRAME
    assert unseal_threads() == []


def test_a_command_that_stops_reading_and_succeeds_still_has_the_stream_checked(
    tmp_path: Path,
) -> None:
    blob, _ = sealed_blob(8 * sealed.FRAME)
    damaged = bytearray(blob)
    damaged[-100] ^= 1  # in the last frame, long after what the command reads
    with pytest.raises(ArtifactDamaged):
        process.stream_in(
            ["head", "-c", "100"],
            unsealed([bytes(damaged)], KEY, "0" * 64),
            errors=tmp_path / "err.log",
        )
    assert unseal_threads() == []


def test_a_command_that_fails_early_stops_the_reader(tmp_path: Path) -> None:
    blob, checksum = sealed_blob(24 * sealed.FRAME)
    reader = unsealed([blob], KEY, checksum)
    with pytest.raises(CommandFailed, match="status 3"):
        process.stream_in(
            ["sh", "-c", "head -c 10 >/dev/null; exit 3"], reader, errors=tmp_path / "err.log"
        )
    assert unseal_threads() == []
    assert reader.raw_size < 24 * sealed.FRAME


def test_a_stream_that_fails_kills_the_command_and_is_closed(tmp_path: Path) -> None:
    ended: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"x" * 1000
            raise ArtifactDamaged("frame 1 does not authenticate")
        finally:
            ended.append(True)

    with pytest.raises(ArtifactDamaged):
        process.stream_in(["cat"], chunks(), errors=tmp_path / "err.log")
    assert ended == [True]
