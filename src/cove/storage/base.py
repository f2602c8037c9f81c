"""The backup store contract: where artifacts live, as a flat space of keys.

A key is a relative, slash-separated path of safe characters (``check_key``); the store maps it
to a file under its root or an object under its bucket and prefix. The guest agent writes and
reads artifacts through a store of its own, opened from a ``StoreSpec`` it was sent; the
control plane opens the same store to delete artifacts and to tidy up after a failed backup.

Rules every store follows:

* ``put`` consumes an iterator of chunks and stores them under the key, never holding more than
  a few parts (tens of MB at most) in memory; it may send parts from threads of its own, all
  ended when it returns or raises. It is atomic: the key shows the new artifact only once every
  chunk was stored; when the iterator or the store fails half-way, nothing is left under the key
  (a previous artifact there is kept) and no partial upload stays behind. It may block for as
  long as the iterator takes.
* ``get`` yields the artifact's bytes in chunks, streamed; it may read a few chunks ahead in a
  thread of its own, which ends with the iterator (exhausted, failed or closed). Raises
  ArtifactMissing at once when there is no such artifact.
* ``delete`` is idempotent: a missing key is not an error. ``size`` is cheap (no data read).
* ``keys`` lists the artifacts whose keys start with a prefix, sorted, without partial ones.
* Every failure of the store itself (unreachable, full, refused) raises StoreUnavailable with a
  message that names the store but no credential; bad keys raise ValueError.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from cove.domain.backups import StoreSpec

LOG = logging.getLogger(__name__)

#: Bytes per chunk that ``get`` yields and that ``put`` buffers at most per part.
CHUNK = 1 << 20

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")


def check_key(key: str) -> str:
    """``key`` if it is a store key: 1-8 segments of letters, digits, ``.``, ``_`` and ``-``,
    none starting with a dot (so no ``..``). Raises ValueError otherwise."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise ValueError(f"not a valid artifact key: {key[:80]!r}")
    return key


class Store(ABC):
    """One backup store (see the module's rules). Public methods check keys and log; backends
    implement the protected hooks."""

    #: The short name backends are registered under (``StoreSpec.kind``).
    kind: str = ""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages and logs (no credential)."""

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` as the artifact ``key``; the number of bytes stored."""
        size = self._put(check_key(key), chunks)
        LOG.info("stored %s (%d bytes) in %s", key, size, self.describe())
        return size

    def get(self, key: str) -> Iterator[bytes]:
        return self._get(check_key(key))

    def delete(self, key: str) -> None:
        self._delete(check_key(key))

    def size(self, key: str) -> int | None:
        """The artifact's size in bytes, None when there is none."""
        return self._size(check_key(key))

    def keys(self, prefix: str) -> list[str]:
        """The keys of the stored artifacts under ``prefix`` (a key ending with ``/``),
        sorted; an empty list when there are none."""
        if not prefix.endswith("/"):
            raise ValueError("a key prefix ends with '/'")
        check_key(prefix.rstrip("/"))
        return sorted(self._keys(prefix))

    def discard_partial(self, key: str) -> None:
        """Remove what a ``put`` of ``key`` cut short by a killed writer left behind (a
        temporary file, an unfinished upload). Idempotent; cheap when there is nothing."""
        self._discard_partial(check_key(key))

    @abstractmethod
    def _put(self, key: str, chunks: Iterable[bytes]) -> int: ...

    @abstractmethod
    def _get(self, key: str) -> Iterator[bytes]: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _size(self, key: str) -> int | None: ...

    @abstractmethod
    def _discard_partial(self, key: str) -> None: ...

    @abstractmethod
    def _keys(self, prefix: str) -> list[str]: ...
