"""The local driver's host-level checks that need no agent."""

import socket

from cove.common.settings import load_settings
from cove.compute.local import LocalDriver


def test_an_address_bound_by_someone_else_is_not_usable(tmp_path):
    tmp_path.chmod(0o755)
    driver = LocalDriver(load_settings(data_dir=tmp_path), check=False)
    with socket.socket() as holder:
        holder.bind(("127.42.250.7", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not driver.address_usable("127.42.250.7", port)
        assert driver.address_usable("127.42.250.8", port)


def test_instances_dir_layout(tmp_path):
    tmp_path.chmod(0o755)
    driver = LocalDriver(load_settings(data_dir=tmp_path), check=False)
    assert driver.instance_ids() == []
    assert (tmp_path / "instances").stat().st_mode & 0o777 == 0o711
    assert (tmp_path / "templates").stat().st_mode & 0o777 == 0o700
