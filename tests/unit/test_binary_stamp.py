"""A template's stamp: which server binary it was made with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cove.common import binary_stamp


def test_a_template_is_ready_only_with_its_marker_and_the_same_binary(tmp_path: Path) -> None:
    binary = tmp_path / "mariadbd"
    binary.write_bytes(b"v1")
    template = tmp_path / "mariadb-10.11"
    (template / "mysql").mkdir(parents=True)
    assert not binary_stamp.ready(template, "mysql/global_priv.MAD", binary)  # no marker
    (template / "mysql" / "global_priv.MAD").write_bytes(b"")
    assert not binary_stamp.ready(template, "mysql/global_priv.MAD", binary)  # no stamp
    binary_stamp.write(template, binary)
    assert binary_stamp.ready(template, "mysql/global_priv.MAD", binary)
    stamp = binary_stamp.stamp_of(template)
    assert stamp.name == "mariadb-10.11.json" and stamp.stat().st_mode & 0o777 == 0o600
    assert json.loads(stamp.read_text())["binary"] == str(binary)

    # An upgrade replaces the binary: another size or time is another binary.
    binary.write_bytes(b"v2, longer")
    assert not binary_stamp.ready(template, "mysql/global_priv.MAD", binary)
    binary_stamp.write(template, binary)
    os.utime(binary, ns=(1, 1))
    assert not binary_stamp.matches(template, binary)

    # A stamp that is not one, or a binary that is gone, is no match.
    stamp.write_text("{not json")
    assert not binary_stamp.matches(template, binary)
    binary.unlink()
    assert not binary_stamp.matches(template, binary)
