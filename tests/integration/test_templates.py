"""Template data directories the control plane makes as root (``cove.compute.templates``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.common.service_user import service_user
from cove.compute import templates
from cove.compute.discovery import find_mariadb
from cove.domain.guest import GuestSettings

FOUND = find_mariadb()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="templates are made by root"),
    pytest.mark.skipif(not FOUND, reason="no MariaDB server here"),
]


@pytest.fixture
def place() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cove-templates-"))
    base.chmod(0o755)  # as the data directory: the service user passes through
    (base / "templates").mkdir(mode=0o750)
    os.chown(base / "templates", 0, service_user("cove").gid)  # as the local driver makes it
    yield base / "templates"
    shutil.rmtree(base, ignore_errors=True)


def spec() -> GuestSettings:
    return GuestSettings(
        instance_id="t1",
        datastore="mariadb",
        datastore_version=FOUND[-1].name,
        bin_dir=FOUND[-1].bin_dir,
        address="127.0.0.1",
        port=3306,
        ram_mb=512,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
    )


def test_a_mariadb_template_is_roots_holds_nothing_of_an_instance_and_follows_the_binary(
    place: Path,
) -> None:
    user = service_user("cove")
    made = place / f"mariadb-{FOUND[-1].name}"
    templates.ensure(spec(), place, user)
    st = made.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, user.gid, 0o750)
    grants = made / "mysql" / "global_priv.MAD"
    assert (grants.stat().st_uid, grants.stat().st_mode & 0o777) == (0, 0o640)
    stamp = json.loads((place / f"{made.name}.json").read_text())
    assert stamp["binary"] == str(Path(FOUND[-1].bin_dir) / "mariadbd")
    # (That a copy holds no account but the server's own: test_mariadb_guest.py.)
    assert (made / "ib_logfile0").stat().st_size == 4 * 1024 * 1024
    leftovers = [p.name for p in made.iterdir() if "bin" in p.name or p.suffix in (".err", ".pid")]
    assert leftovers == [] and not (made / "ib_buffer_pool").exists()
    assert sorted(p.name for p in place.iterdir()) == [made.name, f"{made.name}.json"]

    # Made: a second create finds it. Another binary's stamp: made again.
    inode = made.stat().st_ino
    templates.ensure(spec(), place, user)
    assert made.stat().st_ino == inode
    (place / f"{made.name}.json").write_text(json.dumps({**stamp, "size": 1}))
    templates.ensure(spec(), place, user)
    assert made.stat().st_ino != inode
    assert json.loads((place / f"{made.name}.json").read_text()) == stamp
