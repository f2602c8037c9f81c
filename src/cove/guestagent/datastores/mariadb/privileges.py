"""What each account may do on a MariaDB instance: the privilege bits of the grant tables,
root's privileges, and the SQL the server runs at every start to put the agent's account back
and cut every other account down to root's privileges."""

from __future__ import annotations

import json
import re

from cove.guestagent.datastores.mariadb.conf import ADMIN_USER, REPLICATION_USER

#: The bit of each privilege in an account's ``access`` mask (``mysql.global_priv``), as
#: MariaDB 10.11 numbers them.
PRIVILEGE_BITS = {
    "SELECT": 1 << 0,
    "INSERT": 1 << 1,
    "UPDATE": 1 << 2,
    "DELETE": 1 << 3,
    "CREATE": 1 << 4,
    "DROP": 1 << 5,
    "RELOAD": 1 << 6,
    "SHUTDOWN": 1 << 7,
    "PROCESS": 1 << 8,
    "FILE": 1 << 9,
    "GRANT OPTION": 1 << 10,
    "REFERENCES": 1 << 11,
    "INDEX": 1 << 12,
    "ALTER": 1 << 13,
    "SHOW DATABASES": 1 << 14,
    "SUPER": 1 << 15,
    "CREATE TEMPORARY TABLES": 1 << 16,
    "LOCK TABLES": 1 << 17,
    "EXECUTE": 1 << 18,
    "REPLICATION SLAVE": 1 << 19,
    "BINLOG MONITOR": 1 << 20,
    "CREATE VIEW": 1 << 21,
    "SHOW VIEW": 1 << 22,
    "CREATE ROUTINE": 1 << 23,
    "ALTER ROUTINE": 1 << 24,
    "CREATE USER": 1 << 25,
    "EVENT": 1 << 26,
    "TRIGGER": 1 << 27,
    "CREATE TABLESPACE": 1 << 28,
    "DELETE HISTORY": 1 << 29,
    "SET USER": 1 << 30,
    "FEDERATED ADMIN": 1 << 31,
    "CONNECTION ADMIN": 1 << 32,
    "READ_ONLY ADMIN": 1 << 33,
    "REPLICATION SLAVE ADMIN": 1 << 34,
    "REPLICATION MASTER ADMIN": 1 << 35,
    "BINLOG ADMIN": 1 << 36,
    "BINLOG REPLAY": 1 << 37,
    "SLAVE MONITOR": 1 << 38,
}

#: What root holds on ``*.*``: seeing every database's name. No account administration (CREATE
#: USER, GRANT OPTION: users and grants go through Cove's API), no FILE (the host's files),
#: SUPER, SET USER (a definer other than itself), CONNECTION ADMIN (ending the agent's
#: sessions), RELOAD (FLUSH PRIVILEGES), PROCESS (other sessions' statements), SHUTDOWN,
#: CREATE TABLESPACE, FEDERATED ADMIN, READ_ONLY ADMIN, or replication and binary log control,
#: which Cove owns.
ROOT_GLOBAL_PRIVILEGES = ("SHOW DATABASES",)
#: What root holds on every database (``%``), without GRANT OPTION: the data and schema
#: privileges a tenant's DBA needs.
ROOT_DATABASE_PRIVILEGES = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EVENT",
    "TRIGGER",
    "DELETE HISTORY",
)
#: Root's rows for the server's own schemas. The server takes the first matching row of
#: ``mysql.db``, and a name without wildcards sorts before ``%``, so these replace, not add to,
#: :data:`ROOT_DATABASE_PRIVILEGES` there: root reads ``sys`` and ``performance_schema`` (whose
#: routines all run as their invoker) and holds on ``mysql`` only SHOW VIEW, which reads
#: nothing of its tables but keeps the row.
ROOT_SYSTEM_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "mysql": ("SHOW VIEW",),
    "sys": ("SELECT", "EXECUTE"),
    "performance_schema": ("SELECT",),
}
#: The most any account but the agent's may hold on ``*.*``: what root holds.
TENANT_ACCESS = sum(PRIVILEGE_BITS[p] for p in ROOT_GLOBAL_PRIVILEGES)
#: The most the replication account (``cove_replication``@``%``) holds on ``*.*``: reading the
#: binary log as a replica.
REPLICATION_ACCESS = PRIVILEGE_BITS["REPLICATION SLAVE"]
#: Every privilege there is: what the agent's account holds.
ALL_ACCESS = (1 << 64) - 1
#: The privilege columns of ``mysql.db``.
DB_PRIVILEGE_COLUMNS = (
    "Select_priv",
    "Insert_priv",
    "Update_priv",
    "Delete_priv",
    "Create_priv",
    "Drop_priv",
    "Grant_priv",
    "References_priv",
    "Index_priv",
    "Alter_priv",
    "Create_tmp_table_priv",
    "Lock_tables_priv",
    "Create_view_priv",
    "Show_view_priv",
    "Create_routine_priv",
    "Alter_routine_priv",
    "Execute_priv",
    "Event_priv",
    "Trigger_priv",
    "Delete_history_priv",
)


