"""Statements on a running MariaDB server as the agent's account, and how MariaDB names things.

:func:`run` maps the server's refusals to Cove's errors; the other functions are the naming
rules (quoting, grant patterns, Trove's character set names, which account a session belongs
to) and the checks and clean-ups more than one admin step needs. Values travel as query
parameters; identifiers are checked against Cove's naming rules before they are quoted.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import pymysql

from cove.common.errors import BadRequest, DatabaseAlreadyExists, GuestError
from cove.domain import names
from cove.domain.specs import DatabaseSpec

Connect = Callable[[], "pymysql.connections.Connection[pymysql.cursors.Cursor]"]
Rows = list[tuple[object, ...]]

# Server error numbers the tenant's requests can cause.
ER_DB_CREATE_EXISTS = 1007
ER_UNKNOWN_CHARACTER_SET = 1115
ER_COLLATION_CHARSET_MISMATCH = 1253
ER_UNKNOWN_COLLATION = 1273
ER_INCORRECT_GLOBAL_LOCAL_VAR = 1238
ER_WRONG_VALUE_FOR_VAR = 1231
ER_WRONG_TYPE_FOR_VAR = 1232
#: A change in a session whose transactions are read-only: the agent's sessions on a replica.
ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792

#: What a replica answers to a change.
READ_ONLY = "This instance is a read-only replica"
#: What a change asked of a replica's agent answers: the agent's account could write past
#: ``read_only``, and a write of a replica's own stops its replication (``gtid_strict_mode``).
REFUSED_ON_REPLICA = f"{READ_ONLY}: change databases, users and root on its primary."


def run(connect: Connect, query: str, params: Sequence[object] | None = None) -> Rows:
    """One statement as the agent's account. Raises the Cove error for the tenant's mistakes,
    GuestError for the server's refusals (and for a change asked of a replica)."""
    try:
        with connect() as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        message = str(exc.args[-1]) if exc.args else type(exc).__name__
        if code == ER_DB_CREATE_EXISTS:
            raise DatabaseAlreadyExists(message) from exc
        if code == ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION:
            raise GuestError(REFUSED_ON_REPLICA) from exc
        if code in (
            ER_UNKNOWN_CHARACTER_SET,
            ER_UNKNOWN_COLLATION,
            ER_COLLATION_CHARSET_MISMATCH,
        ):
            raise BadRequest(message) from exc
        raise GuestError(f"MariaDB refused the request: {message}") from exc


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def grant_pattern(database: str) -> str:
    """A database as GRANT names it: ``_`` and ``%`` are wildcards there, so they are escaped
    and a grant on ``a_b`` never reaches ``axb``."""
    return quote_name(database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def from_pattern(stored: str) -> str:
    """A database name as mysql.db stores a grant's pattern, unescaped."""
    return stored.replace("\\_", "_").replace("\\%", "%").replace("\\\\", "\\")


def server_encoding(name: str | None) -> str | None:
    """A character set or collation as the server lists it: Trove's ``utf8`` and its
    ``utf8_*`` collations are the three-byte ``utf8mb3`` of MariaDB, which information_schema
    names only so."""
    if name is None:
        return None
    lowered = name.lower()
    if lowered == "utf8":
        return "utf8mb3"
    if lowered.startswith("utf8_"):
        return "utf8mb3_" + name[len("utf8_") :]
    return name


def check_encoding(connect: Connect, db: DatabaseSpec) -> DatabaseSpec:
    """``db`` with its character set and collation as the server names them. Raises
    BadRequest unless they are ones the server knows, and agree."""
    charset = server_encoding(db.character_set)
    collate = server_encoding(db.collate)
    db = replace(db, character_set=charset, collate=collate)
    known = (
        charset
        and names.ENCODING.fullmatch(charset)
        and run(
            connect,
            "SELECT 1 FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = %s",
            [charset],
        )
    )
    if charset and not known:
        raise BadRequest(
            f"Unknown character set '{charset}' for database {db.name}; "
            "SHOW CHARACTER SET lists those the server knows (e.g. utf8mb4)."
        )
    if db.collate:
        rows = (
            run(
                connect,
                "SELECT CHARACTER_SET_NAME FROM information_schema.COLLATIONS "
                "WHERE COLLATION_NAME = %s",
                [db.collate],
            )
            if names.ENCODING.fullmatch(db.collate)
            else []
        )
        if not rows:
            raise BadRequest(
                f"Unknown collation '{db.collate}' for database {db.name}; "
                "SHOW COLLATION lists those the server knows (e.g. utf8mb4_general_ci)."
            )
        if charset and str(rows[0][0]).lower() != charset.lower():
            raise BadRequest(
                f"Collation '{db.collate}' is not one of character set '{charset}' "
                f"(database {db.name})."
            )
    return db


def account_owns(pattern: str, others: Iterable[str], client: str) -> bool:
    """Whether a session from ``client`` (PROCESSLIST's host, ``address:port`` or
    ``localhost``) logged in as the account of host ``pattern`` rather than as one of
    ``others`` of the same name: the server takes the most specific matching host, an exact
    one before any pattern, then the longest text before the first wildcard."""
    host = client
    head, sep, tail = client.rpartition(":")
    if sep and tail.isdigit():
        host = head.strip("[]")

    def matches(candidate: str) -> bool:
        regex = ""
        escaped = False
        for ch in candidate:
            if escaped:
                regex += re.escape(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "%":
                regex += ".*"
            elif ch == "_":
                regex += "."
            else:
                regex += re.escape(ch)
        return re.fullmatch(regex, host, re.IGNORECASE | re.DOTALL) is not None

    def rank(candidate: str) -> tuple[int, int]:
        wild = [i for i, ch in enumerate(candidate) if ch in "%_"]
        return (0, wild[0]) if wild else (1, len(candidate))

    found = [h for h in {pattern, *others} if matches(h)]
    return bool(found) and max(found, key=rank) == pattern


def end_sessions(connect: Connect, name: str, host: str) -> None:
    """End the sessions of the account ``name``@``host``, not those of another account of
    the same name (another host)."""
    others = [
        str(r[0])
        for r in run(connect, "SELECT Host FROM mysql.user WHERE User = %s", [name])
        if str(r[0]) != host
    ]
    rows = run(
        connect,
        "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> "
        "CONNECTION_ID()",
        [name],
    )
    for session, client in rows:
        if not account_owns(host, others, str(client)):
            continue
        with contextlib.suppress(GuestError):  # it may have ended meanwhile
            run(connect, "KILL CONNECTION %s", [int(str(session))])
