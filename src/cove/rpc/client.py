"""The RPC client: cast and call methods on a topic's servers.

Thread-safe by construction: every thread that uses a client gets its own connection, channel,
producer and (once it calls) its own private reply queue, so no kombu object is ever shared
between threads. A client never blocks forever: connecting is bounded by ``connect_timeout`` and
a call by its ``timeout``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cove.common.errors import BusUnavailable, RpcTimeout
from cove.common.ids import new_id
from cove.rpc import transport
from cove.rpc.envelope import (
    InvalidMessage,
    Reply,
    RequestContext,
    decode_reply,
    encode_request,
)
from cove.rpc.observer import RpcObserver
from cove.rpc.transport import BusConnection, BusMessage

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class _Link:
    """One thread's connection to the bus. Used only by the thread that made it."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self.bus = BusConnection.connect(url, timeout=connect_timeout)
        self.errors = self.bus.errors
        self.closed = False
        self._reply_name: str | None = None
        self._awaiting: str | None = None
        self._reply: Reply | None = None

    def reply_to(self, name: str | None = None) -> str:
        """The name of this thread's reply queue, declared and consumed on first use.

        ``name`` adopts the reply queue of a broken link, so replies already sent to it are
        still received (they are, on Redis; on RabbitMQ that queue went with its connection).
        """
        if self._reply_name is None:
            name = name or transport.REPLY_PREFIX + new_id()
            self.bus.consume_replies(name, self._on_reply)
            self._reply_name = name
        return self._reply_name

    def _on_reply(self, message: BusMessage) -> None:
        try:
            reply = decode_reply(message.body)
        except InvalidMessage as exc:
            LOG.warning("dropping an invalid reply on %s: %s", self._reply_name, exc)
            return
        if reply.msg_id != self._awaiting:
            # The answer to an earlier call that timed out here: nobody wants it any more.
            LOG.debug("ignoring a stale reply msg_id=%s", reply.msg_id)
            return
        self._reply = reply

    def wait_reply(self, msg_id: str, deadline: float) -> Reply | None:
        """The reply to ``msg_id``, or None when ``deadline`` passes first."""
        self._awaiting, self._reply = msg_id, None
        try:
            while self._reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.bus.drain(remaining)
            return self._reply
        finally:
            self._awaiting = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bus.close()


