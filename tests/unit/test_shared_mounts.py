"""Whether the mount holding a path is shared (spare places cannot be moved there)."""

from __future__ import annotations

from pathlib import Path

from cove.compute.volumes import shared_mount

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /srv rw,relatime - ext4 /dev/vdb rw
31 30 0:27 / /srv/private\\040dir rw,relatime - tmpfs none rw
32 22 0:28 / /mnt/shared rw,relatime shared:7 master:1 - tmpfs none rw
"""


def test_the_innermost_mount_holding_the_path_decides() -> None:
    assert shared_mount(Path("/var/lib/cove"), MOUNTINFO) == "/"
    assert shared_mount(Path("/srv/cove/data"), MOUNTINFO) is None
    assert shared_mount(Path("/srv/private dir/cove"), MOUNTINFO) is None
    assert shared_mount(Path("/mnt/shared/cove"), MOUNTINFO) == "/mnt/shared"
    # A prefix of a name is not a parent directory.
    assert shared_mount(Path("/srvx/cove"), MOUNTINFO) == "/"


def test_a_private_root_is_not_shared() -> None:
    private = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    assert shared_mount(Path("/anything"), private) is None
