"""The filesystem store against the store contract (cove.storage.base)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.common.errors import ArtifactMissing, StoreUnavailable
from cove.domain.backups import StoreSpec
from cove.storage import check_key, open_store
from cove.storage.base import CHUNK


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_store(StoreSpec(kind="filesystem", location=str(tmp_path / "store")))


def test_put_get_size_delete(store) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * CHUNK + 17)
    assert store.put("p/b1/full", [data[:100], data[100:]]) == len(data)
    assert store.size("p/b1/full") == len(data)
    got = list(store.get("p/b1/full"))
    assert b"".join(got) == data and max(map(len, got)) <= CHUNK
    store.delete("p/b1/full")
    store.delete("p/b1/full")  # idempotent
    assert store.size("p/b1/full") is None
    with pytest.raises(ArtifactMissing):
        store.get("p/b1/full")


def test_a_failed_put_leaves_nothing_and_keeps_the_previous_artifact(store) -> None:  # type: ignore[no-untyped-def]
    store.put("k", [b"old"])

    def broken() -> Iterator[bytes]:
        yield b"new data"
        raise RuntimeError("the engine died")

    with pytest.raises(RuntimeError):
        store.put("k", broken())
    assert b"".join(store.get("k")) == b"old"
    assert sorted(os.listdir(store.root)) == ["k"]


def test_a_killed_writer_s_leftover_is_discarded(store) -> None:  # type: ignore[no-untyped-def]
    store.root.mkdir(parents=True)
    (store.root / "a.partial-1234").write_bytes(b"half")
    (store.root / "ab.partial-1234").write_bytes(b"another key's")
    store.discard_partial("a")
    assert sorted(os.listdir(store.root)) == ["ab.partial-1234"]
    assert store.size("a") is None


def test_a_full_store_says_so_and_keeps_nothing(tmp_path: Path) -> None:
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small filesystem here")
    try:
        store = open_store(StoreSpec(kind="filesystem", location=str(root)))
        with pytest.raises(StoreUnavailable, match="it is full"):
            store.put("big", [os.urandom(CHUNK)] * 3)
        assert os.listdir(root) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.mark.parametrize("key", ["", "../x", "a/../b", "/abs", ".hidden", "a//b", "a b", "a/" * 9])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="filesystem, s3"):
        open_store(StoreSpec(kind="swift", location="x"))
