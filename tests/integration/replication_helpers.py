"""Helpers shared by the replication integration tests (PostgreSQL, MariaDB, Redis): waiting for
a condition, a ``prepare`` asked again while a slow one runs, and looking for a secret in
every process's command line and environment, in an instance's files and in its logs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cove.common.errors import RpcTimeout
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient

__all__ = ["ProcWatch", "eventually", "files_holding", "logs", "prepare", "proc_texts"]

CTX = RequestContext()
#: Generous: the machine is shared, and a loaded one copies and replays slowly.
DEADLINE = 90.0


def eventually(
    check: Callable[[], bool], what: str, timeout: float = DEADLINE, interval: float = 0.05
) -> None:
    """Wait until ``check`` holds, asking again every ``interval`` seconds until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def prepare(guest: GuestClient, *args: Any, deadline: float = 180.0, **kwargs: Any) -> None:
    """``prepare``, asked again on RpcTimeout while a slow one runs, as the task manager does
    (each call waits 20 s; one asked again waits for the one under way), for up to
    ``deadline`` seconds."""
    until = time.monotonic() + deadline
    while True:
        try:
            guest.prepare(CTX, *args, **kwargs)
            return
        except RpcTimeout:
            if time.monotonic() > until:
                raise


def proc_texts() -> Iterator[tuple[int, str, bytes]]:
    """Every process's command line and environment, as (pid, which, bytes). A process may end
    between the listing and the read (its files vanish, or read as gone): it is skipped."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        for which in ("cmdline", "environ"):
            try:
                data = Path(entry.path, which).read_bytes()
            except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
                continue
            except PermissionError:  # another user's, in an unprivileged run (not the agents')
                continue
            yield int(entry.name), which, data


class ProcWatch:
    """Scans /proc in a thread until stopped, recording every process that shows one of
    ``secrets`` on its command line or in its environment."""

    def __init__(self, *secrets: str) -> None:
        self.needles = [s.encode() for s in secrets]
        self.found: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan()

    def scan(self) -> None:
        """One whole pass over /proc."""
        for pid, which, data in proc_texts():
            if any(n in data for n in self.needles):
                self.found.append(f"{pid} {which}: {data[:200]!r}")
        self.rounds += 1

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def files_holding(root: Path, needle: bytes) -> dict[Path, int]:
    """The files under ``root`` that hold ``needle``, with their modes."""
    found = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top, name)
            try:
                if path.is_file() and needle in path.read_bytes():  # not a socket
                    found[path] = path.stat().st_mode & 0o777
            except FileNotFoundError:  # the server removed it meanwhile
                continue
    return found


def logs(root: Path) -> list[Path]:
    """The log files under ``root``: those in a ``log`` directory, and any ``*.log``."""
    # os.walk, not rglob: a directory removed meanwhile (a spare place) is passed over.
    found = [Path(top, name) for top, _dirs, files in os.walk(root) for name in files]
    return [p for p in found if p.is_file() and ("log" in p.parts or p.suffix == ".log")]


def log_tails(*roots: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of every log under ``roots``, for a failure's message: what
    the servers and agents said is what tells a slow machine from a broken feature."""
    out = []
    for root in roots:
        for path in logs(root):
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            out.append(f"--- {path}\n" + "\n".join(tail))
    return "\n".join(out)
