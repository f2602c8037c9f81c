"""The bytes of an artifact: the engine's stream compressed with zstd, then sealed with
AES-256-GCM in frames, so a restore can stream it and still trust every byte it uses.

Layout: a header (``MAGIC``, the key id, a random salt), then frames. Each frame is a 4-byte
big-endian length (its top bit marks the last frame) and the ciphertext with its tag. The frame
key is derived from the deployment's backup key and the salt (HKDF-SHA256), so nonces (the
frame's number) never repeat under one key; each frame's associated data is the header, its
number and the last-frame bit, so frames cannot be reordered, dropped, swapped between artifacts
or cut off without the restore noticing. The SHA-256 of the stored bytes is recorded too, and
checked once the whole artifact was read, before the last frame's data is handed out.

A restore opens the artifact in threads of its own (``Unsealed``) while it writes the stream
into the engine's tool, so reading, checking, decompressing and using it overlap; they hand
over a few chunks at a time and stop when the stream ends, fails or is closed.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import IO, cast

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cove.common.errors import ArtifactDamaged
from cove.domain.backups import SealKey
from cove.storage.handover import Handover, Stopped, pump

MAGIC = b"COVEBAK1"
#: Compressed bytes per frame.
FRAME = 1 << 20
#: Bytes of the engine's stream per chunk that a reader hands over.
PIECE = 1 << 20
#: Chunks a reader's thread may have ready ahead of its consumer.
AHEAD = 8
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


class _Stored:
    """Exactly-n reads over the stored chunks, hashing what it takes; a read within one chunk
    is a view of it, not a copy."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._view = memoryview(b"")
        self.hash = hashlib.sha256()
        self.size = 0

    def take(self, n: int) -> memoryview | bytearray | None:
        """``n`` bytes; None at a clean end (nothing left); raises ArtifactDamaged when the
        artifact ends inside them."""
        out: memoryview | bytearray
        if len(self._view) >= n:
            out, self._view = self._view[:n], self._view[n:]
        else:
            out = bytearray(self._view)
            self._view = memoryview(b"")
            while len(out) < n:
                chunk = next(self._it, None)
                if chunk is None:
                    if not out:
                        return None
                    raise ArtifactDamaged("the backup artifact is cut short")
                view = memoryview(chunk)
                need = n - len(out)
                out += view[:need]
                self._view = view[need:]
        self.hash.update(out)
        self.size += n
        return out

    def close(self) -> None:
        """Close the store's stream (its file or connection), read to the end or not."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


class _Frames:
    """The frames of one sealed artifact in order, each authenticated and decrypted; the last
    one only once the whole artifact checked out (nothing after it, the checksum)."""

    def __init__(self, chunks: Iterable[bytes], seal: SealKey, checksum: str) -> None:
        self.stored = _Stored(chunks)
        self._seal = seal
        self._checksum = checksum
        self._header = b""
        self._aead: AESGCM | None = None
        self._number = 0

    def open(self) -> None:
        """Read and check the header. Raises ArtifactDamaged."""
        fixed = self.stored.take(len(MAGIC) + 1)
        if fixed is None or bytes(fixed[: len(MAGIC)]) != MAGIC:
            raise ArtifactDamaged("the backup artifact is not a Cove backup")
        key_id = self.stored.take(fixed[-1])
        salt = self.stored.take(_SALT)
        if key_id is None or salt is None:
            raise ArtifactDamaged("the backup artifact is cut short")
        found = bytes(key_id).decode(errors="replace")
        if found != self._seal.key_id:
            raise ArtifactDamaged(
                f"the backup artifact was sealed with key {found}, not {self._seal.key_id}"
            )
        self._header = bytes(fixed) + bytes(key_id) + bytes(salt)
        self._aead = _frame_key(self._seal, bytes(salt))

    def next(self) -> tuple[bytes, bool]:
        """The next frame's plaintext, and whether it is the last. Raises ArtifactDamaged."""
        assert self._aead is not None
        head = self.stored.take(4)
        if head is None:
            raise ArtifactDamaged("the backup artifact is cut short")
        (word,) = struct.unpack(">I", head)
        last = bool(word & _LAST)
        length = word & ~_LAST
        if not _TAG <= length <= FRAME + _TAG:
            raise ArtifactDamaged("the backup artifact is damaged (a frame has a bad length)")
        body = self.stored.take(length)
        if body is None:
            raise ArtifactDamaged("the backup artifact is cut short")
        number = self._number
        try:
            plain = self._aead.decrypt(_nonce(number), body, _aad(self._header, number, last))
        except InvalidTag:
            raise ArtifactDamaged(
                f"the backup artifact is damaged or was changed (frame {number} does not "
                "authenticate)"
            ) from None
        self._number += 1
        if last:
            if self.stored.take(1) is not None:
                raise ArtifactDamaged("the backup artifact has bytes after its end")
            if self.stored.hash.hexdigest() != self._checksum:
                raise ArtifactDamaged("the backup artifact's checksum is not the one recorded")
        return plain, last


