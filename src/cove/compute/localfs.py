"""File and process operations of the local driver that are safe inside an instance directory.

When Cove runs as root, the driver works in directories that the unprivileged service user owns
and may have tampered with: any entry can have become a symbolic link, a FIFO or a hard link to
someone else's file, and any pid written in a file can name someone else's process. So paths
are opened one component at a time below a trusted anchor (the root-owned instances directory),
never following a symbolic link, and a process is signalled only after checking that it belongs
to the instance, through a pidfd so that a pid reused in between cannot receive the signal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import select
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cove.common import procfs
from cove.common.errors import UnsafePath

LOG = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The kernel's answers to O_NOFOLLOW on a symbolic link, O_DIRECTORY on something else, and
# a non-blocking open of a FIFO nobody reads.
_UNSAFE_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.ENXIO)
#: The largest pid Linux hands out; anything else read from a file is not a process.
_PID_MAX = 4_194_304


def _unsafe(path: Path, what: str = "a symbolic link or not of the expected type") -> UnsafePath:
    return UnsafePath(f"{path} is {what}; refusing to follow it")


def _open(path: Path, flags: int, mode: int = 0o600, *, dir_fd: int | None = None) -> int:
    try:
        return os.open(path.name if dir_fd is not None else path, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _UNSAFE_ERRNOS:
            raise _unsafe(path) from exc
        raise


@contextlib.contextmanager
def open_dir(anchor: Path, *parts: str) -> Iterator[int]:
    """A descriptor of the directory ``anchor/parts...``; no part may be a symbolic link.

    The anchor itself is trusted (root's own path) and opened normally. Raises
    FileNotFoundError when a part is missing and UnsafePath when one is not a real directory.
    """
    path = anchor
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            path = path / part
            nxt = _open(path, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def lstat(anchor: Path, *parts: str) -> os.stat_result | None:
    """The entry ``anchor/parts...`` itself (a symbolic link is not followed), None if missing.

    Raises UnsafePath when a directory on the way is not a real directory.
    """
    try:
        with open_dir(anchor, *parts[:-1]) as fd:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def regular_file(anchor: Path, *parts: str) -> bool:
    """Whether ``anchor/parts...`` is a regular file (False when missing).

    Raises UnsafePath when it, or a directory on the way, is something else.
    """
    st = lstat(anchor, *parts)
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise _unsafe(anchor.joinpath(*parts), "not a regular file")
    return True


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, a file of root's in a directory only root writes
    (made 0700 when missing): no instance's user can open it, so none can hold the lock and
    stall its holders, nor put a link in its place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_dirs(base: Path, subdirs: tuple[str, ...], uid: int, gid: int) -> None:
    """Create ``base`` (in a root-owned directory) and its ``subdirs``, all owned by ``uid``.

    Anything in place of a subdirectory that is not a real directory (a symbolic link, say) is
    removed and replaced. Raises UnsafePath when ``base`` itself is not a directory.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode):
        raise _unsafe(base, "not a directory")
    with open_dir(base.parent, base.name) as base_fd:
        os.fchown(base_fd, uid, gid)
        os.fchmod(base_fd, 0o700)  # a volume's root comes from mkfs as 0755
        for sub in subdirs:
            _make_subdir(base, base_fd, sub, uid, gid)


def _make_subdir(base: Path, base_fd: int, name: str, uid: int, gid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=base_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            LOG.warning("replacing %s, which is not a directory", base / name)
            os.unlink(name, dir_fd=base_fd)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=base_fd)
    # Changing the owner through a descriptor opened without following links: whatever is
    # swapped in after the checks above, only a real directory of the instance is chowned.
    fd = _open(base / name, _DIR_FLAGS, dir_fd=base_fd)
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def write_private(anchor: Path, parts: tuple[str, ...], text: str, uid: int, gid: int) -> None:
    """Atomically replace the file ``anchor/parts...`` by ``text`` (mode 0600, owned by uid).

    Raises UnsafePath when a directory on the way is not a real directory.
    """
    name = parts[-1]
    tmp = f"{name}.tmp"
    path = anchor.joinpath(*parts)
    with open_dir(anchor, *parts[:-1]) as dir_fd:
        # A leftover (or planted) temporary entry is removed, never written through.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except FileExistsError as exc:
            raise _unsafe(path.with_name(tmp), "being replaced while Cove writes it") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fchown(fh.fileno(), uid, gid)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def set_tree(
    top: Path, gid: int, dir_mode: int, file_mode: int, *, owner: int | None = None
) -> int:
    """Give the directories and regular files below ``top`` ``dir_mode`` and ``file_mode``
    (with ``owner``, also that owner and group ``gid``; without, only those already of group
    ``gid`` are changed), never following a symbolic link: ``os.fwalk`` holds each directory
    open, every entry is opened with O_NOFOLLOW and changed through its descriptor, and
    anything else (a link, a FIFO) is left as it is. Returns how many were changed."""
    changed = 0
    file_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _path, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        entries = [(d, dir_mode, _DIR_FLAGS) for d in dirs]
        entries += [(f, file_mode, file_flags) for f in files]
        for name, mode, flags in entries:
            try:
                fd = os.open(name, flags, dir_fd=dir_fd)
            except OSError:
                continue  # a link, a FIFO, or gone meanwhile
            try:
                st = os.fstat(fd)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue
                if owner is not None:
                    os.fchown(fd, owner, gid)
                elif st.st_gid != gid:
                    continue
                if owner is not None or stat.S_IMODE(st.st_mode) != mode:
                    os.fchmod(fd, mode)
                    changed += 1
            finally:
                os.close(fd)
    return changed


