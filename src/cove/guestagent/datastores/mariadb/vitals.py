"""A MariaDB server's vital signs (``DatabaseVitals``) from its global status: connections,
commits, rollbacks and statements (``Questions``), InnoDB's buffer pool reads and those that
went to disk, and on a replica ``Seconds_Behind_Master``."""

from __future__ import annotations

from typing import Any

from cove.domain.guest import DatabaseVitals

#: The global status variables read, in one statement.
NAMES = (
    "Threads_connected",
    "Com_commit",
    "Com_rollback",
    "Questions",
    "Innodb_buffer_pool_read_requests",
    "Innodb_buffer_pool_reads",
)


def read(conn: Any, replica: bool) -> DatabaseVitals:
    """Raises pymysql.Error when the server does not answer."""
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL STATUS WHERE Variable_name IN (" + ", ".join(["%s"] * len(NAMES)) + ")",
            list(NAMES),
        )
        found = {str(name): str(value) for name, value in cur.fetchall()}
        lag = None
        if replica:
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            if row is not None:
                columns = [d[0] for d in cur.description]
                lag = dict(zip(columns, row, strict=True)).get("Seconds_Behind_Master")
    requests, from_disk = _int(found, NAMES[4]), _int(found, NAMES[5])
    return DatabaseVitals(
        connections=_int(found, "Threads_connected"),
        commits=_int(found, "Com_commit"),
        rollbacks=_int(found, "Com_rollback"),
        operations=_int(found, "Questions"),
        cache_hits=None if requests is None or from_disk is None else requests - from_disk,
        cache_reads=requests,
        replication_lag_seconds=None if lag is None else float(lag),
    )


def _int(found: dict[str, str], name: str) -> int | None:
    value = found.get(name)
    return int(value) if value is not None and value.isdigit() else None
