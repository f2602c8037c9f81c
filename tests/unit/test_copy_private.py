"""``process.copy_private``: a template copied as ``cp -a`` copies it, then made the
instance's alone (no group or other permission left), its links kept as links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cove.common.errors import CommandFailed
from cove.guestagent import process


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_copy_keeps_everything_but_what_the_group_and_others_could_do(tmp_path: Path) -> None:
    template = tmp_path / "template"
    (template / "base" / "1").mkdir(parents=True)
    (template / "PG_VERSION").write_text("15\n")
    (template / "base" / "1" / "112").write_bytes(b"\0" * 8192)
    (template / "pg_wal").symlink_to("/elsewhere/wal")
    for path, mode in (
        (template, 0o750),
        (template / "base", 0o750),
        (template / "base" / "1", 0o755),
        (template / "PG_VERSION", 0o640),
        (template / "base" / "1" / "112", 0o604),
    ):
        path.chmod(mode)
    copy = tmp_path / "data"
    process.copy_private(template, copy)
    assert (copy / "PG_VERSION").read_text() == "15\n"
    assert (copy / "base" / "1" / "112").read_bytes() == b"\0" * 8192
    assert os.readlink(copy / "pg_wal") == "/elsewhere/wal"
    assert _mode(copy) == 0o700 and _mode(copy / "base" / "1") == 0o700
    assert _mode(copy / "PG_VERSION") == 0o600 and _mode(copy / "base" / "1" / "112") == 0o600
    assert _mode(template / "PG_VERSION") == 0o640  # the template itself is left as it was


def test_a_missing_template_is_a_failed_command(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="cp exited"):
        process.copy_private(tmp_path / "none", tmp_path / "data")
