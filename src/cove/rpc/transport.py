# kombu ships no annotations: this module is Cove's typed boundary around it, and the only one
# in cove.rpc that calls kombu.
# mypy: disallow-untyped-calls=False
"""Transport set-up shared by the RPC client and server: connections, entities, URL hygiene.

The same code serves RabbitMQ (``amqp://``) and kombu's Redis transport (``redis://`` or
``redis+socket:///path/to/redis.sock``); only the URL differs. All topics hang off one direct
exchange, each topic being a durable queue bound under its own name. Replies go through the
default exchange straight to the caller's private reply queue.

A ``BusConnection`` is one kombu connection with one channel. It is not thread-safe: each one
belongs to a single thread.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from cove.common.errors import BusUnavailable

LOG = logging.getLogger(__name__)

#: The one exchange every topic is bound to.
EXCHANGE_NAME = "cove"

#: Prefix of the callers' private reply queues.
REPLY_PREFIX = "cove.reply."

_CONTENT_TYPE = "application/json"
_REDIS_BRPOP_TIMEOUT = 0.25
_REDIS_MIN_SOCKET_TIMEOUT = 5.0
_PERSISTENT = 2
_TRANSIENT = 1

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/;]*):[^@/;]*@")


class BusMessage(Protocol):
    """What a consumer callback receives."""

    @property
    def body(self) -> bytes | str: ...

    def ack(self) -> None: ...


OnMessage = Callable[[BusMessage], None]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (several ``;``-separated URLs too)."""
    return _PASSWORD_IN_URL.sub(r"\g<scheme>\g<user>:***@", url)


