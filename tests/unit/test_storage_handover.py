"""Reading ahead in a thread (cove.storage.handover): chunks in order, errors raised on the
consumer's side, and the thread gone whenever the consumer is done."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cove.common.errors import StoreUnavailable
from cove.storage.handover import read_ahead


def ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "test-ahead"]


def source(count: int, closed: list[bool], fail: bool = False) -> Iterator[bytes]:
    try:
        for number in range(count):
            yield number.to_bytes(4, "big")
        if fail:
            raise StoreUnavailable("the store went away")
    finally:
        closed.append(True)


def test_chunks_come_in_order_and_the_thread_ends() -> None:
    closed: list[bool] = []
    got = list(read_ahead(source(100, closed), 3, "test-ahead"))
    assert got == [n.to_bytes(4, "big") for n in range(100)]
    assert closed == [True] and ahead_threads() == []


def test_a_failure_of_the_source_is_raised_by_the_consumer() -> None:
    closed: list[bool] = []
    with pytest.raises(StoreUnavailable):
        list(read_ahead(source(10, closed, fail=True), 3, "test-ahead"))
    assert closed == [True] and ahead_threads() == []


def test_a_consumer_that_stops_early_stops_the_thread_and_closes_the_source() -> None:
    closed: list[bool] = []
    chunks = read_ahead(source(1000, closed), 2, "test-ahead")
    assert next(chunks) == bytes(4)
    chunks.close()  # type: ignore[attr-defined]
    assert closed == [True] and ahead_threads() == []