def remove_file(anchor: Path, *parts: str) -> None:
    """Remove the entry ``anchor/parts...`` if it exists, without following any link.

    When a directory on the way is not a real directory, that entry is removed instead, so
    that the path no longer names anything either way.
    """
    for depth in range(1, len(parts)):
        st = lstat(anchor, *parts[:depth])
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            parts = parts[:depth]
            break
    try:
        with open_dir(anchor, *parts[:-1]) as dir_fd:
            try:
                os.unlink(parts[-1], dir_fd=dir_fd)
            except IsADirectoryError:
                # Someone made a directory of it; it goes too (rmtree follows no link).
                shutil.rmtree(parts[-1], dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def open_owned(anchor: Path, parts: tuple[str, ...], flags: int, uid: int) -> int:
    """Open the existing regular file ``anchor/parts...``, which ``uid`` must own.

    Never follows a symbolic link and never blocks on a FIFO. Raises FileNotFoundError when
    it is missing and UnsafePath when it is not such a file.
    """
    path = anchor.joinpath(*parts)
    with open_dir(anchor, *parts[:-1]) as dir_fd:
        fd = _open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(path, "not a regular file")
        if st.st_uid != uid:
            raise _unsafe(path, f"owned by uid {st.st_uid}, not by the service user")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_owned(anchor: Path, parts: tuple[str, ...], uid: int, limit: int = 4096) -> str:
    """The start of the regular file ``anchor/parts...`` owned by ``uid`` (see open_owned)."""
    fd = open_owned(anchor, parts, os.O_RDONLY, uid)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit).decode(errors="replace")


def open_log(anchor: Path, parts: tuple[str, ...], uid: int, gid: int) -> int:
    """A descriptor appending to the log file ``anchor/parts...``, created for ``uid``.

    A new file is made under a temporary name, given to ``uid`` and only then linked in
    place, so a task manager killed half-way never leaves a log that is not uid's (every
    later start would refuse it). An existing one must already be uid's regular file.
    Raises UnsafePath otherwise.
    """
    path = anchor.joinpath(*parts)
    name = parts[-1]
    with open_dir(anchor, *parts[:-1]) as dir_fd:
        if lstat(anchor, *parts) is None:
            tmp = f".{name}.{secrets.token_hex(4)}.new"
            fd = _open(
                path.with_name(tmp),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=dir_fd,
            )
            try:
                os.fchown(fd, uid, gid)
                try:
                    os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except FileExistsError:
                    pass  # made meanwhile by another start: append to that one
                else:
                    return fd
            except BaseException:
                os.close(fd)
                raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
            os.close(fd)
    return open_owned(anchor, parts, os.O_WRONLY | os.O_APPEND, uid)


# -- processes -----------------------------------------------------------------------------------


class Process:
    """A process held by a pidfd: signals reach it and no process that reuses its pid later.

    Where the kernel has no pidfds, the pid is used directly.
    """

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self.pid = pid
        self._pidfd = pidfd

    @classmethod
    def claim(cls, pid: int, belongs: Callable[[int], bool]) -> Process | None:
        """The live process ``pid`` if ``belongs(pid)``, checked after taking hold of it;
        None when it is gone or does not belong."""
        if not 0 < pid <= _PID_MAX:
            return None
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                return None
            pidfd = None  # no pidfds here (old kernel, or a sandbox forbids them)
        proc = cls(pid, pidfd)
        if proc.exited() or not belongs(pid):
            proc.close()
            return None
        return proc

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is None:
                os.kill(self.pid, sig)
            else:
                signal.pidfd_send_signal(self._pidfd, sig)

    def exited(self) -> bool:
        if self._pidfd is None:
            return not procfs.alive(self.pid)
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return bool(readable)

    def wait(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def stop(procs: list[Process], signals: tuple[tuple[int, float], ...], what: str) -> bool:
    """Send each signal in turn to the processes still running, waiting up to its timeout for
    all to exit; whether they did. Closes the processes."""
    try:
        for step, (sig, timeout) in enumerate(signals):
            running = [p for p in procs if not p.exited()]
            if not running:
                return True
            if step:
                LOG.warning(
                    "%s (pid %s) still running; sending %s",
                    what,
                    ", ".join(str(p.pid) for p in running),
                    signal.Signals(sig).name,
                )
            for proc in running:
                proc.signal(sig)
            deadline = time.monotonic() + timeout
            if all(p.wait(max(0.0, deadline - time.monotonic())) for p in running):
                return True
        return False
    finally:
        for proc in procs:
            proc.close()