def describe_error(exc: BaseException) -> str:
    """A short text for ``exc``, without any password from a URL."""
    text = str(exc)
    return redact_url(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def unreachable(url: str, reason: str) -> BusUnavailable:
    """The error for a bus that cannot be reached: its message (for logs) names the bus."""
    return BusUnavailable(f"message bus at {redact_url(url)} is unreachable: {reason}")


def _exchange() -> Exchange:
    return Exchange(EXCHANGE_NAME, type="direct", durable=True, auto_delete=False)


def _topic_queue(topic: str) -> Queue:
    check_topic(topic)
    return Queue(topic, exchange=_exchange(), routing_key=topic, durable=True, auto_delete=False)


def check_topic(topic: str) -> None:
    """Raise ValueError for a topic name the bus cannot carry."""
    if not topic or not isinstance(topic, str):
        raise ValueError("an RPC topic must be a non-empty string")


class BusConnection:
    """One connection to the bus with one channel, used by a single thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        #: Errors meaning the broker is (or went) away. TimeoutError is one of them (an
        #: OSError): callers that wait with a timeout catch it first.
        self.errors: tuple[type[BaseException], ...] = (
            *conn.connection_errors,
            *conn.recoverable_connection_errors,
            *conn.channel_errors,
            OSError,
        )
        self._channel = conn.channel()
        self._producer = Producer(self._channel, exchange=_exchange(), auto_declare=True)
        # Replies need a producer of their own: kombu reads exchange="" as "the producer's".
        self._reply_producer = Producer(self._channel)
        self._consumers: list[Consumer] = []

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float,
        heartbeat: float = 0,
        cancel: threading.Event | None = None,
    ) -> BusConnection:
        """Connect to the bus at ``url``, retrying briefly until ``timeout`` seconds passed.

        Never blocks much longer than ``timeout``, and gives up early once ``cancel`` is set.
        Raises BusUnavailable (with the URL stripped of its password) when no connection
        could be made.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            remaining = max(deadline - time.monotonic(), 0.05)
            conn = Connection(url, connect_timeout=remaining, heartbeat=heartbeat)
            _tune_redis(conn, timeout)
            _tune_amqp(conn, timeout)
            errors = (*conn.recoverable_connection_errors, *conn.connection_errors, OSError)
            try:
                # One attempt per round: kombu's own connect() sleeps 2 s before a retry.
                conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
                return cls(conn)
            except errors as exc:
                _release_quietly(conn)
                reason = describe_error(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise unreachable(url, reason)
            pause = min(delay, remaining)
            if cancel is None:
                time.sleep(pause)
            elif cancel.wait(pause):
                raise unreachable(url, reason)
            delay = min(delay * 2, 0.5)

    # -- publishing --------------------------------------------------------------------------

    def publish_request(
        self, topic: str, body: str, *, persistent: bool, expiration: float | None, timeout: float
    ) -> None:
        """Publish a request to ``topic``'s queue, declaring the queue first (once per
        connection): a broker that restarted empty has no queue for the topic until its server
        reconnects, and would drop a request published meanwhile."""
        self._publish(
            self._producer,
            body,
            routing_key=topic,
            persistent=persistent,
            expiration=expiration,
            timeout=timeout,
            declare=[_topic_queue(topic)],
        )

    def publish_reply(self, reply_to: str, body: str, *, timeout: float) -> None:
        """Publish a reply straight to the queue ``reply_to`` (through the default exchange)."""
        self._publish(
            self._reply_producer,
            body,
            routing_key=reply_to,
            persistent=False,
            expiration=None,
            timeout=timeout,
        )

    @staticmethod
    def _publish(
        producer: Producer,
        body: str,
        *,
        routing_key: str,
        persistent: bool,
        expiration: float | None,
        timeout: float,
        declare: list[Queue] | None = None,
    ) -> None:
        producer.publish(
            body,
            declare=declare or [],
            routing_key=routing_key,
            content_type=_CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=_PERSISTENT if persistent else _TRANSIENT,
            expiration=expiration,
            timeout=timeout,
            # Without it a broker that never confirms (one still starting) would hold the
            # publisher forever: a guest's heartbeat thread stuck for good.
            confirm_timeout=timeout,
            retry=False,
        )

    # -- queues ------------------------------------------------------------------------------

    def declare_topic(self, topic: str) -> None:
        _topic_queue(topic).bind(self._channel).declare()

    def delete_topic(self, topic: str) -> None:
        _topic_queue(topic).bind(self._channel).delete()

    def consume_topic(self, topic: str, on_message: OnMessage, *, prefetch: int) -> None:
        """Declare ``topic``'s queue and consume it; messages must be acked by the callback."""
        consumer = Consumer(
            self._channel,
            queues=[_topic_queue(topic)],
            on_message=on_message,
            no_ack=False,
            prefetch_count=prefetch,
            auto_declare=True,
        )
        consumer.consume()
        self._consumers.append(consumer)

    def consume_replies(self, name: str, on_message: OnMessage) -> None:
        """Declare the private reply queue ``name`` and consume it (no acks needed).

        The queue is bound to no exchange: replies come through the default exchange, which
        routes by queue name on every transport. On RabbitMQ it is exclusive, so it goes with
        this connection.
        """
        queue = Queue(name, durable=False, exclusive=True, auto_delete=True)
        consumer = Consumer(
            self._channel,
            queues=[queue],
            on_message=on_message,
            no_ack=True,
            auto_declare=True,
        )
        consumer.consume()
        self._consumers.append(consumer)

    # -- waiting -----------------------------------------------------------------------------

    def drain(self, timeout: float) -> bool:
        """Deliver what arrives within ``timeout`` seconds to the consumers' callbacks.

        Returns False when nothing came. Raises one of ``errors`` when the connection broke.
        """
        try:
            self._conn.drain_events(timeout=timeout)
        except TimeoutError:
            return False
        return True

    def heartbeat_check(self) -> None:
        """Send and check AMQP heartbeats (a no-op on transports without them)."""
        self._conn.heartbeat_check()

    def close(self) -> None:
        """Cancel consumers and release the connection; never raises."""
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                consumer.cancel()
        self._consumers.clear()
        _release_quietly(self._conn)


def _tune_redis(conn: Connection, timeout: float) -> None:
    """Settings for kombu's Redis transport, before its first channel exists."""
    transport = conn.transport
    if getattr(transport, "driver_type", None) != "redis":
        return
    # Closing a consumer first reads the BRPOP in flight (or a message it popped would be
    # lost), which takes up to this long: keep stop() and close() quick.
    transport.brpop_timeout = _REDIS_BRPOP_TIMEOUT
    # Without a socket timeout a command on a connection whose peer vanished silently (TCP)
    # would wait forever.
    options = conn.transport_options
    if isinstance(options, dict):
        options.setdefault("socket_timeout", max(timeout, _REDIS_MIN_SOCKET_TIMEOUT))


def _tune_amqp(conn: Connection, timeout: float) -> None:
    """Settings for AMQP connections, before they connect.

    Every publish waits for the broker's acknowledgement: a cast that returned is then held by
    the broker (on a durable queue, persistent: it survives a broker restart), and one the broker
    did not take raises instead of vanishing. Every read and write of the socket gives up after
    ``timeout``: py-amqp waits without limit for the answer to a channel open or a queue
    declare, so a broker that stops answering (one still starting, one stopped) would otherwise
    hold the caller for good, a guest's heartbeat thread among them."""
    if getattr(conn.transport, "driver_type", None) != "amqp":
        return
    options = conn.transport_options
    if isinstance(options, dict):
        options.setdefault("confirm_publish", True)
        options.setdefault("read_timeout", timeout)
        options.setdefault("write_timeout", timeout)


def _release_quietly(conn: Connection) -> None:
    try:
        conn.release()
    except Exception:
        LOG.debug("error while releasing a bus connection", exc_info=True)
