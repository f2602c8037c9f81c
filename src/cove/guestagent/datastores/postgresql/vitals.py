"""A PostgreSQL server's vital signs (``DatabaseVitals``), in one query over the agent's
connection: client connections, transactions and cache reads summed over every database
(``pg_stat_database``), and a replica's delay behind its source."""

from __future__ import annotations

from typing import Any

from cove.domain.guest import DatabaseVitals

#: A replica whose replay caught up with what it received is not behind, however long ago its
#: source last wrote; otherwise it is as far behind as the last transaction it replayed.
QUERY = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
  sum(xact_commit), sum(xact_rollback), sum(blks_hit), sum(blks_hit + blks_read),
  CASE
    WHEN NOT pg_is_in_recovery() THEN NULL
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
  END
FROM pg_stat_database
"""


def read(conn: Any) -> DatabaseVitals:
    """Raises psycopg.Error when the server does not answer."""
    row = conn.execute(QUERY).fetchone()
    connections, commits, rollbacks, hits, reads, lag = row
    return DatabaseVitals(
        connections=int(connections),
        commits=_int(commits),
        rollbacks=_int(rollbacks),
        cache_hits=_int(hits),
        cache_reads=_int(reads),
        replication_lag_seconds=None if lag is None else max(0.0, float(lag)),
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