class RpcClient:
    """Casts and calls over the bus at ``transport_url`` (``amqp://`` or ``redis+socket://``).

    Safe to share between threads. Every method raises BusUnavailable (a ServiceUnavailable)
    when the bus cannot be reached within ``connect_timeout`` seconds.
    """

    def __init__(
        self,
        transport_url: str,
        *,
        connect_timeout: float = 5.0,
        observer: RpcObserver | None = None,
    ) -> None:
        """``observer`` is told of every request sent (``cove.rpc.observer``)."""
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self._url = transport_url
        self._observer = observer
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        self._links: dict[threading.Thread, _Link] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RpcClient({transport.redact_url(self._url)!r})"

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------

    def cast(
        self,
        topic: str,
        method: str,
        args: dict[str, Any],
        context: RequestContext | None = None,
    ) -> None:
        """Send ``method(**args)`` to one server of ``topic`` without waiting for it.

        A cast to a topic whose queue does not exist yet is lost: see ``declare_topic``.
        Raises ServiceUnavailable when the bus is unreachable, TypeError or ValueError when
        ``args`` are not JSON-serialisable.
        """
        context = context or RequestContext()
        msg_id, body = encode_request(method, args, context)

        def send(link: _Link) -> None:
            link.bus.publish_request(
                topic, body, persistent=True, expiration=None, timeout=self._connect_timeout
            )

        self._observed("cast", topic, method, lambda: self._with_link(send))
        LOG.debug(
            "cast %s to %s msg_id=%s request_id=%s", method, topic, msg_id, context.request_id
        )

    def call(
        self,
        topic: str,
        method: str,
        args: dict[str, Any],
        context: RequestContext | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Run ``method(**args)`` on one server of ``topic`` and return its result.

        Raises the Cove error the server replied with (``RemoteError`` for an error Cove does
        not know by name, ``UnknownMethod`` when the server has no such method), RpcTimeout when
        no reply came within ``timeout`` seconds (the request expires with it, so a server that
        picks it up later does not run it), ServiceUnavailable when the bus is unreachable.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        return self._observed(
            "call", topic, method, lambda: self._call(topic, method, args, context, timeout)
        )

    def _call(
        self,
        topic: str,
        method: str,
        args: dict[str, Any],
        context: RequestContext | None,
        timeout: float,
    ) -> Any:
        context = context or RequestContext()
        deadline = time.monotonic() + timeout
        msg_id = new_id()

        def send(link: _Link) -> _Link:
            _, body = encode_request(
                method, args, context, msg_id=msg_id, reply_to=link.reply_to(), ttl=timeout
            )
            link.bus.publish_request(
                topic,
                body,
                persistent=False,
                expiration=timeout,
                timeout=min(self._connect_timeout, timeout),
            )
            return link

        link = self._with_link(send)
        LOG.debug(
            "call %s on %s msg_id=%s request_id=%s", method, topic, msg_id, context.request_id
        )
        reply_to = link.reply_to()
        try:
            reply = link.wait_reply(msg_id, deadline)
        except link.errors as exc:
            # The request may have gone out before the link broke (a Redis client reconnects
            # for a publish but not for its waiting consumer): wait on for its reply.
            self._drop_link(link)
            LOG.info(
                "connection to the message bus at %s broke while waiting for %s msg_id=%s (%s); "
                "reconnecting",
                transport.redact_url(self._url),
                method,
                msg_id,
                transport.describe_error(exc),
            )
            reply = self._wait_again(reply_to, msg_id, deadline, f"{method} on {topic}")
        if reply is None:
            raise RpcTimeout(
                f"no reply to {method} on topic {topic} within {timeout:g} s (msg_id={msg_id})"
            )
        return reply.unwrap()

    def notify(self, topic: str, message: dict[str, Any]) -> None:
        """Publish a notification (``cove.domain.events.Event.message``) to ``topic``'s
        queue, declared durable, where it waits for a consumer: the body is oslo.messaging's
        2.0 envelope, as Trove's consumers read it. Raises BusUnavailable."""
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})

        def send(link: _Link) -> None:
            link.bus.publish_request(
                topic, body, persistent=True, expiration=None, timeout=self._connect_timeout
            )

        self._with_link(send)

    def _observed(self, kind: str, topic: str, method: str, send: Callable[[], T]) -> T:
        if self._observer is None:
            return send()
        start = time.monotonic()
        error = None
        try:
            return send()
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self._observer.sent(kind, topic, method, time.monotonic() - start, error)

    def declare_topic(self, topic: str) -> None:
        """Declare the durable queue of ``topic`` now, so casts sent before a server of the
        topic starts are kept until it does. Idempotent. Raises ServiceUnavailable."""
        transport.check_topic(topic)
        self._with_link(lambda link: link.bus.declare_topic(topic))

    def delete_topic(self, topic: str) -> None:
        """Delete the queue of ``topic`` with any message still in it. Idempotent.
        Raises ServiceUnavailable."""
        transport.check_topic(topic)
        self._with_link(lambda link: link.bus.delete_topic(topic))

    def close(self) -> None:
        """Close every thread's connection. The client may be used again afterwards (it
        reconnects); do not close it while another thread is in a call."""
        with self._lock:
            links = list(self._links.values())
            self._links.clear()
        for link in links:
            link.close()

    # -- connections -------------------------------------------------------------------------

    def _link(self) -> _Link:
        link: _Link | None = getattr(self._local, "link", None)
        if link is None or link.closed:
            link = _Link(self._url, self._connect_timeout)
            self._local.link = link
            with self._lock:
                dead = [t for t in self._links if not t.is_alive()]
                stale = [self._links.pop(t) for t in dead]
                self._links[threading.current_thread()] = link
            # Links of threads that ended: nobody else can use them now.
            for old in stale:
                old.close()
        return link

    def _drop_link(self, link: _Link) -> None:
        if getattr(self._local, "link", None) is link:
            self._local.link = None
        with self._lock:
            if self._links.get(threading.current_thread()) is link:
                del self._links[threading.current_thread()]
        link.close()

    def _wait_again(self, reply_to: str, msg_id: str, deadline: float, what: str) -> Reply | None:
        link = self._link()
        try:
            link.reply_to(reply_to)
            return link.wait_reply(msg_id, deadline)
        except link.errors as exc:
            self._drop_link(link)
            raise BusUnavailable(
                f"lost the message bus at {transport.redact_url(self._url)} while waiting for "
                f"{what}: {transport.describe_error(exc)}"
            ) from None

    def _with_link(self, action: Callable[[_Link], T]) -> T:
        """Run ``action`` on this thread's link; if the link turns out broken (the broker
        restarted since it was last used), reconnect once and run it again."""
        for attempt in (1, 2):
            link = self._link()
            try:
                return action(link)
            except link.errors as exc:
                self._drop_link(link)
                if attempt == 2:
                    raise transport.unreachable(self._url, transport.describe_error(exc)) from None
                LOG.info(
                    "connection to the message bus at %s broke (%s); reconnecting",
                    transport.redact_url(self._url),
                    transport.describe_error(exc),
                )
        raise AssertionError("unreachable")
