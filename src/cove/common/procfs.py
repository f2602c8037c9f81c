"""Reading other processes from /proc: whether they live, who runs them, what they run.

Shared by the control plane (the local driver checks a pid before it signals it) and the guest
agent (which watches and adopts its database server); nothing here changes anything.
"""

from __future__ import annotations

import os
from pathlib import Path


def uids(pid: int) -> tuple[int, ...]:
    """The real, effective, saved and filesystem uids of ``pid`` (none once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return tuple(int(field) for field in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def owned_by(pid: int, uid: int) -> bool:
    """Whether every uid of ``pid`` (real, effective, saved, filesystem) is ``uid``."""
    found = uids(pid)
    return bool(found) and all(u == uid for u in found)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")]


def cwd_is(pid: int, directory: os.stat_result) -> bool:
    """Whether the working directory of ``pid`` is ``directory`` (same device and inode)."""
    try:
        st = os.stat(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (directory.st_dev, directory.st_ino)


def processes_with_arg(uid: int, arg: str) -> list[int]:
    """The pids of ``uid``'s processes that have ``arg`` among their arguments."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            pid = int(entry.name)
            if owned_by(pid, uid) and arg in cmdline(pid):
                found.append(pid)
    return found


def processes_of(uid: int) -> list[int]:
    """The pids of the processes whose real, effective or saved uid is ``uid`` (from their
    status: /proc/<pid> itself is root's for a process that is not dumpable)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and uid in uids(int(entry.name))[:3]:
            found.append(int(entry.name))
    return found


def working_in(uid: int, directory: os.stat_result) -> list[int]:
    """The pids of the processes run by ``uid`` (effective) whose working directory is
    ``directory``; a process that exits while the list is made is left out."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid> belongs to the process's effective user: one stat, no file to read.
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        if cwd_is(int(entry.name), directory):
            found.append(int(entry.name))
    return found


def parent(pid: int) -> int | None:
    """The parent of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """The live children of ``pid``, theirs, and so on (one pass over /proc; a process that
    exits meanwhile is left out)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = parent(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found
