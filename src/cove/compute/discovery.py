"""Finding the datastore binaries installed on this machine, for the local driver."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
#: The oldest PostgreSQL Cove manages: root's predefined roles (pg_read_all_data,
#: pg_write_all_data) arrived in 14.
MIN_POSTGRESQL = 14


@dataclass(frozen=True)
class FoundVersion:
    datastore: str
    name: str  # e.g. "15"
    version: str  # e.g. "15.18"
    bin_dir: str


def pg_version(bin_dir: Path) -> str | None:
    """The version of the PostgreSQL server in ``bin_dir``, or None when there is none."""
    postgres = bin_dir / "postgres"
    if not (postgres.is_file() and (bin_dir / "initdb").is_file()):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return match.group(0)


def find_postgresql(extra_dirs: list[Path] | None = None) -> list[FoundVersion]:
    """Every PostgreSQL server found: Debian's versioned directories, ``pg_config --bindir``
    and any ``extra_dirs``; one entry per major version (the first found wins)."""
    candidates: list[Path] = []
    if PG_ROOT.is_dir():
        candidates += sorted(p / "bin" for p in PG_ROOT.iterdir() if (p / "bin").is_dir())
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(bindir))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += extra_dirs or []
    found: dict[str, FoundVersion] = {}
    for bin_dir in candidates:
        version = pg_version(bin_dir.resolve())
        if version is None:
            continue
        major = version.split(".")[0]
        if int(major) < MIN_POSTGRESQL:
            LOG.warning(
                "PostgreSQL %s at %s is too old for Cove (%d or newer); skipped",
                version,
                bin_dir,
                MIN_POSTGRESQL,
            )
            continue
        found.setdefault(major, FoundVersion("postgresql", major, version, str(bin_dir.resolve())))
    return sorted(found.values(), key=lambda v: int(v.name))


#: The oldest Redis Cove manages: its configuration turns off DEBUG, MODULE and protected
#: configs, which 7.0 introduced.
MIN_REDIS = (7, 0)


def redis_version(server: Path) -> str | None:
    """The version of the Redis server binary ``server`` (``7.0.15``), or None."""
    if not server.is_file():
        return None
    try:
        out = subprocess.run(
            [str(server), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return ".".join(match.groups()) if match else None


def find_redis(extra: list[Path] | None = None) -> list[FoundVersion]:
    """The first ``redis-server`` on ``PATH`` (and ``extra`` binaries, each named
    ``redis-server``): one entry per major.minor version (the first found wins), named like
    ``7.0``."""
    candidates = [Path(p) for p in (shutil.which("redis-server"),) if p]
    candidates += extra or []
    return _by_minor_version("redis", "Redis", candidates, redis_version, MIN_REDIS)


#: The oldest MariaDB Cove manages: the oldest long-term release still maintained, and the
#: first with the grant tables (mysql.global_priv) the guest agent writes at installation.
MIN_MARIADB = (10, 6)
MARIADB_SBIN = Path("/usr/sbin/mariadbd")


def mariadb_version(server: Path) -> str | None:
    """The version of the MariaDB server binary ``server`` (``10.11.6``), or None when it is
    missing or mariadb-install-db does not go with it."""
    if not server.is_file() or mariadb_install_db(server.parent) is None:
        return None
    try:
        out = subprocess.run(
            [str(server), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Ver (\d+)\.(\d+)\.(\d+)", out)
    return ".".join(match.groups()) if match else None


def mariadb_install_db(bin_dir: Path) -> Path | None:
    """The mariadb-install-db beside a server's directory (Debian: the server in sbin, the
    script in bin), else the first on ``PATH``."""
    for candidate in (bin_dir, bin_dir.parent / "bin"):
        candidate = candidate / "mariadb-install-db"
        if candidate.is_file():
            return candidate
    found = shutil.which("mariadb-install-db")
    return Path(found) if found else None


def find_mariadb(extra: list[Path] | None = None) -> list[FoundVersion]:
    """``/usr/sbin/mariadbd``, the first ``mariadbd`` on ``PATH`` and ``extra`` binaries: one
    entry per major.minor version (the first found wins), named like ``10.11``; ``bin_dir`` is
    the directory holding mariadbd."""
    candidates = [MARIADB_SBIN]
    candidates += [Path(p) for p in (shutil.which("mariadbd"),) if p]
    candidates += extra or []
    return _by_minor_version("mariadb", "MariaDB", candidates, mariadb_version, MIN_MARIADB)


def _by_minor_version(
    datastore: str,
    title: str,
    servers: list[Path],
    version_of: Callable[[Path], str | None],
    minimum: tuple[int, int],
) -> list[FoundVersion]:
    """One version per major.minor (the first server found wins), named like ``7.0``, among
    ``servers`` new enough; ``bin_dir`` is the directory holding the server."""
    found: dict[str, FoundVersion] = {}
    for server in servers:
        # Only the directory is resolved: Debian's redis-server is a link to a binary that
        # acts by the name it is called by.
        server = server.parent.resolve() / server.name
        version = version_of(server)
        if version is None:
            continue
        major, minor = (int(p) for p in version.split(".")[:2])
        if (major, minor) < minimum:
            LOG.warning(
                "%s %s at %s is too old for Cove (%d.%d or newer); skipped",
                title,
                version,
                server,
                *minimum,
            )
            continue
        name = f"{major}.{minor}"
        found.setdefault(name, FoundVersion(datastore, name, version, str(server.parent)))
    return sorted(found.values(), key=lambda v: tuple(int(p) for p in v.name.split(".")))


def version_in(datastore: str, name: str, bin_dir: Path) -> FoundVersion:
    """The server of ``datastore`` in ``bin_dir``, as a version named ``name``: what an operator
    registers by hand. Raises ValueError saying what is missing, unknown or too old."""
    bin_dir = bin_dir.resolve()  # the directory only: a binary may act by its own name
    minimum: tuple[int, ...]
    if datastore == "postgresql":
        number, needs, minimum = pg_version(bin_dir), "postgres and initdb", (MIN_POSTGRESQL,)
    elif datastore == "mariadb":
        number = mariadb_version(bin_dir / "mariadbd")
        needs, minimum = "mariadbd, with mariadb-install-db beside it or on PATH", MIN_MARIADB
    elif datastore == "redis":
        number, needs, minimum = redis_version(bin_dir / "redis-server"), "redis-server", MIN_REDIS
    else:
        raise ValueError(
            f"unknown datastore '{datastore}' (Cove manages mariadb, postgresql, redis)"
        )
    if number is None:
        raise ValueError(f"no {datastore} server ({needs}) in {bin_dir}")
    parts = tuple(int(p) for p in number.split(".")[: len(minimum)])
    if parts < minimum:
        oldest = ".".join(str(p) for p in minimum)
        raise ValueError(f"{datastore} {number} is too old: Cove needs {oldest} or newer")
    return FoundVersion(datastore, name, number, str(bin_dir))
