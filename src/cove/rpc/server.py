"""The RPC server: consume one topic and dispatch each request to an endpoint.

One consumer thread owns the consuming connection; endpoints run in a pool of worker threads
so a slow handler does not hold up the others, and replies go out through a second, shared
connection. A message is acknowledged when it is received, before its handler runs: a request is
handled at most once, even when the server dies mid-way (Cove's workflows are resumable from the
control database, not from the bus). At most ``workers`` requests are taken at a time, so servers
sharing a topic share its load.

The server outlives the broker: when the connection breaks it reconnects with a capped backoff,
declares its queue again and resumes consuming.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cove.common.errors import CoveError, ServiceUnavailable, UnknownMethod
from cove.rpc import transport
from cove.rpc.envelope import (
    REMOTE_ERROR,
    InvalidMessage,
    Request,
    decode_request,
    encode_error,
    encode_result,
    error_reply_fields,
)
from cove.rpc.observer import RpcObserver
from cove.rpc.transport import BusConnection, BusMessage, describe_error, unreachable

LOG = logging.getLogger(__name__)

#: Longest pause between two attempts to reach the broker.
MAX_BACKOFF = 2.0
#: How often the consumer loop looks up from the socket (to notice stop() and send heartbeats).
POLL_INTERVAL = 0.2
#: AMQP heartbeat of the consuming connection, so a silently dead broker is noticed.
HEARTBEAT = 20.0

Endpoint = Callable[..., Any]


class _Replier:
    """Publishes replies for all workers through one connection, guarded by a lock."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._bus: BusConnection | None = None

    def send(self, reply_to: str, body: str, describe: str) -> None:
        """Publish ``body`` to the reply queue ``reply_to``; log (and drop it) on failure."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._bus is None:
                        self._bus = BusConnection.connect(self._url, timeout=self._connect_timeout)
                except ServiceUnavailable as exc:
                    LOG.error("cannot reply to %s: %s", describe, exc.message)
                    return
                bus = self._bus
                try:
                    bus.publish_reply(reply_to, body, timeout=self._connect_timeout)
                    return
                except bus.errors as exc:
                    # The broker restarted since the last reply: reconnect once and retry.
                    self._reset()
                    if attempt == 2:
                        LOG.error("cannot reply to %s: %s", describe, describe_error(exc))

    def _reset(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None

    def close(self) -> None:
        with self._lock:
            self._reset()


class RpcServer:
    """Serves ``endpoints`` (method name → callable) on ``topic`` of the bus at ``transport_url``.

    An endpoint is called as ``fn(context, **args)`` with a RequestContext; what it returns must
    be JSON-serialisable. A CoveError it raises is replied by class name and message; any other
    exception is logged with its traceback and replied as ``RemoteError``.
    """

    def __init__(
        self,
        transport_url: str,
        topic: str,
        endpoints: Mapping[str, Endpoint],
        *,
        workers: int = 8,
        connect_timeout: float = 5.0,
        observer: RpcObserver | None = None,
    ) -> None:
        """``observer`` is told of every request handled (``cove.rpc.observer``)."""
        if workers < 1:
            raise ValueError("an RPC server needs at least one worker")
        transport.check_topic(topic)
        self._url = transport_url
        self._topic = topic
        self._endpoints = dict(endpoints)
        self._workers = workers
        self._connect_timeout = connect_timeout
        self._observer = observer
        self._stopping = threading.Event()
        self._consuming = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = threading.Condition()
        self._in_flight = 0
        self._last_error = unreachable(transport_url, "not connected yet").message
        self._replier = _Replier(transport_url, connect_timeout)

    def __repr__(self) -> str:
        return f"RpcServer({transport.redact_url(self._url)!r}, topic={self._topic!r})"

    @property
    def topic(self) -> str:
        return self._topic

    # -- life cycle --------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Consume and dispatch until ``stop()``; survives the broker going away.

        On stop, requests already taken are finished (and replied to) before it returns.
        """
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix=f"rpc-{self._topic}")
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    bus = BusConnection.connect(
                        self._url,
                        timeout=self._connect_timeout,
                        heartbeat=HEARTBEAT,
                        cancel=self._stopping,
                    )
                except ServiceUnavailable as exc:
                    self._last_error = exc.message
                    LOG.warning("%s; retrying in %.1f s", exc.message, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                try:
                    self._consume(bus, pool)  # returns once stopping
                except bus.errors as exc:
                    LOG.warning(
                        "lost the message bus at %s while serving %s (%s); reconnecting",
                        transport.redact_url(self._url),
                        self._topic,
                        describe_error(exc),
                    )
                    # Connected before it broke: the broker has only just gone, retry at once.
                    backoff = 0.1
                except Exception:
                    # A fault of kombu's or ours: a server process must not die of it.
                    LOG.exception("unexpected error while serving %s; reconnecting", self._topic)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                finally:
                    self._consuming.clear()
                    bus.close()
        finally:
            pool.shutdown(wait=True)
            self._replier.close()
            self._finished.set()
            LOG.info("stopped serving %s", self._topic)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; return it once the server is consuming.

        Raises ServiceUnavailable (and stops the thread) when the bus could not be reached
        within the connect timeout.
        """
        if self._thread is not None:
            raise RuntimeError("this RPC server was already started")
        thread = threading.Thread(
            target=self.serve_forever, name=f"rpc-server-{self._topic}", daemon=True
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + self._connect_timeout
        while not self._consuming.wait(0.02):
            if self._finished.is_set():
                raise ServiceUnavailable(f"RPC server for {self._topic} ended while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(self._last_error)
        return thread

    def stop(self, timeout: float = 30.0) -> None:
        """Stop consuming; wait (up to ``timeout``) for requests already taken to finish."""
        self._stopping.set()
        with self._busy:
            self._busy.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def consuming(self) -> bool:
        return self._consuming.is_set()

    def wait_consuming(self, timeout: float) -> bool:
        """Whether the server consumes within ``timeout`` seconds."""
        return self._consuming.wait(timeout)

    # -- consuming ---------------------------------------------------------------------------

    def _consume(self, bus: BusConnection, pool: ThreadPoolExecutor) -> None:
        # Prefetch 1 with ack-on-receipt: the broker hands out one request at a time, and the
        # loop below takes no more while every worker is busy.
        bus.consume_topic(self._topic, lambda message: self._on_message(message, pool), prefetch=1)
        self._consuming.set()
        LOG.info("serving %s on %s", self._topic, transport.redact_url(self._url))
        while not self._stopping.is_set():
            bus.heartbeat_check()
            with self._busy:
                if self._in_flight >= self._workers:
                    # Every worker is busy: leave further requests to other servers.
                    self._busy.wait(POLL_INTERVAL)
                    continue
            bus.drain(POLL_INTERVAL)

    def _on_message(self, message: BusMessage, pool: ThreadPoolExecutor) -> None:
        message.ack()
        try:
            self._accept(message.body, pool)
        except Exception:
            # Whatever a message holds, it must not take the server down.
            LOG.exception("error while taking a message on %s", self._topic)

    def _accept(self, body: bytes | str, pool: ThreadPoolExecutor) -> None:
        try:
            request = decode_request(body)
        except InvalidMessage as exc:
            LOG.warning("dropping a message on %s: %s", self._topic, exc)
            return
        if request.expired():
            LOG.warning(
                "dropping an expired call on %s (%s, sent %s, ttl %g s)",
                self._topic,
                request.describe(),
                request.sent_at.isoformat(),
                request.ttl,
            )
            return
        endpoint = self._endpoints.get(request.method)
        if endpoint is None:
            LOG.error("unknown method on %s: %s", self._topic, request.describe())
            self._reply_error(
                request, UnknownMethod.__name__, f"{self._topic} has no method {request.method!r}"
            )
            return
        with self._busy:
            self._in_flight += 1
        try:
            pool.submit(self._dispatch, endpoint, request)
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        with self._busy:
            self._in_flight -= 1
            self._busy.notify_all()

    # -- dispatch (worker threads) -----------------------------------------------------------

    def _dispatch(self, endpoint: Endpoint, request: Request) -> None:
        try:
            if request.expired():
                # It waited for a free worker longer than its caller waits for the reply.
                LOG.warning("dropping an expired call on %s (%s)", self._topic, request.describe())
                return
            LOG.debug("handling %s on %s", request.describe(), self._topic)
            try:
                result = self._observed(endpoint, request)
            except CoveError as exc:
                LOG.info(
                    "%s on %s failed: %s: %s",
                    request.describe(),
                    self._topic,
                    type(exc).__name__,
                    exc.message,
                )
                self._reply_error(request, *error_reply_fields(exc))
                return
            except Exception as exc:
                LOG.exception(
                    "%s on %s raised an unexpected error", request.describe(), self._topic
                )
                self._reply_error(request, *error_reply_fields(exc))
                return
            if request.reply_to is not None:
                try:
                    body = encode_result(request.msg_id, result)
                except (TypeError, ValueError) as exc:
                    LOG.error(
                        "%s on %s returned a non-JSON result", request.describe(), self._topic
                    )
                    self._reply_error(
                        request,
                        REMOTE_ERROR,
                        f"{type(exc).__name__}: the result of {request.method} is not "
                        "JSON-serialisable",
                    )
                    return
                self._replier.send(request.reply_to, body, request.describe())
        finally:
            self._done()

    def _observed(self, endpoint: Endpoint, request: Request) -> Any:
        if self._observer is None:
            return endpoint(request.request_context, **request.args)
        start = time.monotonic()
        error = None
        try:
            return endpoint(request.request_context, **request.args)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self._observer.handled(self._topic, request.method, time.monotonic() - start, error)

    def _reply_error(self, request: Request, error_type: str, message: str) -> None:
        if request.reply_to is not None:
            body = encode_error(request.msg_id, error_type, message)
            self._replier.send(request.reply_to, body, request.describe())
