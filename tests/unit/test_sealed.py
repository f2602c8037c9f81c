"""Sealed artifacts: what goes in comes out, and any change, cut or wrong key is refused."""

from __future__ import annotations

import gc
import inspect
import os
import secrets
import struct
import threading
from collections.abc import Iterator

import pytest

from cove.common.errors import ArtifactDamaged, StoreUnavailable
from cove.domain.backups import SealKey
from cove.storage import sealed
from cove.storage.sealed import Sealed, unsealed

KEY = SealKey("k-test", secrets.token_hex(32))


def seal(data: list[bytes], key: SealKey = KEY) -> tuple[bytes, str]:
    stream = Sealed(data, key)
    out = b"".join(stream)
    assert stream.size == len(out)
    return out, stream.checksum


def unseal(
    blob: bytes, key: SealKey = KEY, checksum: str | None = None, piece: int = 7777
) -> bytes:
    chunks = [blob[i : i + piece] for i in range(0, len(blob), piece)]
    if checksum is None:
        checksum = sealed.hashlib.sha256(blob).hexdigest()
    return b"".join(unsealed(chunks, key, checksum))


@pytest.mark.parametrize(
    "data",
    [
        [],
        [b""],
        [b"x"],
        [os.urandom(3 * sealed.FRAME + 5)],  # several frames, incompressible
        [b"abc" * 400_000, os.urandom(1000), b"", b"z" * 10],
    ],
    ids=["nothing", "empty", "one-byte", "frames", "mixed"],
)
def test_what_is_sealed_comes_back(data: list[bytes]) -> None:
    blob, checksum = seal(data)
    assert unseal(blob, checksum=checksum) == b"".join(data)


def test_compressible_data_is_stored_smaller_and_never_in_clear() -> None:
    text = b"the quick brown fox jumps over the lazy dog " * 50_000
    blob, _ = seal([text])
    assert len(blob) < len(text) / 10
    assert b"quick brown" not in blob


def test_every_flipped_byte_is_detected() -> None:
    blob, checksum = seal([os.urandom(2 * sealed.FRAME + 100)])
    for position in (0, 9, 20, 40, len(blob) // 2, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(ArtifactDamaged):
            unseal(bytes(damaged), checksum=checksum)


def test_a_cut_artifact_is_detected_even_at_a_frame_boundary() -> None:
    blob, _ = seal([os.urandom(2 * sealed.FRAME)])
    # The end of the first frame: header, then length word and sealed frame.
    header = len(sealed.MAGIC) + 1 + len(KEY.key_id) + 16
    (word,) = struct.unpack(">I", blob[header : header + 4])
    first_end = header + 4 + (word & 0x7FFFFFFF)
    for cut in (first_end, len(blob) - 1, header, 3):
        with pytest.raises(ArtifactDamaged):
            unseal(blob[:cut])


def test_bytes_after_the_end_are_refused() -> None:
    blob, _ = seal([b"data"])
    with pytest.raises(ArtifactDamaged, match="after its end"):
        unseal(blob + b"x")


def test_another_key_is_refused_by_id_and_by_value() -> None:
    blob, checksum = seal([b"secret data"])
    with pytest.raises(ArtifactDamaged, match="sealed with key k-test"):
        unseal(blob, SealKey("k-other", KEY.key), checksum)
    with pytest.raises(ArtifactDamaged, match="does not authenticate"):
        unseal(blob, SealKey("k-test", secrets.token_hex(32)), checksum)


def test_a_wrong_checksum_is_refused() -> None:
    blob, _ = seal([b"data"])
    with pytest.raises(ArtifactDamaged, match="checksum"):
        unseal(blob, checksum="0" * 64)


def test_frames_of_two_artifacts_cannot_be_swapped() -> None:
    one, _ = seal([b"a" * 100])
    two, _ = seal([b"b" * 100])
    header = len(sealed.MAGIC) + 1 + len(KEY.key_id) + 16
    with pytest.raises(ArtifactDamaged):
        unseal(one[:header] + two[header:])


def test_not_a_backup_is_refused() -> None:
    with pytest.raises(ArtifactDamaged, match="not a Cove backup"):
        unseal(b"PK\x03\x04 a zip file")


def unseal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("unseal")]


def test_the_reader_reports_the_raw_and_stored_sizes() -> None:
    data = b"some text to restore " * 200_000
    blob, checksum = seal([data])
    reader = unsealed([blob[i : i + 5000] for i in range(0, len(blob), 5000)], KEY, checksum)
    got = bytearray()
    for chunk in reader:
        got += chunk
        assert reader.raw_size == len(got)
    assert got == data
    assert reader.raw_size == len(data) and reader.stored_size == len(blob)
    assert unseal_threads() == []


def test_data_that_compresses_well_comes_back_in_bounded_pieces() -> None:
    data = bytes(64 << 20)  # a frame of it unpacks to far more than a frame
    blob, checksum = seal([data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)])
    sizes = [len(chunk) for chunk in unsealed([blob], KEY, checksum)]
    assert sum(sizes) == len(data) and max(sizes) <= sealed.PIECE


def test_nothing_of_the_last_frame_comes_before_the_checksum_is_checked() -> None:
    blob, _ = seal([b"the only frame" * 1000])
    reader = unsealed([blob], KEY, "0" * 64)
    with pytest.raises(ArtifactDamaged, match="checksum"):
        next(reader)
    assert reader.raw_size == 0
    assert list(reader) == []  # ended, as a generator that raised
    assert unseal_threads() == []


def stored(blob: bytes, closed: list[bool], fail_at: int | None = None) -> Iterator[bytes]:
    """``blob`` as a store's stream, noting when it is closed."""
    try:
        for number, offset in enumerate(range(0, len(blob), 4096)):
            if number == fail_at:
                raise StoreUnavailable("the store went away")
            yield blob[offset : offset + 4096]
    finally:
        closed.append(True)


def test_a_consumer_that_stops_early_stops_the_threads_and_closes_the_store() -> None:
    blob, checksum = seal([os.urandom(24 * sealed.FRAME)])
    closed: list[bool] = []
    reader = unsealed(stored(blob, closed), KEY, checksum)
    assert next(reader)  # the threads run, and soon wait for the consumer
    reader.close()
    reader.close()  # idempotent
    assert unseal_threads() == [] and closed == [True]
    with pytest.raises(ValueError, match="closed before its end"):
        next(reader)  # never taken for the whole stream


def test_a_reader_dropped_unclosed_stops_its_threads() -> None:
    blob, checksum = seal([os.urandom(24 * sealed.FRAME)])
    closed: list[bool] = []
    reader = unsealed(stored(blob, closed), KEY, checksum)
    next(reader)
    del reader
    gc.collect()
    assert unseal_threads() == [] and closed == [True]


def test_a_reader_never_read_starts_nothing_and_closes_the_store() -> None:
    stream = stored(b"x" * 10, [])
    with unsealed(stream, KEY, "0" * 64):
        assert unseal_threads() == []
    assert inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED


def test_a_store_failure_reaches_the_consumer() -> None:
    blob, checksum = seal([os.urandom(3 * sealed.FRAME)])
    closed: list[bool] = []
    with pytest.raises(StoreUnavailable, match="went away"):
        for _ in unsealed(stored(blob, closed, fail_at=500), KEY, checksum):
            pass
    assert unseal_threads() == [] and closed == [True]
