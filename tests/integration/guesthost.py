"""A local driver with real guest agents on a private bus, and a stand-in conductor that
records what the agents report: the integration tests' view of one host."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.common.ids import new_id
from cove.common.settings import load_settings
from cove.compute.discovery import find_postgresql
from cove.compute.local import LocalDriver
from cove.domain.datastores import datastore
from cove.domain.guest import GuestSettings
from cove.rpc import RequestContext, RpcClient, RpcServer, topics
from cove.rpc.guest import GuestClient
from servers import free_address, remove_tree


class Host:
    """One local driver with its agents on a private bus, and a stand-in conductor."""

    def __init__(self, base: Path, url: str) -> None:
        self.url = url
        settings = load_settings(data_dir=base / "d", transport_url=url, heartbeat_interval=5)
        self.driver = LocalDriver(settings)
        self.bus = RpcClient(url)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.conductor = RpcServer(
            url,
            topics.CONDUCTOR,
            {
                "heartbeat": lambda ctx, **kw: self.events.put({"method": "heartbeat", **kw}),
                "report": lambda ctx, **kw: self.events.put({"method": "report", **kw}),
            },
        )
        self.conductor.start()
        self.created: list[str] = []
        self.settings = settings

    def without_spares(self) -> None:
        """Every create from now on makes its place itself (``compute/spares.py``)."""
        self.driver.close()
        self.driver.spares = None

    def second_driver(self) -> LocalDriver:
        return LocalDriver(self.settings, check=False)

    def spec(self) -> GuestSettings:
        version = find_postgresql()[-1]
        return GuestSettings(
            instance_id=new_id(),
            datastore="postgresql",
            datastore_version=version.name,
            bin_dir=version.bin_dir,
            address=f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.9",
            port=5432,
            ram_mb=512,
            vcpus=1,
            volume_gb=1,
            transport_url=self.url,
            heartbeat_interval=5,
        )

    def spec_of(self, name: str) -> GuestSettings:
        """A new instance of datastore ``name`` on its newest version found here, on an address
        of its own and the datastore's standard port."""
        ds = datastore(name)
        found = ds.find_versions()
        # make test installs every datastore: a missing one must not pass unnoticed.
        assert found, f"needs {ds.title} ({ds.needs})"
        return dataclasses.replace(
            self.spec(),
            datastore=name,
            datastore_version=found[-1].name,
            bin_dir=found[-1].bin_dir,
            address=free_address(ds.port),
            port=ds.port,
        )

    def create(self, spec: GuestSettings, *, prepare: bool = False) -> None:
        self.created.append(spec.instance_id)
        guest = GuestClient(self.bus, spec.instance_id)
        guest.declare()
        self.driver.create(spec)
        if prepare:
            guest.prepare(RequestContext(), [], [])

    def call(self, instance_id: str, method: str, **args: Any) -> Any:
        # Raw wire values on purpose: the tests check what the agent answers on the bus.
        return self.bus.call(topics.guest(instance_id), method, args, timeout=60)

    def wait_event(self, timeout: float, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event {match} within {timeout} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if all(event.get(k) == v for k, v in match.items()):
                return event

    def server_pid(self, instance_id: str, name: str = "postgresql") -> int:
        """The pid the instance's server wrote in its pid file (the descriptor names it)."""
        pidfile = self.driver.instance_dir(instance_id).joinpath(*datastore(name).stray.pid_file)
        return int(pidfile.read_text().split()[0])

    def close(self) -> None:
        for instance_id in self.created:
            self.driver.destroy(instance_id)
        self.driver.close()
        self.conductor.stop()
        self.bus.close()


@pytest.fixture
def host() -> Iterator[Host]:
    with private_host() as h:
        yield h


@contextlib.contextmanager
def private_host() -> Iterator[Host]:
    """A :class:`Host` on a private bus in a new temporary directory, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="cove-host-"))
    base.chmod(0o755)
    bus_dir = base / "bus"
    bus_dir.mkdir()
    bus_dir.chmod(0o755)
    sock = bus_dir / "bus.sock"
    # A bus the unprivileged service user can reach.
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "777",
            "--save",
            "",
            "--dir",
            str(bus_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    h = Host(base, f"redis+socket://{sock}")
    try:
        yield h
    finally:
        h.close()
        redis.terminate()
        redis.wait(10)
        remove_tree(base)