def _plaintexts(frames: _Frames) -> Iterator[bytes]:
    """The artifact read, hashed, checked and decrypted, frame by frame (a reader's first
    thread); the store's stream is closed at the end, whatever happened."""
    try:
        frames.open()
        last = False
        while not last:
            plain, last = frames.next()
            yield plain
    finally:
        frames.stored.close()


class _Plain:
    """The decrypted frames as a file for the zstd stream reader: ``read`` gives the next
    frame's plaintext (``size`` is ignored: a frame is at most ``FRAME`` bytes), empty at the
    end; it raises what the first thread handed over instead."""

    def __init__(self, frames: Handover) -> None:
        self._frames = frames
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        item = self._frames.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            self.ended = True
            return b""
        return item


def _decompressed(plain: _Plain) -> Iterator[bytes]:
    """The decrypted frames decompressed (a reader's second thread), in pieces of at most
    ``PIECE`` bytes however well the data compressed."""
    # Only ``read`` is used of a file.
    stream = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], plain), read_size=FRAME + _TAG
    )
    while True:
        try:
            data = stream.read(PIECE)
        except zstandard.ZstdError as exc:
            raise ArtifactDamaged(f"the backup artifact does not decompress: {exc}") from None
        if not data:
            break
        yield data
    # The compressed stream ended: so must the artifact.
    while not plain.ended:
        if plain.read():
            raise ArtifactDamaged("the backup artifact has data after its compressed stream")


class _Worker:
    """A reader's two threads and what they share with the consumer; holds no reference to
    the ``Unsealed`` object, so dropping that one stops them."""

    def __init__(self, frames: _Frames) -> None:
        self.frames = frames
        self.plain = Handover(AHEAD)
        self.raw = Handover(AHEAD)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        stages = [
            ("unseal-read", _plaintexts(self.frames), self.plain),
            ("unseal-unzip", _decompressed(_Plain(self.plain)), self.raw),
        ]
        self.threads = [
            threading.Thread(target=pump, args=(chunks, out), name=name)
            for name, chunks, out in stages
        ]
        for thread in self.threads:
            thread.daemon = True
            thread.start()

    def stop(self) -> None:
        """Stop the threads and wait for them (each answers within one frame or one read of
        the store)."""
        self.raw.close()
        self.plain.close()
        if not self.threads:
            self.frames.stored.close()
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join()


class Unsealed:
    """The engine's stream from a sealed artifact (see ``unsealed``), in chunks of at most
    ``PIECE`` bytes.

    The artifact is read, hashed, checked and decrypted in one thread and decompressed in
    another, both started by the first ``next`` and each at most ``AHEAD`` chunks ahead of the
    next stage, so opening and using the stream (writing it into the engine's tool) overlap on
    every core while memory stays bounded. ``close`` stops and joins both threads (so does the
    end of a ``with`` block, the end of the stream, an error, or dropping the object); it is
    idempotent. ``raw_size`` counts the bytes of the engine's stream handed out, so a caller can
    stop a restore that outgrows its volume.
    """

    def __init__(self, chunks: Iterable[bytes], seal: SealKey, checksum: str) -> None:
        self._worker = _Worker(_Frames(chunks, seal, checksum))
        self._stopper = weakref.finalize(self, self._worker.stop)
        self._stopper.atexit = False
        #: None while open; then "ended" (its end or its error was handed out) or "closed".
        self._state: str | None = None
        #: Bytes of the engine's stream yielded so far; all of them once exhausted.
        self.raw_size = 0

    @property
    def stored_size(self) -> int:
        """Bytes of the artifact read so far."""
        return self._worker.frames.stored.size

    def __iter__(self) -> Unsealed:
        return self

    def __next__(self) -> bytes:
        """Raises what ``unsealed`` says, and ValueError when the reader was closed before
        its end (a stream cut short never reads as a whole one)."""
        if self._state == "ended":
            raise StopIteration
        if self._state == "closed":
            raise ValueError("the backup stream was closed before its end")
        if not self._worker.threads:
            self._worker.start()
        try:
            item = self._worker.raw.get()
        except Stopped:
            raise ValueError("the backup stream was closed before its end") from None
        if isinstance(item, bytes):
            self.raw_size += len(item)
            return item
        self._state = "ended"
        self._stopper()
        if item is None:
            raise StopIteration
        raise item

    def close(self) -> None:
        if self._state is None:
            self._state = "closed"
        self._stopper()

    def __enter__(self) -> Unsealed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unsealed(chunks: Iterable[bytes], seal: SealKey, checksum: str) -> Unsealed:
    """The engine's stream from the sealed artifact ``chunks`` (see ``Unsealed``). Iterating
    raises ArtifactDamaged (before yielding anything not authentic) when a frame was changed,
    the artifact is cut short or has bytes after its end, was sealed with another key, or its
    checksum is not ``checksum``; the last frame's data comes only once the whole artifact
    checked out. Whatever reading ``chunks`` raises is raised too."""
    return Unsealed(chunks, seal, checksum)
