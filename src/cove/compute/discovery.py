"""Finding the datastore servers installed on this machine, for the local driver.

What differs between datastores (the binaries a server needs, the oldest version Cove manages,
which probe below tells a server's version) is in each datastore's descriptor
(``cove.domain.datastores``). This module holds the probes and finders the descriptors name and
the rules they share: a version is named by as many numbers as its datastore's minimum has
(PostgreSQL "15", MariaDB "10.11"), the first server found of each name wins, and a server
older than the minimum is skipped with a warning.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from cove.domain import datastores
from cove.domain.datastores import Datastore, FoundVersion, UnknownDatastore

__all__ = [
    "FoundVersion",
    "find_mariadb",
    "find_postgresql",
    "find_redis",
    "found_in",
    "mariadb_install_db",
    "mariadb_version",
    "pg_version",
    "redis_version",
    "version_in",
]

LOG = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
MARIADB_SBIN = Path("/usr/sbin/mariadbd")


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
    return found_in(datastores.datastore("postgresql"), candidates)


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
    ``7.0``; ``bin_dir`` is the directory holding redis-server."""
    servers = [Path(p) for p in (shutil.which("redis-server"),) if p]
    servers += extra or []
    return found_in(datastores.datastore("redis"), [server.parent for server in servers])


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
    servers = [MARIADB_SBIN]
    servers += [Path(p) for p in (shutil.which("mariadbd"),) if p]
    servers += extra or []
    return found_in(datastores.datastore("mariadb"), [server.parent for server in servers])


def found_in(datastore: Datastore, bin_dirs: Iterable[Path]) -> list[FoundVersion]:
    """The servers of ``datastore`` in ``bin_dirs`` new enough for Cove, one per version name
    (the first found wins), oldest first."""
    found: dict[str, FoundVersion] = {}
    for bin_dir in bin_dirs:
        # Only the directory is resolved: Debian's redis-server is a link to a binary that
        # acts by the name it is called by.
        bin_dir = bin_dir.resolve()
        number = datastore.server_version(bin_dir)
        if number is None:
            continue
        if not datastore.supported(number):
            LOG.warning(
                "%s %s at %s is too old for Cove (%s or newer); skipped",
                datastore.title,
                number,
                bin_dir,
                datastore.oldest,
            )
            continue
        name = datastore.version_name(number)
        found.setdefault(name, FoundVersion(datastore.name, name, number, str(bin_dir)))
    return sorted(found.values(), key=lambda v: tuple(int(p) for p in v.name.split(".")))


def version_in(datastore: str, name: str, bin_dir: Path) -> FoundVersion:
    """The server of ``datastore`` in ``bin_dir``, as a version named ``name``: what an operator
    registers by hand. Raises ValueError saying what is missing, unknown or too old."""
    try:
        known = datastores.datastore(datastore)
    except UnknownDatastore as exc:
        raise ValueError(str(exc)) from None
    bin_dir = bin_dir.resolve()  # the directory only: a binary may act by its own name
    number = known.server_version(bin_dir)
    if number is None:
        raise ValueError(f"no {known.name} server ({known.needs}) in {bin_dir}")
    if not known.supported(number):
        raise ValueError(f"{known.name} {number} is too old: Cove needs {known.oldest} or newer")
    return FoundVersion(known.name, name, number, str(bin_dir))
