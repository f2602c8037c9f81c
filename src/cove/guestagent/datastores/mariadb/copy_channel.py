"""The channel a new MariaDB replica copies its source's data through.

``mariadb-backup`` copies a running server only from beside it (it reads the data files), so
the source's agent runs it and streams its output: each ``source`` opens a one-shot offer
(:class:`CopyOffer`), a port of its own on the instance's address that streams one copy to the
first connection presenting the offer's random token, then closes; an offer nobody takes
closes after :data:`OFFER_TTL`. The token and the port travel in the ``ReplicaSource``, like
the replication password. A connection with a wrong token is closed and the offer waits on.

On the wire, over one TCP connection: the replica sends the token and a newline; the source
answers with frames, each a kind byte and a 4-byte big-endian length, then that many bytes:

* ``H``: a JSON header, ``{"version": ...}`` (the source's MariaDB version, which the copy
  must be prepared and run by);
* ``D``: the next piece of mariadb-backup's xbstream;
* ``E``: the end (empty): mariadb-backup exited 0, the copy is whole;
* ``F``: the copy failed, and why (UTF-8).

A connection that ends before ``E`` is a failed copy, so a cut-short stream is never taken
for a whole one. The copy itself is not encrypted (nor is the replication stream): the
instances of a group talk over the network the control plane puts them on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from cove.common.errors import CoveError, GuestError
from cove.domain.replication import ReplicaSource
from cove.guestagent import process

LOG = logging.getLogger(__name__)

#: Seconds an offer waits for its replica.
OFFER_TTL = 600.0
#: Seconds a connection has to present the token.
TOKEN_TIMEOUT = 30.0
#: Seconds either side waits for the other before it gives up on the copy: mariadb-backup may
#: be silent for long (waiting for another backup's stages, copying a big table's first file).
IDLE_TIMEOUT = 3600.0
#: Seconds a replica waits for the source to take its connection.
CONNECT_TIMEOUT = 30.0
#: The longest token line read; a token is far shorter.
TOKEN_MAX = 256

HEADER, DATA, END, FAILED = b"H", b"D", b"E", b"F"
_FRAME = struct.Struct(">cI")
#: The longest frame a replica takes (mariadb-backup's output is sent in pieces of 1 MiB).
FRAME_MAX = 64 << 20

#: Opens mariadb-backup for one copy, named after the offer (``MariadbBackups.open_copy``).
OpenCopy = Callable[[str], contextlib.AbstractContextManager[process.Streamed]]


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame of the wire format."""
    return _FRAME.pack(kind, len(payload)) + payload