def startup_sql(admin_verifier: str) -> str:
    """The server's ``init_file``, run at every start before any client connects, with the
    grant tables as an account with more than the tenant's privileges (an older root, or what
    it made) may have left them: the agent's account is written back (its verifier, unlocked,
    every privilege); the replication account keeps on ``*.*`` only REPLICATION SLAVE, and
    every other account and role only what root holds;
    every row of ``mysql.db`` that reaches ``mysql`` through a wildcard is shadowed by an exact
    ``mysql`` row of the same account, and every exact row holds only SHOW VIEW; table and
    column grants on ``mysql`` go, but for the server's own ``mariadb.sys``; and no stored
    routine or event runs as the agent. None of it goes into the binary log: each server
    has its own agent password, and a replica would otherwise take its primary's. The server
    stops reading the file at the first failing statement (and starts all the same), so each
    statement only needs tables the server cannot start without, until the last two."""
    if not re.fullmatch(r"\*[0-9A-F]{40}", admin_verifier):
        raise ValueError("not a mysql_native_password verifier")
    priv = json.dumps(
        {
            "access": ALL_ACCESS,
            "plugin": "mysql_native_password",
            "authentication_string": admin_verifier,
        },
        separators=(",", ":"),
    )
    admin = f"User = '{ADMIN_USER}' AND Host = 'localhost'"
    replication = f"User = '{REPLICATION_USER}' AND Host = '%'"
    definer = f"'{ADMIN_USER}@localhost'"
    access = "CAST(JSON_VALUE(Priv, '$.access') AS UNSIGNED)"
    # What root holds on mysql (ROOT_SYSTEM_PRIVILEGES): SHOW VIEW only.
    read_only = ", ".join(
        f"{column} = '{'Y' if column == 'Show_view_priv' else 'N'}'"
        for column in DB_PRIVILEGE_COLUMNS
    )
    system = "Host = 'localhost' AND User = 'mariadb.sys'"
    # Fixed names, numbers and a hexadecimal verifier: nothing here comes from a request.
    statements = [
        "SET SESSION sql_log_bin = 0",
        "REPLACE INTO mysql.global_priv (Host, User, Priv) "  # noqa: S608 (no input)
        f"VALUES ('localhost', '{ADMIN_USER}', '{priv}')",
        f"UPDATE mysql.global_priv SET Priv = JSON_SET(Priv, '$.access', {access} & "  # noqa: S608
        f"{TENANT_ACCESS}) WHERE NOT ({admin}) AND NOT ({replication}) AND {access} IS NOT NULL",
        f"UPDATE mysql.global_priv SET Priv = JSON_SET(Priv, '$.access', {access} & "  # noqa: S608
        f"{REPLICATION_ACCESS}) WHERE {replication} AND {access} IS NOT NULL",
        "INSERT IGNORE INTO mysql.db (Host, Db, User) "
        "SELECT DISTINCT Host, 'mysql', User FROM mysql.db WHERE 'mysql' LIKE Db",
        f"UPDATE mysql.db SET {read_only} WHERE Db = 'mysql'",  # noqa: S608 (no input)
        f"DELETE FROM mysql.tables_priv WHERE Db = 'mysql' AND NOT ({system})",  # noqa: S608
        f"DELETE FROM mysql.columns_priv WHERE Db = 'mysql' AND NOT ({system})",  # noqa: S608
        "FLUSH PRIVILEGES",
        f"DELETE FROM mysql.proc WHERE definer = {definer}",  # noqa: S608 (no input)
        f"DELETE FROM mysql.event WHERE definer = {definer}",  # noqa: S608 (no input)
    ]
    return "".join(statement + ";\n" for statement in statements)
