"""Volumes of the local driver, for real (``compute/volumes.py``): an instance's directory is a
loop-mounted filesystem of its size, mounted again by a Cove that starts after the host
restarted, grown while mounted (a grow cut short is finished), and gone with the instance."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cove.common.settings import Settings
from cove.compute.local import LocalDriver
from cove.compute.volumes import GIB
from cove.domain.guest import GuestSettings
from cove.domain.status import ComputeState
from servers import remove_tree


def spec_of(volume_gb: int = 1) -> GuestSettings:
    return GuestSettings(
        instance_id=str(uuid.uuid4()),
        datastore="postgresql",
        datastore_version="15",
        bin_dir="/usr/lib/postgresql/15/bin",
        address="127.0.0.1",
        port=5432,
        ram_mb=512,
        vcpus=1,
        volume_gb=volume_gb,
        transport_url="redis://unused",
        heartbeat_interval=5,
    )


@pytest.fixture
def settings() -> Iterator[Settings]:
    base = Path(tempfile.mkdtemp(prefix="cove-v-"))  # short: unix socket paths must fit
    base.chmod(0o755)
    yield Settings(data_dir=base / "d")
    remove_tree(base)


@pytest.fixture
def driver(settings: Settings) -> LocalDriver:
    found = LocalDriver(settings, check=False)
    if found.volumes is None:
        pytest.skip("volumes cannot be made here")
    return found


def size_of(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def loops_holding(image: Path) -> str:
    done = subprocess.run(["losetup", "--associated", str(image)], capture_output=True, text=True)
    return done.stdout.strip()


def test_a_volume_is_mounted_again_grown_and_removed(
    settings: Settings, driver: LocalDriver
) -> None:
    assert driver.volumes is not None
    spec = spec_of()
    base = driver.instance_dir(spec.instance_id)
    image = driver.volumes.image(spec.instance_id)
    try:
        driver._lay_out(spec)
        assert os.path.ismount(base) and (base / "conf" / "guest.json").is_file()
        st = base.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (driver.uid, 0o700)
        assert 0.9 * GIB < size_of(base) <= GIB
        # The commit log's directory, on the host's filesystem beside the volume.
        journal = settings.data_dir / "journals" / spec.instance_id
        written = json.loads((base / "conf" / "guest.json").read_text())
        assert written["journal_dir"] == str(journal)
        st = journal.stat()
        assert (st.st_uid, st.st_mode & 0o777, st.st_dev) == (
            driver.uid,
            0o700,
            base.parent.stat().st_dev,
        )
        assert journal.parent.stat().st_mode & 0o777 == 0o711
        assert (image.stat().st_mode & 0o777, image.parent.stat().st_mode & 0o777) == (
            0o600,
            0o700,
        )

        # The host restarted: the volume is not mounted, and its config is out of sight.
        subprocess.run(["umount", str(base)], check=True)
        assert not (base / "conf" / "guest.json").exists()
        assert driver.state(spec.instance_id) is ComputeState.SHUTDOWN  # not ERROR
        again = LocalDriver(settings, check=False)  # Cove starting on the host
        assert os.path.ismount(base) and (base / "conf" / "guest.json").is_file()

        # Grown while mounted; a grow cut short after the image grew is finished later.
        again.update(replace(spec, volume_gb=2))
        assert 1.9 * GIB < size_of(base) <= 2 * GIB
        os.truncate(image, 3 * GIB)
        image.with_suffix(".grow").touch()  # as a grow stopped before xfs_growfs leaves it
        again.update(replace(spec, volume_gb=3))
        assert 2.9 * GIB < size_of(base) <= 3 * GIB
        assert not image.with_suffix(".grow").exists()
    finally:
        driver.destroy(spec.instance_id)
    assert not base.exists() and not image.exists() and loops_holding(image) == ""
    assert not (settings.data_dir / "journals" / spec.instance_id).exists()


def test_an_instance_made_before_volumes_keeps_its_directory(driver: LocalDriver) -> None:
    assert driver.volumes is not None
    spec = spec_of()
    base = driver.instance_dir(spec.instance_id)
    base.mkdir(mode=0o700)
    (base / "data").mkdir()
    (base / "data" / "PG_VERSION").write_text("15\n")
    try:
        driver._lay_out(spec)
        assert not os.path.ismount(base) and (base / "data" / "PG_VERSION").is_file()
        assert json.loads((base / "conf" / "guest.json").read_text())["journal_dir"] == ""
        assert not driver.volumes.exists(spec.instance_id)
    finally:
        driver.destroy(spec.instance_id)
    assert not base.exists()
