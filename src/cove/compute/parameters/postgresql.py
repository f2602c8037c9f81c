"""The catalogue of a PostgreSQL version, read from its own ``postgres`` binary.

``postgres --describe-config`` lists every setting a configuration file may hold, with its
context, type and bounds, without a running server (and even as root). It does not list the
values an enumerated setting accepts: those come from ``pg_settings.enumvals`` of a throw-away
data directory queried in single-user mode (no socket, no port), which costs one ``initdb``
(about half a second) when the version is registered. When that step fails, enumerated settings
are still offered, as strings without a list of values.

Values in a configuration group are plain numbers in the setting's base unit, as
``postgres --describe-config`` gives its bounds: ``work_mem = 4096`` is 4096 kB,
``shared_buffers = 16384`` is 16384 pages of 8 kB. A setting of context ``postmaster`` takes a
restart; ``sighup``, ``superuser``, ``user`` and the ``backend`` contexts take a reload (the
backend ones in new sessions); ``internal`` settings cannot be set and are left out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cove.common.service_user import ServiceUser, service_user
from cove.domain.parameters import Parameter, ParamType, denied

LOG = logging.getLogger(__name__)

#: Contexts whose settings take effect without a restart.
_DYNAMIC = frozenset({"sighup", "user", "superuser", "superuser-backend", "backend"})
_TYPES = {
    "BOOLEAN": ParamType.BOOLEAN,
    "INTEGER": ParamType.INTEGER,
    "REAL": ParamType.FLOAT,
    "STRING": ParamType.STRING,
    "ENUM": ParamType.STRING,
}
_TIMEOUT = 60.0
#: Written to a file (``{path}``): single-user mode mixes its prompt into standard output.
_ENUM_QUERY = (
    "COPY (SELECT s.name, v FROM pg_settings s, unnest(s.enumvals) WITH ORDINALITY AS e(v, n) "
    "WHERE s.vartype = 'enum' ORDER BY s.name, e.n) TO '{path}';\n"
)


def read_parameters(bin_dir: str) -> list[Parameter]:
    """The settings tenants may set on the PostgreSQL whose binaries are in ``bin_dir``.

    Raises OSError or subprocess.CalledProcessError when ``postgres`` cannot describe its
    settings; a failure to read enumerated values is only logged.
    """
    started = time.monotonic()
    described = _describe_config(Path(bin_dir))
    enums: dict[str, tuple[str, ...]] = {}
    if any(fields[3] == "ENUM" for fields in described):
        try:
            enums = read_enum_values(Path(bin_dir))
        except (OSError, subprocess.SubprocessError) as exc:
            LOG.warning("could not read the values of PostgreSQL's enumerated settings: %s", exc)
    params = [p for fields in described if (p := _parameter(fields, enums)) is not None]
    params = [_startable(p) for p in params]
    LOG.debug("read %d PostgreSQL parameters in %.2f s", len(params), time.monotonic() - started)
    return params


def _describe_config(bin_dir: Path) -> list[list[str]]:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--describe-config"],
        capture_output=True,
        text=True,
        check=True,
        timeout=_TIMEOUT,
        env=_env(),
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.count("\t") >= 6]


#: Connection slots PostgreSQL keeps for superusers (its default, which tenants cannot change:
#: superuser_reserved_connections is denied).
_RESERVED_FOR_SUPERUSERS = 3


def _startable(param: Parameter) -> Parameter:
    """``param`` with the bounds a server start needs, where they are tighter than the ones the
    setting states: PostgreSQL refuses to start unless max_connections exceeds the connections
    reserved for superusers."""
    if param.name != "max_connections":
        return param
    return dataclasses.replace(param, min=max(int(param.min or 1), _RESERVED_FOR_SUPERUSERS + 1))


def _parameter(fields: list[str], enums: dict[str, tuple[str, ...]]) -> Parameter | None:
    name, context, _group, kind, _default, low, high = fields[:7]
    ptype = _TYPES.get(kind)
    if ptype is None or context == "internal" or denied("postgresql", name):
        return None
    restart = context not in _DYNAMIC
    if ptype is ParamType.INTEGER:
        return Parameter(name, ptype, restart, _number(low, int), _number(high, int))
    if ptype is ParamType.FLOAT:
        return Parameter(name, ptype, restart, _number(low, float), _number(high, float))
    if kind == "ENUM":
        return Parameter(name, ptype, restart, allowed=enums.get(name.lower()))
    return Parameter(name, ptype, restart)


def _number(text: str, kind: type[int] | type[float]) -> int | float | None:
    try:
        return kind(text) if text else None
    except ValueError:
        return None


def read_enum_values(bin_dir: Path) -> dict[str, tuple[str, ...]]:
    """Lower-cased setting name -> the values it accepts, from ``pg_settings`` of a throw-away
    data directory in a private temporary directory (removed afterwards). As root, the
    binaries run as the service user, since PostgreSQL refuses root.

    Raises OSError or subprocess.SubprocessError when initdb or the query fails.
    """
    user = _runner()
    tmp = Path(tempfile.mkdtemp(prefix="cove-pgparams-"))
    try:
        if user is not None:
            os.chown(tmp, user.uid, user.gid)
        data, out = tmp / "data", tmp / "enums.tsv"
        _run_as(
            user,
            [
                bin_dir / "initdb",
                *("-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"),
                *("--no-locale", "--no-sync", "--no-instructions"),
            ],
            cwd=tmp,
        )
        query = _ENUM_QUERY.format(path=str(out).replace("'", "''"))
        _run_as(
            user,
            [bin_dir / "postgres", "--single", "-D", data, "-c", "fsync=off", "postgres"],
            cwd=tmp,
            stdin=query,
        )
        values: dict[str, list[str]] = {}
        for line in out.read_text().splitlines():
            name, _, value = line.partition("\t")
            values.setdefault(name.lower(), []).append(value)
        return {name: tuple(vals) for name, vals in values.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _runner() -> ServiceUser | None:
    """The user to run PostgreSQL as: the service user when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    return service_user(os.environ.get("COVE_SERVICE_USER", "cove"))


def _run_as(user: ServiceUser | None, argv: list[str | Path], cwd: Path, stdin: str = "") -> None:
    subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=_TIMEOUT,
        cwd=cwd,
        env=_env(),
        user=user.uid if user else None,
        group=user.gid if user else None,
        extra_groups=[] if user else None,
    )


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
