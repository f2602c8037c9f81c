"""Handing chunks from one thread to another, a few at a time: how reading a store, opening a
sealed artifact and using it overlap while memory stays bounded.

Every thread started here ends when its work ends, when it fails (its exception is handed to
the consumer, who raises it) or when the consumer goes away (closes the handover); whoever
started it joins it, so none outlives the stream it serves.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator


class Stopped(Exception):
    """The other side closed the handover: the thread that meets it ends without a word."""


class Handover:
    """A short queue from a producing thread to a consuming one: chunks, then ``None`` at the
    end or an exception for what went wrong. Closing it (the consumer went away) empties it,
    and a ``put`` or ``get`` then raises Stopped, so a thread waiting on either side ends."""

    def __init__(self, depth: int) -> None:
        self._items: deque[bytes | BaseException | None] = deque()
        self._ready = threading.Condition()
        self._depth = depth
        self._closed = False

    def put(self, item: bytes | BaseException | None) -> None:
        """Raises Stopped when the handover is (or gets) closed."""
        with self._ready:
            while len(self._items) >= self._depth and not self._closed:
                self._ready.wait()
            if self._closed:
                raise Stopped
            self._items.append(item)
            self._ready.notify()

    def get(self) -> bytes | BaseException | None:
        """Raises Stopped when the handover is (or gets) closed."""
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            if self._closed:
                raise Stopped
            item = self._items.popleft()
            self._ready.notify()
            return item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._items.clear()
            self._ready.notify_all()


def pump(chunks: Iterable[bytes], out: Handover) -> None:
    """Put ``chunks`` into ``out``, then ``None``, or what reading them raised; stop when
    ``out`` is closed. Closes ``chunks`` (when it can be) in every case."""
    try:
        try:
            for chunk in chunks:
                out.put(chunk)
            out.put(None)
        except Stopped:
            raise
        except BaseException as exc:  # handed over, and raised on the other side
            out.put(exc)
    except Stopped:
        pass
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()


def read_ahead(chunks: Iterable[bytes], depth: int, name: str) -> Iterator[bytes]:
    """``chunks``, read by a thread of its own up to ``depth`` chunks ahead of the consumer
    (for a source that waits on the network). The thread starts with the first ``next`` and
    is stopped and joined when the iterator ends, fails or is closed."""
    handover = Handover(depth)
    thread = threading.Thread(target=pump, args=(chunks, handover), name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = handover.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        handover.close()
        thread.join()
