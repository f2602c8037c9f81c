"""A store in a directory: each artifact one file under the root, named by its key.

A ``put`` writes a temporary file beside the final one (``<name>.partial-<random>``), syncs it,
and renames it into place, so a reader never sees half an artifact and a killed writer leaves
only a temporary file, which ``discard_partial`` removes. Directories are made mode 0700.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cove.common.errors import ArtifactMissing, StoreUnavailable
from cove.domain.backups import StoreSpec
from cove.storage.base import CHUNK, Store

_PARTIAL = ".partial-"


class FilesystemStore(Store):
    kind = "filesystem"

    def __init__(self, spec: StoreSpec) -> None:
        super().__init__(spec)
        if not spec.location or not os.path.isabs(spec.location):
            raise ValueError("a filesystem store needs an absolute directory")
        self.root = Path(spec.location, spec.prefix) if spec.prefix else Path(spec.location)

    def describe(self) -> str:
        return f"filesystem store {self.root}"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _failed(self, what: str, exc: OSError) -> StoreUnavailable:
        reason = "it is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        return StoreUnavailable(f"cannot {what} in the {self.describe()}: {reason}")

    def _put(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_PARTIAL}{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._failed(f"write {key}", exc) from None
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    try:
                        fh.write(chunk)
                    except OSError as exc:
                        raise self._failed(f"write {key}", exc) from None
                    size += len(chunk)
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise self._failed(f"write {key}", exc) from None
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size

    def _get(self, key: str) -> Iterator[bytes]:
        try:
            fh = self._path(key).open("rb")
        except FileNotFoundError:
            raise ArtifactMissing(f"the artifact {key} is not in the {self.describe()}") from None
        except OSError as exc:
            raise self._failed(f"read {key}", exc) from None
        return self._chunks(fh, key)

    def _chunks(self, fh: BinaryIO, key: str) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = fh.read(CHUNK)
                except OSError as exc:
                    raise self._failed(f"read {key}", exc) from None
                if not chunk:
                    return
                yield chunk
        finally:
            fh.close()

    def _delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._failed(f"delete {key}", exc) from None

    def _size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failed(f"look at {key}", exc) from None

    def _discard_partial(self, key: str) -> None:
        path = self._path(key)
        try:
            entries = list(path.parent.iterdir())
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._failed(f"look at {key}", exc) from None
        for entry in entries:
            if entry.name.startswith(f"{path.name}{_PARTIAL}"):
                try:
                    entry.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise self._failed(f"remove a partial {key}", exc) from None
