"""Server variables on a running MariaDB server: which take effect only at start, their
current values, and ``SET GLOBAL``, for the manager's ``apply_configuration``."""

from __future__ import annotations

from collections.abc import Iterable

import pymysql

from cove.common.errors import BadRequest, GuestError
from cove.domain.parameters import Value
from cove.guestagent.datastores.mariadb.conf import NAME
from cove.guestagent.datastores.mariadb.sql import ER_INCORRECT_GLOBAL_LOCAL_VAR, Connect, run


class LiveSettings:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def read_only(self, variables: Iterable[str]) -> set[str]:
        """Which of ``variables`` the running server takes only at start."""
        wanted = {v.lower() for v in variables}
        if not wanted:
            return set()
        rows = run(
            self._connect,
            "SELECT LOWER(VARIABLE_NAME) FROM information_schema.SYSTEM_VARIABLES "
            "WHERE READ_ONLY = 'YES'",
        )
        return {str(r[0]) for r in rows} & wanted

    def set_global(self, name: str, value: Value | None) -> bool:
        """Set ``name`` for the running server (``None``: back to its default); False when the
        server takes it only at start. Raises GuestError when the server refuses the value."""
        if not NAME.fullmatch(name):
            raise BadRequest(f"Invalid configuration parameter name '{name}'.")
        try:
            if value is None:
                run(self._connect, f"SET GLOBAL {name} = DEFAULT")
            else:
                run(self._connect, f"SET GLOBAL {name} = %s", [value])
        except GuestError as exc:
            cause = exc.__cause__
            if isinstance(cause, pymysql.MySQLError) and cause.args[0] in (
                ER_INCORRECT_GLOBAL_LOCAL_VAR,
            ):
                return False
            raise
        return True

    def global_values(self, variables: Iterable[str]) -> dict[str, str]:
        """The running server's values of ``variables``, as SHOW GLOBAL VARIABLES prints them."""
        wanted = {v.lower() for v in variables}
        rows = run(self._connect, "SHOW GLOBAL VARIABLES")
        return {str(r[0]): str(r[1]) for r in rows if str(r[0]) in wanted}
