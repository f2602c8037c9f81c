"""Notification events POSTed to an operator's webhook (``cove.taskmanager.webhook``), received
by a real HTTP server on loopback: each message as JSON, signed when a secret is set, tried
again while the receiver fails, and given up (logged) without holding anyone up."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cove.domain.events import Event
from cove.taskmanager.webhook import Webhook
from receivers import Receiver

SECRET = "hook-Secret-1"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()
    yield got
    got.close()


def event(n: int) -> dict[str, Any]:
    return Event(f"trove.instance.test{n}", {"instance_id": "i", "n": n}, "taskmanager.h").message()


def test_each_event_arrives_signed_in_order(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, SECRET)
    try:
        for n in range(3):
            hook.post(event(n))
        receiver.wait(3)
    finally:
        hook.close()
    for n, (headers, body) in enumerate(receiver.got):
        message = json.loads(body)
        assert message["payload"]["n"] == n
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Cove-Event"] == f"trove.instance.test{n}"
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Cove-Signature"] == f"sha256={expected}"


def test_a_failing_receiver_is_tried_again(receiver: Receiver) -> None:
    receiver.failing = 2  # the third try is taken
    hook = Webhook(receiver.url)
    try:
        hook.post(event(1))
        receiver.wait(1)
    finally:
        hook.close()
    headers, _ = receiver.got[0]
    assert "X-Cove-Signature" not in headers  # no secret, no signature


def test_a_receiver_that_is_away_never_holds_the_sender_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = Webhook("http://127.0.0.1:9/nothing-listens")  # the discard port: refused
    start = time.monotonic()
    for n in range(5):
        hook.post(event(n))
    assert time.monotonic() - start < 1.0  # queued, not sent, by the caller
    hook.close(timeout=10)
    assert any("did not take" in r.getMessage() for r in caplog.records)


def test_a_receiver_that_hangs_never_holds_the_shutdown_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as listening:  # takes connections, never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        hook = Webhook(f"http://127.0.0.1:{listening.getsockname()[1]}/")
        hook.post(event(1))
        time.sleep(0.2)  # the thread is waiting for the answer
        start = time.monotonic()
        hook.close(timeout=1.0)
        assert time.monotonic() - start < 3.0
        hook.post(event(2))  # closed: dropped, and said
    assert any("closed" in r.getMessage() for r in caplog.records)
