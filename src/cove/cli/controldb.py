"""The control database as ``cove-manage`` reaches it: one that exists already.

SQLite would create an empty file wherever the settings point, so a command run with another
data directory than the Cove's (``make run`` keeps it in the clone's ``.cove``) would work on
a database of its own. Every command but ``db upgrade`` checks first that the file is there,
and says which path it tried, where the data directory came from and, when a Cove lives
elsewhere, how to reach it, instead of advising to create a second one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cove.common import datadir
from cove.common.settings import Settings

if TYPE_CHECKING:
    from cove.db.engine import Database


def sqlite_path(settings: Settings) -> Path | None:
    """The file of a SQLite control database; None for another database."""
    from cove.cli.bootstrap import sqlite_file

    return sqlite_file(settings.database_url)


def where(settings: Settings) -> str:
    """The control database as a message names it (never a URL: it may hold a password)."""
    path = sqlite_path(settings)
    return str(path) if path is not None else "COVE_DATABASE_URL"


def _origin(settings: Settings) -> str:
    if os.environ.get("COVE_DATA_DIR"):
        return "from COVE_DATA_DIR"
    if settings.data_dir == datadir.project_data_dir():
        return f"the {datadir.PROJECT_DIR} found from the current directory"
    if settings.data_dir == datadir.user_data_dir().expanduser().resolve():
        return "the default without COVE_DATA_DIR"
    return "from the settings"


def missing(settings: Settings) -> str | None:
    """None when the control database is there (or is no SQLite file: its server will say);
    otherwise the one-line error naming the path tried."""
    path = sqlite_path(settings)
    if path is None or path.is_file():
        return None
    text = (
        f"no control database at {path} (data directory {settings.data_dir}, {_origin(settings)})"
    )
    others = datadir.other_data_dirs(settings.data_dir)
    if others:
        found = others[0]
        return f"{text}; a Cove data directory is at {found}: run with COVE_DATA_DIR={found}"
    return (
        f"{text}; set COVE_DATA_DIR to your Cove's data directory (the 'Data:' line that "
        "'cove up' prints), or create a new control database there with 'cove-manage db upgrade'"
    )


def require(settings: Settings) -> None:
    """Raises click.ClickException (exit status 1) unless the control database exists."""
    problem = missing(settings)
    if problem is not None:
        raise click.ClickException(problem)


def existing(settings: Settings) -> Database:
    """The control database the settings name, which must exist already. Raises
    click.ClickException naming the path tried when it does not."""
    from cove.db.engine import Database

    require(settings)
    return Database(settings.database_url)


def not_usable(settings: Settings, reason: str) -> str:
    """The message for a control database that is there but cannot be used (an old schema,
    another program's file)."""
    return (
        f"the control database at {where(settings)} is not usable ({reason}); "
        "run 'cove-manage db upgrade' first"
    )
