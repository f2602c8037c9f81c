"""guest.json: what the compute driver writes is what the guest agent reads back, and a file it
did not write is refused with a message that names the problem, not the secret it may hold."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cove.common.errors import ConfigurationError
from cove.domain.guest import GuestSettings
from cove.guestagent.config import load_settings
from cove.rpc.codec import to_wire

SETTINGS = GuestSettings(
    instance_id="i-1",
    datastore="postgresql",
    datastore_version="15",
    bin_dir="/usr/lib/postgresql/15/bin",
    address="127.42.0.9",
    port=5432,
    ram_mb=512,
    vcpus=1,
    volume_gb=2,
    transport_url="amqp://cove:s3cret@127.0.0.1:5672//",
    heartbeat_interval=5.0,
    overrides={"work_mem": 4096, "jit": False, "random_page_cost": 1.5, "DateStyle": "ISO"},
    instance_dir="/srv/cove/instances/i-1",
    template_dir="/srv/cove/templates",
)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "guest.json"
    path.write_text(json.dumps(data))
    return path


def test_what_the_driver_writes_the_guest_reads(tmp_path: Path) -> None:
    loaded = load_settings(_write(tmp_path, to_wire(SETTINGS)))
    assert loaded == SETTINGS
    assert loaded.data_dir == Path("/srv/cove/instances/i-1/data")
    assert "s3cret" not in repr(loaded)


def test_unknown_keys_are_ignored_and_defaults_filled(tmp_path: Path) -> None:
    data = to_wire(SETTINGS) | {"added_later": 1}
    del data["overrides"]
    assert load_settings(_write(tmp_path, data)) == replace(SETTINGS, overrides={})


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"port": "5432"}, "guest.port: expected int"),
        ({"overrides": {"work_mem": [1]}}, "guest.overrides.work_mem: wrong type"),
        ({"transport_url": None}, "guest.transport_url"),
        ({"instance_dir": ""}, "instance_dir is missing"),
    ],
)
def test_a_file_the_driver_did_not_write_is_refused(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    path = _write(tmp_path, to_wire(SETTINGS) | change)
    with pytest.raises(ConfigurationError, match=problem) as caught:
        load_settings(path)
    assert "s3cret" not in caught.value.message


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    data = to_wire(SETTINGS)
    del data["address"]
    with pytest.raises(ConfigurationError, match=r"guest\.address: field required"):
        load_settings(_write(tmp_path, data))
