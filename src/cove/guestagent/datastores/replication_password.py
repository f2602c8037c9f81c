"""The password of a primary's replication account, the same in every datastore: made once at
random and kept beside the server's configuration (mode 0600), so every ``source`` answers the
same one and a restarted agent knows it."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from cove.common.errors import GuestError

LOG = logging.getLogger(__name__)


def recorded_password(path: Path) -> str:
    """The password recorded at ``path``, or a new one recorded there first (written to a
    temporary file of mode 0600 and renamed, so no reader sees half of it). Raises GuestError
    when the file cannot be read or written."""
    try:
        known = path.read_text().strip()
    except FileNotFoundError:
        known = ""
    except OSError as exc:
        raise GuestError(f"cannot read the replication password: {exc.strerror}") from exc
    if known:
        return known
    password = secrets.token_urlsafe(32)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise GuestError(f"cannot record the replication password: {exc.strerror}") from exc
    LOG.info("made the replication account's password")
    return password
