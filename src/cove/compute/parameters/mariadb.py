"""The configuration parameters of a MariaDB version, read from the server itself.

A throw-away server (an empty data directory, no grant tables, a unix socket in a private
temporary directory, no network) answers ``information_schema.SYSTEM_VARIABLES``; it takes well
under a second. A variable enters the catalogue when my.cnf can set it (``mariadbd --help``
lists it as an option), it is not session-only and the deny-list lets tenants set it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from cove.common.errors import CommandFailed
from cove.domain.parameters import Parameter, ParamType, denied

START_TIMEOUT = 30.0

_INTEGER_TYPES = {"INT", "BIGINT", "INT UNSIGNED", "BIGINT UNSIGNED"}
_QUERY = (
    "SELECT LOWER(VARIABLE_NAME), VARIABLE_TYPE, NUMERIC_MIN_VALUE, NUMERIC_MAX_VALUE, "
    "ENUM_VALUE_LIST, READ_ONLY FROM information_schema.SYSTEM_VARIABLES "
    "WHERE VARIABLE_SCOPE <> 'SESSION ONLY' ORDER BY VARIABLE_NAME"
)


def read_parameters(bin_dir: str) -> list[Parameter]:
    """The catalogue of the mariadbd in ``bin_dir``, sorted by name. Raises CommandFailed when
    the server cannot be run or does not answer."""
    server = Path(bin_dir) / "mariadbd"
    options = option_names(server)
    with tempfile.TemporaryDirectory(prefix="cove-mariadb-params-") as tmp:
        rows = _query_throwaway(server, Path(tmp))
    params = (to_parameter(row) for row in rows)
    return [p for p in params if p.name in options and not denied("mariadb", p.name)]


def option_names(server: Path) -> set[str]:
    """The variables ``server`` takes as options (my.cnf can set them), with underscores."""
    try:
        out = subprocess.run(
            [str(server), "--no-defaults", "--verbose", "--help", *_user_option()],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise CommandFailed(f"cannot list the options of {server}: {exc}") from exc
    _, _, table = out.partition("Variables (--variable-name=value)")
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        word = line.split(" ", 1)[0]
        if word:
            names.add(word.replace("-", "_"))
    return names


def to_parameter(row: tuple[object, ...]) -> Parameter:
    """One row of SYSTEM_VARIABLES as a catalogue entry (the deny-list is not consulted)."""
    name, vtype, low, high, enum, read_only = row
    kind = str(vtype)
    restart = str(read_only) == "YES"
    if kind == "BOOLEAN":
        return Parameter(str(name), ParamType.BOOLEAN, restart)
    if kind in _INTEGER_TYPES:
        return Parameter(
            str(name), ParamType.INTEGER, restart, _number(low, int), _number(high, int)
        )
    if kind == "DOUBLE":
        return Parameter(
            str(name), ParamType.FLOAT, restart, _number(low, float), _number(high, float)
        )
    allowed = tuple(str(enum).split(",")) if kind == "ENUM" and enum else None
    return Parameter(str(name), ParamType.STRING, restart, allowed=allowed)


def _number(text: object, kind: type[int] | type[float]) -> int | float | None:
    if text is None:
        return None
    try:
        return kind(float(str(text))) if kind is float else int(str(text))
    except ValueError:
        return None


def _user_option() -> list[str]:
    # mariadbd refuses to run as root unless told which user to be.
    if os.geteuid() != 0:
        return []
    return [f"--user={pwd.getpwuid(os.geteuid()).pw_name}"]


def _query_throwaway(server: Path, tmp: Path) -> list[tuple[object, ...]]:
    data = tmp / "data"
    data.mkdir()
    sock = tmp / "mariadb.sock"
    argv = [
        str(server),
        "--no-defaults",
        *_user_option(),
        f"--datadir={data}",
        f"--tmpdir={tmp}",
        f"--socket={sock}",
        f"--pid-file={tmp / 'mariadbd.pid'}",
        f"--log-error={tmp / 'error.log'}",
        "--skip-networking",
        "--skip-grant-tables",
        "--innodb-buffer-pool-size=8M",
        "--innodb-log-file-size=4M",
    ]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=data,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(f"cannot start {server}: {exc.strerror}") from exc
    try:
        conn = _connect(proc, sock, tmp / "error.log")
        with conn, conn.cursor() as cur:
            cur.execute(_QUERY)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def _connect(
    proc: subprocess.Popen[bytes], sock: Path, log: Path
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = ""
            with contextlib.suppress(OSError):
                tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
            raise CommandFailed(f"mariadbd exited with status {proc.returncode}: {tail}")
        if sock.exists():
            with contextlib.suppress(pymysql.MySQLError):
                return pymysql.connect(
                    unix_socket=str(sock), user="root", connect_timeout=5, ssl_disabled=True
                )
        if time.monotonic() > deadline:
            raise CommandFailed(f"mariadbd did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.02)
