"""Finding the real processes of a running Cove through /proc, for tests that kill them.

A process may end between the listing of /proc and the reading of its files: every read here
answers None for a process that went, never raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def read_proc(path: str) -> bytes | None:
    """A /proc file, or None when the process went meanwhile."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[bytes] | None:
    stat = read_proc(f"/proc/{pid}/stat")
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    return None if stat is None else stat[stat.rindex(b")") + 2 :].split()


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def state_of(pid: int) -> str | None:
    """The process's state letter (``Z`` for a zombie), None once it went."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[0].decode()


def pids(match: Callable[[list[str], int], bool]) -> list[int]:
    """Live processes whose argument list ``match(argv, pid)`` accepts."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        raw = read_proc(f"/proc/{entry.name}/cmdline")
        if not raw:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if match(argv, int(entry.name)):
            found.append(int(entry.name))
    return found