class CopyOffer:
    """One copy of the running server's data, offered to the first connection on ``port``
    that presents ``token``. Raises OSError when the port cannot be opened."""

    def __init__(
        self, address: str, open_copy: OpenCopy, version: str, ttl: float = OFFER_TTL
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self._open_copy = open_copy
        self._version = version
        self._ttl = ttl
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.create_server((address, 0), family=family)
        self.port: int = self._listener.getsockname()[1]

    def start(self) -> None:
        """Wait for the replica on a thread of its own."""
        threading.Thread(target=self._serve, name=f"copy-offer-{self.port}", daemon=True).start()

    def _serve(self) -> None:
        deadline = time.monotonic() + self._ttl
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._listener.settimeout(left)
                try:
                    conn, peer = self._listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    if not self._admitted(conn):
                        LOG.warning("refused a copy connection from %s: wrong token", peer[0])
                        continue
                    # One copy per offer: nobody else gets in from now on.
                    self._listener.close()
                    self._send(conn, peer[0])
                    return
            LOG.info("the copy offered on port %d expired unused", self.port)
        except OSError as exc:
            LOG.error("the copy offered on port %d failed: %s", self.port, exc)
        finally:
            self._listener.close()

    def _admitted(self, conn: socket.socket) -> bool:
        """Whether the connection presents the token (compared in constant time)."""
        conn.settimeout(TOKEN_TIMEOUT)
        line = b""
        try:
            while not line.endswith(b"\n") and len(line) < TOKEN_MAX:
                got = conn.recv(TOKEN_MAX - len(line))
                if not got:
                    break
                line += got
        except OSError:
            return False
        return secrets.compare_digest(line.strip(), self.token.encode())

    def _send(self, conn: socket.socket, peer: str) -> None:
        """Stream one copy; a failure is told to the replica when it still listens."""
        conn.settimeout(IDLE_TIMEOUT)
        LOG.info("copying the data for a replica at %s", peer)
        try:
            conn.sendall(frame(HEADER, json.dumps({"version": self._version}).encode()))
            with self._open_copy(f"copy-{self.port}") as streamed:
                for chunk in streamed.chunks():
                    conn.sendall(frame(DATA, chunk))
            conn.sendall(frame(END))
        except (CoveError, OSError) as exc:
            why = exc.message if isinstance(exc, CoveError) else str(exc)
            LOG.error("the copy for the replica at %s failed: %s", peer, why)
            with contextlib.suppress(OSError):
                conn.sendall(frame(FAILED, why.encode("utf-8", "replace")))
            return
        LOG.info("copied the data for the replica at %s", peer)


def receive(source: ReplicaSource) -> tuple[dict[str, Any], Iterator[bytes]]:
    """Connect to ``source``'s copy offer: its header, and the xbstream as chunks (the
    connection closes when they are exhausted or closed). Raises GuestError when the source
    cannot be reached or refuses; reading the chunks raises GuestError when the copy fails or
    is cut short."""
    if source.copy_port is None:
        raise GuestError("the source offers no copy of its data")
    try:
        conn = socket.create_connection((source.host, source.copy_port), CONNECT_TIMEOUT)
    except OSError as exc:
        raise GuestError(f"cannot reach the source: {exc.strerror or exc}") from exc
    try:
        conn.settimeout(IDLE_TIMEOUT)
        conn.sendall(source.copy_token.encode() + b"\n")
        kind, payload = _read_frame(conn)
        if kind == FAILED:
            raise GuestError(f"the source could not copy its data: {payload.decode()}")
        if kind != HEADER:
            raise GuestError("the source sent no copy")
        header = json.loads(payload)
        if not isinstance(header, dict):
            raise GuestError("the source sent no copy")
    except GuestError:
        conn.close()
        raise
    except (OSError, ValueError) as exc:
        conn.close()
        raise GuestError(f"the copy failed: {exc}") from exc
    return header, _chunks(conn)


def _chunks(conn: socket.socket) -> Iterator[bytes]:
    with conn:
        while True:
            try:
                kind, payload = _read_frame(conn)
            except OSError as exc:
                raise GuestError(f"the copy failed: {exc}") from exc
            if kind == DATA:
                yield payload
            elif kind == END:
                return
            elif kind == FAILED:
                raise GuestError(f"the source could not copy its data: {payload.decode()}")
            else:
                raise GuestError("the copy is not in the expected format")


def _read_frame(conn: socket.socket) -> tuple[bytes, bytes]:
    """One frame. Raises GuestError when the connection ends first (before any frame: the
    source refused the token, or the offer is gone) or a frame is not one."""
    head = _read_exact(conn, _FRAME.size, first=True)
    kind, size = _FRAME.unpack(head)
    if size > FRAME_MAX:
        raise GuestError("the copy is not in the expected format")
    return kind, _read_exact(conn, size)


def _read_exact(conn: socket.socket, size: int, first: bool = False) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        got = conn.recv(min(left, 1 << 20))
        if not got:
            if first and left == size:
                raise GuestError(
                    "the source closed the connection (a wrong, used or expired copy offer, "
                    "or a copy cut short)"
                )
            raise GuestError("the copy was cut short")
        parts.append(got)
        left -= len(got)
    return b"".join(parts)
