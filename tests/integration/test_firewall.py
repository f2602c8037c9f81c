"""The host's filter on who may connect (``compute/firewall.py``), for real: nftables rules on
loopback, a listening socket, and clients bound to source addresses inside and outside the
networks an instance lets in."""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.compute import firewall
from cove.compute.firewall import Firewall, Guarded
from servers import free_address

pytestmark = pytest.mark.integration

PORT = 15432


@pytest.fixture
def host_filter(tmp_path: Path) -> Iterator[Firewall]:
    found, why = firewall.detect(tmp_path)
    if found is None:
        pytest.skip(f"no host filter here: {why}")
    try:
        yield found
    finally:
        found.apply([])


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    address = free_address(PORT)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, PORT))
        listener.listen(16)
        yield address, PORT


def connect(source: str, target: tuple[str, int]) -> socket.socket | None:
    """A connection from ``source``, or None when the host refused it."""
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    try:
        sock.connect(target)
    except ConnectionRefusedError:
        sock.close()
        return None
    return sock


def table_exists(name: str) -> bool:
    done = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, check=False)
    return done.returncode == 0


def test_only_the_instances_networks_and_trusted_sources_connect(
    host_filter: Firewall, server: tuple[str, int]
) -> None:
    net = random.randint(0, 255)
    inside, outside, trusted = f"127.77.{net}.5", f"127.78.{net}.5", f"127.79.{net}.9"
    rule = Guarded("i-1", (server,), (f"127.77.{net}.0/24",), (f"{trusted}/32",))
    host_filter.apply([rule])
    assert table_exists(host_filter.table)

    kept = connect(inside, server)
    assert kept is not None
    assert connect(outside, server) is None
    peer = connect(trusted, server)
    assert peer is not None
    peer.close()
    # An address the rules do not name is not filtered at all.
    other = (server[0], PORT + 1)
    with socket.socket() as listener:
        listener.bind(other)
        listener.listen(1)
        unfiltered = connect(outside, other)
        assert unfiltered is not None
        unfiltered.close()

    # The network taken away: new connections are refused and the one it had is cut.
    host_filter.apply([Guarded("i-1", (server,), (f"127.78.{net}.0/24",))])
    assert connect(inside, server) is None
    let_in = connect(outside, server)
    assert let_in is not None
    let_in.close()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(50):
            kept.sendall(b"x" * 1024)
            kept.recv(1)  # the listener never answers: a reset ends the wait, not a timeout
    kept.close()

    # Nothing guarded: the table is gone and everyone connects again.
    host_filter.apply([])
    assert not table_exists(host_filter.table)
    back = connect(inside, server)
    assert back is not None
    back.close()


def test_a_table_removed_behind_its_back_is_written_again(
    host_filter: Firewall, server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = Guarded("i-2", (server,), ("127.76.0.0/24",))
    host_filter.apply([rule])
    subprocess.run(["nft", "delete", "table", "ip", host_filter.table], check=True)
    host_filter.apply([rule])  # unchanged, and not due yet: nothing is written
    assert not table_exists(host_filter.table)
    monkeypatch.setattr(firewall, "REFRESH", 0.0)
    host_filter.apply([rule])
    assert table_exists(host_filter.table)
    assert connect("127.75.0.5", server) is None
