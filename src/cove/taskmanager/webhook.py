"""Notification events POSTed to the operator's webhook (``event_webhook``), one JSON message
(``Event.message``) per request, from a thread of their own so no task waits for the
receiver. Signed when ``event_webhook_secret`` is set: ``X-Cove-Signature: sha256=<hex>``, an
HMAC-SHA256 of the body with that secret, for the receiver to check the sender.

At most QUEUED events wait; beyond that, and after ATTEMPTS failed tries (a pause that doubles
from 1 s), an event is dropped and logged: the receiver being away never holds the task
manager up or fills its memory. The bus and each instance's recent events keep them anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import threading
from typing import Any

import httpx

LOG = logging.getLogger(__name__)

QUEUED = 1000
ATTEMPTS = 3
TIMEOUT = 5.0


class Webhook:
    def __init__(self, url: str, secret: str = "") -> None:
        self.url = url
        self._secret = secret.encode()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUED)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-webhook", daemon=True)
        self._thread.start()

    def post(self, message: dict[str, Any]) -> None:
        """Queue ``message``; never blocks."""
        if self._stopping.is_set():
            LOG.warning("the event webhook is closed; dropping %s", _name(message))
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            LOG.warning(
                "the event webhook is %d events behind; dropping %s", QUEUED, _name(message)
            )

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            while True:
                message = self._queue.get()
                if message is None:
                    return
                try:
                    self._deliver(client, message)
                except Exception:  # the thread must outlive any one event
                    LOG.warning(
                        "cannot post %s to the event webhook", _name(message), exc_info=True
                    )

    def _deliver(self, client: httpx.Client, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        headers = {"Content-Type": "application/json", "X-Cove-Event": str(message["event_type"])}
        if self._secret:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Cove-Signature"] = f"sha256={digest}"
        pause = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = client.post(self.url, content=body, headers=headers)
                if answer.is_success:
                    return
                why = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if attempt == ATTEMPTS or self._stopping.wait(pause):
                LOG.warning("the event webhook did not take %s (%s); dropped", _name(message), why)
                return
            pause *= 2


def _name(message: dict[str, Any]) -> str:
    return f"{message.get('event_type')} {message.get('message_id')}"
