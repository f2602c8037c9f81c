"""The bytes of an artifact: the engine's stream compressed with zstd, then sealed with
AES-256-GCM in frames, so a restore can stream it and still trust every byte it uses.

Layout: a header (``MAGIC``, the key id, a random salt), then frames. Each frame is a 4-byte
big-endian length (its top bit marks the last frame) and the ciphertext with its tag. The frame
key is derived from the deployment's backup key and the salt (HKDF-SHA256), so nonces (the
frame's number) never repeat under one key; each frame's associated data is the header, its
number and the last-frame bit, so frames cannot be reordered, dropped, swapped between artifacts
or cut off without the restore noticing. The SHA-256 of the stored bytes is recorded too, and
checked once the whole artifact was read.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cove.common.errors import ArtifactDamaged
from cove.domain.backups import SealKey

MAGIC = b"COVEBAK1"
#: Compressed bytes per frame.
FRAME = 1 << 20
_LAST = 1 << 31
_SALT = 16
_TAG = 16


def _frame_key(seal: SealKey, salt: bytes) -> AESGCM:
    try:
        key = bytes.fromhex(seal.key)
    except ValueError:
        raise ValueError(f"the backup key {seal.key_id} is not hex") from None
    if len(key) < 32:
        raise ValueError(f"the backup key {seal.key_id} is shorter than 32 bytes")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"cove-backup-v1")
    return AESGCM(derived.derive(key))


def _nonce(number: int) -> bytes:
    return struct.pack(">4xQ", number)


def _aad(header: bytes, number: int, last: bool) -> bytes:
    return header + struct.pack(">Q?", number, last)


class Sealed:
    """Iterating yields the sealed artifact for ``chunks``; ``size`` and ``checksum`` hold
    once it is exhausted."""

    def __init__(self, chunks: Iterable[bytes], seal: SealKey, level: int = 1) -> None:
        self._chunks = chunks
        key_id = seal.key_id.encode()
        if not 0 < len(key_id) < 256:
            raise ValueError("a key id is 1-255 bytes")
        salt = os.urandom(_SALT)
        self._header = MAGIC + bytes([len(key_id)]) + key_id + salt
        self._aead = _frame_key(seal, salt)
        self._compressor = zstandard.ZstdCompressor(level=level, threads=-1).compressobj()
        self._hash = hashlib.sha256()
        self.size = 0
        self.checksum = ""
        self.read = 0

    def _out(self, data: bytes) -> bytes:
        self._hash.update(data)
        self.size += len(data)
        return data

    def _frame(self, number: int, plain: bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(number), plain, _aad(self._header, number, last))
        return self._out(struct.pack(">I", len(sealed) | (_LAST if last else 0)) + sealed)

    def __iter__(self) -> Iterator[bytes]:
        yield self._out(self._header)
        number = 0
        pending = bytearray()
        for chunk in self._chunks:
            self.read += len(chunk)
            pending += self._compressor.compress(chunk)
            while len(pending) >= FRAME:
                yield self._frame(number, bytes(pending[:FRAME]), last=False)
                del pending[:FRAME]
                number += 1
        pending += self._compressor.flush()
        while len(pending) > FRAME:
            yield self._frame(number, bytes(pending[:FRAME]), last=False)
            del pending[:FRAME]
            number += 1
        yield self._frame(number, bytes(pending), last=True)
        self.checksum = self._hash.hexdigest()


class _Reader:
    """Exactly-n reads over an iterator of chunks, hashing what it takes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self.hash = hashlib.sha256()

    def take(self, n: int) -> bytes | None:
        """``n`` bytes; None at a clean end (nothing left); raises ArtifactDamaged when the
        artifact ends inside them."""
        while len(self._buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                if not self._buf:
                    return None
                raise ArtifactDamaged("the backup artifact is cut short")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.hash.update(out)
        return out


def unsealed(chunks: Iterable[bytes], seal: SealKey, checksum: str) -> Iterator[bytes]:
    """The engine's stream from the sealed artifact ``chunks``. Raises ArtifactDamaged (before
    yielding anything not authentic) when a frame was changed, the artifact is cut short or
    has bytes after its end, was sealed with another key, or its checksum is not ``checksum``."""
    reader = _Reader(chunks)
    fixed = reader.take(len(MAGIC) + 1)
    if fixed is None or fixed[: len(MAGIC)] != MAGIC:
        raise ArtifactDamaged("the backup artifact is not a Cove backup")
    key_id = reader.take(fixed[-1])
    salt = reader.take(_SALT)
    if key_id is None or salt is None:
        raise ArtifactDamaged("the backup artifact is cut short")
    if key_id.decode(errors="replace") != seal.key_id:
        raise ArtifactDamaged(
            f"the backup artifact was sealed with key {key_id.decode(errors='replace')}, "
            f"not {seal.key_id}"
        )
    header = fixed + key_id + salt
    aead = _frame_key(seal, salt)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    number = 0
    while True:
        head = reader.take(4)
        if head is None:
            raise ArtifactDamaged("the backup artifact is cut short")
        (word,) = struct.unpack(">I", head)
        last = bool(word & _LAST)
        length = word & ~_LAST
        if not _TAG <= length <= FRAME + _TAG:
            raise ArtifactDamaged("the backup artifact is damaged (a frame has a bad length)")
        body = reader.take(length)
        if body is None:
            raise ArtifactDamaged("the backup artifact is cut short")
        try:
            plain = aead.decrypt(_nonce(number), body, _aad(header, number, last))
        except InvalidTag:
            raise ArtifactDamaged(
                f"the backup artifact is damaged or was changed (frame {number} does not "
                "authenticate)"
            ) from None
        try:
            data = decompressor.decompress(plain)
        except zstandard.ZstdError as exc:
            raise ArtifactDamaged(f"the backup artifact does not decompress: {exc}") from None
        if data:
            yield data
        number += 1
        if last:
            break
    if reader.take(1) is not None:
        raise ArtifactDamaged("the backup artifact has bytes after its end")
    if reader.hash.hexdigest() != checksum:
        raise ArtifactDamaged("the backup artifact's checksum is not the one recorded")
