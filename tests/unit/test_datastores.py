"""The datastore registry: one descriptor per datastore, complete, chosen by name, with the same
capabilities, ports and deny-lists the separate tables used to hold, facts that agree with the
guest's own, and hooks that load their layer only when called."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cove.common.errors import ConfigurationError
from cove.compute import parameters as readers
from cove.compute.discovery import FoundVersion, found_in, version_in
from cove.domain.capabilities import MANAGED, STANDARD_PORTS, Capability, capabilities
from cove.domain.datastores import DATASTORES, Datastore, UnknownDatastore, datastore
from cove.domain.guest import GuestSettings
from cove.domain.parameters import denied
from cove.guestagent.datastores import load_manager

KNOWN = "known: mariadb, postgresql, redis"
HOOKS = ("find_versions", "server_version", "read_parameters", "manager")
#: The dispatching reader itself, taken before the unit tests' fixture stands in for it.
READ_PARAMETERS = readers.read_parameters


def test_every_datastore_has_every_field_and_hook() -> None:
    assert sorted(DATASTORES) == ["mariadb", "postgresql", "redis"]
    for name, ds in DATASTORES.items():
        assert ds.name == name and ds.title
        for field in dataclasses.fields(Datastore):
            assert getattr(ds, field.name) not in (None, "", (), frozenset()), (name, field.name)
        for hook in HOOKS:
            function = getattr(ds, hook)
            # Defined beside the descriptor, where it imports its layer only when called.
            assert callable(function) and function.__module__ == f"cove.domain.datastores.{name}"
        assert ds.stray.workdir == ("data",)
        # Whatever the server does with the gentler signals, it goes in the end.
        assert ds.stray.stop[-1][0] == signal.SIGKILL
        assert all(wait > 0 for _, wait in ds.stray.stop)


def test_an_unknown_datastore_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(UnknownDatastore, match=KNOWN) as caught:
        datastore("mongodb")
    assert isinstance(caught.value, LookupError) and caught.value.name == "mongodb"
    with pytest.raises(ValueError, match=f"unknown datastore 'mongodb' \\({KNOWN}\\)"):
        version_in("mongodb", "7", Path("/usr/bin"))
    with pytest.raises(LookupError, match=KNOWN):
        READ_PARAMETERS(FoundVersion("mongodb", "7", "7.0", "/x"))
    settings = GuestSettings(
        instance_id="i",
        datastore="mongodb",
        datastore_version="7",
        bin_dir="/x",
        address="127.0.0.1",
        port=27017,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
    )
    with pytest.raises(ConfigurationError, match=KNOWN):
        load_manager(settings)


def test_capabilities_ports_and_deny_lists_are_what_they_were() -> None:
    assert capabilities("postgresql") == {
        Capability.DATABASES,
        Capability.USERS,
        Capability.ROOT,
        Capability.CONFIGURATION,
        Capability.BACKUPS,
        Capability.INCREMENTAL_BACKUPS,
        Capability.POINT_IN_TIME,
        Capability.REPLICATION,
    }
    assert capabilities("mariadb") == {
        Capability.DATABASES,
        Capability.USERS,
        Capability.USER_HOSTS,
        Capability.ROOT,
        Capability.CONFIGURATION,
        Capability.BACKUPS,
        Capability.INCREMENTAL_BACKUPS,
        Capability.REPLICATION,
    }
    assert capabilities("redis") == {
        Capability.USERS,
        Capability.ROOT,
        Capability.CONFIGURATION,
        Capability.BACKUPS,
        Capability.REPLICATION,
    }
    assert capabilities("mongodb") == frozenset()
    assert STANDARD_PORTS == {"postgresql": 5432, "mariadb": 3306, "redis": 6379}
    assert sorted(MANAGED) == ["mariadb", "postgresql", "redis"]
    assert {name: len(ds.denied) for name, ds in DATASTORES.items()} == {
        "postgresql": 63,
        "mariadb": 75,
        "redis": 53,
    }
    # An unknown datastore denies everything; names are matched case-insensitively.
    assert denied("mongodb", "work_mem")
    for name, refused, allowed in (
        ("postgresql", ["Port", "shared_buffers", "ssl_ciphers", "archive_command"], "work_mem"),
        (
            "mariadb",
            ["datadir", "log_bin_index", "innodb_buffer_pool_size", "innodb_log_file_size"],
            "max_connections",
        ),
        ("redis", ["dir", "maxmemory", "replica-read-only", "enable-debug-command"], "timeout"),
    ):
        assert all(denied(name, n) for n in refused), name
        assert not denied(name, allowed), name


def test_versions_are_named_and_checked_by_the_minimum() -> None:
    pg, maria, redis = DATASTORES["postgresql"], DATASTORES["mariadb"], DATASTORES["redis"]
    assert (pg.version_name("15.18"), maria.version_name("10.11.6")) == ("15", "10.11")
    assert pg.supported("14.0") and not pg.supported("13.9")
    assert maria.supported("10.6.1") and not maria.supported("10.5.20")
    assert redis.supported("7.0.15") and not redis.supported("6.2.14")
    assert (pg.oldest, maria.oldest, redis.oldest) == ("14", "10.6", "7.0")


def test_found_versions_are_one_per_name_and_never_too_old(tmp_path: Path) -> None:
    numbers = {"a": "7.2.4", "b": "7.2.5", "c": "6.2.14", "d": None, "e": "7.0.15"}
    fake = dataclasses.replace(
        DATASTORES["redis"], server_version=lambda bin_dir: numbers[bin_dir.name]
    )
    found = found_in(fake, [tmp_path / name for name in numbers])
    assert found == [
        FoundVersion("redis", "7.0", "7.0.15", str((tmp_path / "e").resolve())),
        FoundVersion("redis", "7.2", "7.2.4", str((tmp_path / "a").resolve())),
    ]


@pytest.mark.parametrize("name", sorted(DATASTORES))
def test_the_guest_s_server_uses_the_pid_file_and_signal_the_driver_expects(
    tmp_path: Path, name: str
) -> None:
    ds = DATASTORES[name]
    for sub in ("data", "conf", "log", "run"):
        (tmp_path / sub).mkdir()
    settings = GuestSettings(
        instance_id="i",
        datastore=name,
        datastore_version="1",
        bin_dir="/nonexistent",
        address="127.0.0.1",
        port=ds.port,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
        instance_dir=str(tmp_path),
    )
    manager = load_manager(settings)
    assert type(manager).__module__ == f"cove.guestagent.datastores.{name}.manager"
    tmp_path.joinpath(*ds.stray.pid_file).write_text("4242\n")
    server = manager.server  # type: ignore[attr-defined]
    assert server.read_pid() == 4242
    assert server.stop_signal == ds.stray.stop[0][0]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {m for m in out.split() if m.startswith("cove.")}


def test_each_side_loads_only_its_own_layer() -> None:
    # The agent's whole program, as it runs: its service, its admin endpoints, every manager.
    guest = _modules_after(
        "import cove.guestagent.main, cove.guestagent.service, cove.guestagent.admin_endpoints\n"
        "import cove.guestagent.datastores.postgresql.manager\n"
        "import cove.guestagent.datastores.mariadb.manager\n"
        "import cove.guestagent.datastores.redis.manager"
    )
    # The backup stores too: the agent streams backups into them itself.
    allowed = ("cove.common", "cove.domain", "cove.rpc", "cove.storage", "cove.guestagent")
    assert sorted(m for m in guest if not m.startswith(allowed)) == []
    stores = _modules_after("import cove.storage.filesystem, cove.storage.s3, cove.storage.sealed")
    assert sorted(m for m in stores if not m.startswith(("cove.common", "cove.domain"))) == [
        m for m in sorted(stores) if m.startswith("cove.storage")
    ]
    # The pure layer loads nothing above it.
    domain = _modules_after("import cove.domain.datastores, cove.domain.parameters")
    assert sorted(m for m in domain if not m.startswith(("cove.common", "cove.domain"))) == []
    control = _modules_after(
        "import cove.compute.local, cove.compute.parameters, cove.db.catalog, cove.api.app"
    )
    assert not [m for m in control if m.startswith("cove.guestagent")]
    # No reader is loaded before a version of its datastore is read.
    assert not [m for m in control if m.startswith("cove.compute.parameters.")]
