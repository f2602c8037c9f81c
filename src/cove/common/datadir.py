"""Which data directory Cove uses when no setting names one, and where else one may be.

``make run`` keeps a clone's Cove in ``<clone>/.cove`` (it exports COVE_DATA_DIR). So that a
command typed by hand in the clone (``cove-manage``, ``cove up``) reaches the same Cove, the
default is the nearest ``.cove`` in the current directory or one of its parents that holds a
Cove (its control database or its token key) and belongs to the user running the command,
writable by no one else: a directory someone else made never decides where root's Cove
lives. Without one, the default is the user's own: ``/var/lib/cove`` for root,
``~/.local/share/cove`` for anyone else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The data directory ``make run`` keeps in a clone.
PROJECT_DIR = ".cove"


def user_data_dir() -> Path:
    """Root keeps Cove's state where the unprivileged service user can reach it; anyone else
    in their own home."""
    if os.geteuid() == 0:
        return Path("/var/lib/cove")
    return Path.home() / ".local" / "share" / "cove"


def holds_cove(path: Path) -> bool:
    """Whether ``path`` is a data directory Cove has set up."""
    return (path / "cove.sqlite").is_file() or (path / "identity" / "token.key").is_file()


def owned(path: Path) -> bool:
    """Whether ``path`` is a directory (not a link) of the user running this process that
    others cannot write to."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o002


def project_dirs(start: Path | None = None) -> list[Path]:
    """Every ``.cove`` holding a Cove in ``start`` (the current directory) and its parents,
    nearest first, whoever owns them."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the current directory was removed
        return []
    found = []
    for directory in (here, *here.parents):
        candidate = directory / PROJECT_DIR
        try:
            if candidate.is_dir() and holds_cove(candidate):
                found.append(candidate)
        except OSError:
            continue
    return found


def project_data_dir(start: Path | None = None) -> Path | None:
    """The nearest ``.cove`` of :func:`project_dirs` that is :func:`owned`, or None."""
    return next((d for d in project_dirs(start) if owned(d)), None)


def default_data_dir() -> Path:
    """The data directory when no setting names one (see the module's docstring)."""
    return project_data_dir() or user_data_dir()


def other_data_dirs(chosen: Path, start: Path | None = None) -> list[Path]:
    """Data directories holding a Cove besides ``chosen``, for a message that says where the
    Cove may be: the ``.cove`` directories from ``start`` (the current directory) up, and the
    user's default."""
    chosen = chosen.expanduser().resolve()
    seen: list[Path] = []
    for candidate in (*project_dirs(start), user_data_dir()):
        resolved = candidate.resolve()
        if resolved != chosen and resolved not in seen and holds_cove(resolved):
            seen.append(resolved)
    return seen
