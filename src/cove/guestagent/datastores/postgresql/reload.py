"""Making a running PostgreSQL server read its configuration files again, and asking it what
came of it.

PostgreSQL's own views answer: ``pg_file_settings`` lists the lines of the files it could not
apply, and ``pg_settings.pending_restart`` the settings whose new value waits for a restart. A
line that could not be applied and is not waiting for a restart holds a value the server
refused; the server log says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cove.common.errors import GuestError

RELOAD_TIMEOUT = 10.0


@dataclass(frozen=True)
class ReloadResult:
    #: Settings whose new value takes effect only after a restart.
    pending_restart: tuple[str, ...]
    #: Settings whose value the server refused, each with the server's reason.
    rejected: tuple[tuple[str, str], ...]


def reload(connect: Callable[..., psycopg.Connection], log_file: Path) -> ReloadResult:
    """Signal the server to read its files, wait until it has, and report the outcome.

    Raises GuestError when the server cannot be reached or does not reload in time.
    """
    try:
        with connect() as conn:
            before = _scalar(conn, "SELECT pg_conf_load_time()")
            conn.execute("SELECT pg_reload_conf()")
            _wait_reloaded(conn, before)
            pending = [
                str(row[0])
                for row in conn.execute(
                    "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name"
                )
            ]
            failed = [
                str(row[0])
                for row in conn.execute(
                    # A line the server could not even parse has no name: name its place.
                    # A setting taken out of the file that only a restart can reset is
                    # recorded with neither name nor place: pending_restart covers it.
                    "SELECT DISTINCT coalesce(name, sourcefile || ':' || sourceline) "
                    "FROM pg_file_settings WHERE error IS NOT NULL "
                    "AND (name IS NOT NULL OR sourcefile IS NOT NULL) ORDER BY 1"
                )
            ]
    except psycopg.Error as exc:
        raise GuestError(f"cannot reload the PostgreSQL configuration: {exc}") from exc
    waiting = {name.lower() for name in pending}
    rejected = tuple(
        (name, _reason(log_file, name)) for name in failed if name.lower() not in waiting
    )
    return ReloadResult(tuple(pending), rejected)


def _scalar(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def _wait_reloaded(conn: psycopg.Connection, before: object) -> None:
    """This session has read the files again once its load time moves (the postmaster
    passes the signal on to every session, which takes it before its next statement)."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while _scalar(conn, "SELECT pg_conf_load_time()") == before:
        if time.monotonic() > deadline:
            raise GuestError(
                f"PostgreSQL did not reload its configuration within {RELOAD_TIMEOUT:.0f} s"
            )
        time.sleep(0.005)


def _reason(log_file: Path, name: str) -> str:
    """The server's last log message about ``name`` (and its detail line), or a stand-in."""
    try:
        with log_file.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    needle = f'parameter "{name}"'.lower()
    for i in range(len(lines) - 1, -1, -1):
        if needle in lines[i].lower():
            message = _message(lines[i])
            if i + 1 < len(lines) and "DETAIL:" in lines[i + 1]:
                message += " " + _message(lines[i + 1])
            return message
    return "the server refused the value"


def _message(line: str) -> str:
    for tag in ("LOG:", "ERROR:", "DETAIL:", "WARNING:", "FATAL:"):
        if tag in line:
            return line.split(tag, 1)[1].strip()
    return line.strip()
