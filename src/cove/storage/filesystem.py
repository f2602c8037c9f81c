"""A store in a directory: each artifact one file under the root, named by its key.

A ``put`` writes a temporary file beside the final one (``<name>.partial-<random>``), syncs it,
and renames it into place, so a reader never sees half an artifact and a killed writer leaves
only a temporary file, which ``discard_partial`` removes.

Directories are made mode 0700 and files 0600, unless the store's directory is shared with a
group (as the local driver makes it when every instance has a user of its own, all in the
service user's group): then directories are made 2750 and files 0640, so an instance restores
a backup another made, and none writes into another's directory.
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
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "it is full (no space left on device)" if full else exc.strerror
        return StoreUnavailable(f"cannot {what} in the {self.describe()}: {reason}")

    def _put(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_PARTIAL}{secrets.token_hex(4)}")
        try:
            shared = self._make_parents(path)
            mode = 0o640 if shared else 0o600
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            os.fchmod(fd, mode)  # whatever the umask
        except OSError as exc:
            raise self._failed(f"write {key}", exc) from None
        size = 0
        try:
            # Plain writes on the descriptor: a buffered file would flush again when closed
            # after a failed write and raise a second, bare OSError in place of ours.
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        try:
                            written = os.write(fd, view)
                        except OSError as exc:
                            raise self._failed(f"write {key}", exc) from None
                        view = view[written:]
                    size += len(chunk)
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise self._failed(f"write {key}", exc) from None
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size

    def _make_parents(self, path: Path) -> bool:
        """Make the directories above ``path``; whether the store is shared with a group."""
        top = Path(self.spec.location)
        top.mkdir(parents=True, exist_ok=True, mode=0o700)
        shared = bool(top.stat().st_mode & 0o070)
        missing = []
        for parent in path.parents:
            if parent == top or parent.is_dir():
                break
            missing.append(parent)
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
                if shared:
                    directory.chmod(0o2750)
        return shared

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

    def _keys(self, prefix: str) -> list[str]:
        top = self._path(prefix.rstrip("/"))
        found = []
        try:
            for path in top.rglob("*"):
                if path.is_file() and _PARTIAL not in path.name and not path.name.startswith("."):
                    found.append(prefix + path.relative_to(top).as_posix())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._failed(f"list {prefix}", exc) from None
        return found

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
