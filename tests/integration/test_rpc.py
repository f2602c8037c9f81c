"""The RPC layer against real brokers: a private Redis and a private RabbitMQ.

Every test runs over both transports (only the URL differs) on a topic of its own. Waits poll a
condition; nothing sleeps longer than it must.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

from cove.common.errors import (
    InstanceNotFound,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownMethod,
)
from cove.rpc import RequestContext, RpcClient, RpcServer
from servers import free_port, remove_tree, start_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = "s3cret-Password-never-logged"

Serve = Callable[..., RpcServer]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


class Recorder:
    """Endpoints that record what they were called with, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def record(self, method: str, **args: Any) -> None:
        with self.lock:
            self.calls.append((method, args))

    def count(self, method: str) -> int:
        with self.lock:
            return sum(1 for name, _ in self.calls if name == method)

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        def echo(ctx: RequestContext, **args: Any) -> dict[str, Any]:
            self.record("echo", **args)
            return {"args": args, "context": ctx.to_dict()}

        def note(ctx: RequestContext, **args: Any) -> None:
            self.record("note", **args)

        def expired_target(ctx: RequestContext, **args: Any) -> str:
            self.record("expired_target", **args)
            return "ran"

        def missing(ctx: RequestContext, name: str) -> None:
            raise InstanceNotFound(name)

        def broken(ctx: RequestContext) -> None:
            raise KeyError("no-such-key")

        def not_json(ctx: RequestContext) -> object:
            return {1, 2, 3}

        def slow(ctx: RequestContext, seconds: float, value: str) -> str:
            time.sleep(seconds)
            return value

        return {
            "echo": echo,
            "note": note,
            "expired_target": expired_target,
            "missing": missing,
            "broken": broken,
            "not_json": not_json,
            "slow": slow,
        }


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def bus_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_server").url
    return url


@pytest.fixture
def client(bus_url: str) -> Iterator[RpcClient]:
    rpc = RpcClient(bus_url, connect_timeout=3)
    yield rpc
    rpc.close()


@pytest.fixture
def topic(client: RpcClient) -> Iterator[str]:
    name = f"test.{uuid.uuid4().hex[:12]}"
    yield name
    client.delete_topic(name)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def serve(bus_url: str, topic: str, recorder: Recorder) -> Iterator[Serve]:
    """Start servers on the test's topic; all are stopped at the end of the test."""
    started: list[RpcServer] = []

    def start(
        endpoints: Mapping[str, Callable[..., Any]] | None = None, *, workers: int = 8
    ) -> RpcServer:
        server = RpcServer(
            bus_url, topic, endpoints or recorder.endpoints(), workers=workers, connect_timeout=5
        )
        server.start()
        started.append(server)
        return server

    yield start
    # Stop them side by side: each stop waits for its consumer loop to notice.
    stoppers = [threading.Thread(target=server.stop) for server in started]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


# -- calls ----------------------------------------------------------------------------------------


def test_call_returns_the_result_and_carries_the_context(
    client: RpcClient, topic: str, serve: Serve
) -> None:
    serve()
    ctx = RequestContext(project_id="proj", user_id="user")
    result = client.call(topic, "echo", {"n": 1, "items": ["a", None]}, context=ctx, timeout=5)
    assert result == {"args": {"n": 1, "items": ["a", None]}, "context": ctx.to_dict()}


def test_a_cove_error_is_raised_on_the_caller(client: RpcClient, topic: str, serve: Serve) -> None:
    serve()
    with pytest.raises(InstanceNotFound) as info:
        client.call(topic, "missing", {"name": "x"}, timeout=5)
    assert info.value.message == "x"


def test_an_unexpected_exception_becomes_remote_error(
    client: RpcClient, topic: str, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    serve()
    with caplog.at_level(logging.ERROR, logger="cove.rpc"), pytest.raises(RemoteError) as info:
        client.call(topic, "broken", {}, timeout=5)
    assert info.value.message == "KeyError: 'no-such-key'"
    # The server logged it with its traceback.
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_wrong_arguments_become_remote_error(client: RpcClient, topic: str, serve: Serve) -> None:
    serve()
    with pytest.raises(RemoteError, match="TypeError"):
        client.call(topic, "missing", {"nme": "typo"}, timeout=5)


def test_a_result_that_is_not_json_becomes_remote_error(
    client: RpcClient, topic: str, serve: Serve
) -> None:
    serve()
    with pytest.raises(RemoteError, match="not JSON-serialisable"):
        client.call(topic, "not_json", {}, timeout=5)


def test_an_unknown_method_is_an_error_reply(client: RpcClient, topic: str, serve: Serve) -> None:
    serve()
    with pytest.raises(UnknownMethod, match="no_such_method"):
        client.call(topic, "no_such_method", {}, timeout=5)
    # The server is still serving.
    assert client.call(topic, "echo", {}, timeout=5)["args"] == {}


def test_a_call_without_a_server_times_out(client: RpcClient, topic: str) -> None:
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        client.call(topic, "echo", {}, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 1.5


def test_a_stale_reply_is_not_taken_for_the_next_one(
    client: RpcClient, topic: str, serve: Serve
) -> None:
    serve()
    with pytest.raises(RpcTimeout):
        client.call(topic, "slow", {"seconds": 0.3, "value": "late"}, timeout=0.1)
    # The late reply reaches this thread's reply queue while the next call waits.
    assert client.call(topic, "slow", {"seconds": 0.5, "value": "mine"}, timeout=5) == "mine"


def test_calls_run_concurrently(client: RpcClient, topic: str, serve: Serve) -> None:
    barrier = threading.Barrier(4, timeout=10)

    def rendezvous(ctx: RequestContext, value: int) -> int:
        barrier.wait()  # only passes when four handlers run at the same time
        return value

    serve({"rendezvous": rendezvous}, workers=4)
    results: dict[int, Any] = {}

    def worker(value: int) -> None:
        try:
            results[value] = client.call(topic, "rendezvous", {"value": value}, timeout=15)
        except Exception as exc:
            results[value] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {i: i for i in range(4)}


def test_concurrent_callers_each_get_their_own_answer(
    client: RpcClient, topic: str, serve: Serve
) -> None:
    serve()
    errors: list[BaseException] = []
    answers: dict[tuple[int, int], Any] = {}

    def caller(thread_no: int) -> None:
        try:
            for i in range(10):
                result = client.call(topic, "echo", {"t": thread_no, "i": i}, timeout=10)
                answers[(thread_no, i)] = result["args"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert answers == {(t, i): {"t": t, "i": i} for t in range(6) for i in range(10)}


def test_an_expired_call_is_not_executed(
    client: RpcClient, topic: str, serve: Serve, recorder: Recorder
) -> None:
    client.declare_topic(topic)
    with pytest.raises(RpcTimeout):
        client.call(topic, "expired_target", {"password": SECRET}, timeout=0.3)
    time.sleep(0.05)  # sent_at is a hair later than the moment the caller started its clock
    serve()
    # Requests are taken in order: once this one is answered the expired one was seen.
    client.call(topic, "echo", {}, timeout=5)
    assert recorder.count("expired_target") == 0


# -- casts and topics -----------------------------------------------------------------------------


def test_a_cast_to_a_declared_topic_waits_for_its_server(
    client: RpcClient, topic: str, serve: Serve, recorder: Recorder
) -> None:
    client.declare_topic(topic)
    client.declare_topic(topic)  # idempotent
    for i in range(3):
        client.cast(topic, "note", {"i": i})
    serve()
    wait_for(lambda: recorder.count("note") == 3)
    assert sorted(args["i"] for _, args in recorder.calls) == [0, 1, 2]


def test_servers_on_one_topic_handle_each_cast_exactly_once(
    client: RpcClient, topic: str, serve: Serve
) -> None:
    handled: list[tuple[str, int]] = []
    lock = threading.Lock()

    def endpoints(name: str) -> dict[str, Callable[..., Any]]:
        def work(ctx: RequestContext, i: int) -> None:
            time.sleep(0.01)
            with lock:
                handled.append((name, i))

        return {"work": work}

    serve(endpoints("a"), workers=1)
    serve(endpoints("b"), workers=1)
    count = 40
    for i in range(count):
        client.cast(topic, "work", {"i": i})
    wait_for(lambda: len(handled) >= count)
    time.sleep(0.2)  # a duplicate would show up now
    assert sorted(i for _, i in handled) == list(range(count))
    assert {name for name, _ in handled} == {"a", "b"}


def test_delete_topic_drops_pending_messages(
    client: RpcClient, topic: str, serve: Serve, recorder: Recorder
) -> None:
    client.declare_topic(topic)
    client.cast(topic, "note", {"i": 1})
    client.delete_topic(topic)
    client.delete_topic(topic)  # idempotent
    client.delete_topic(f"never-declared.{uuid.uuid4().hex}")
    serve()
    client.call(topic, "echo", {}, timeout=5)
    assert recorder.count("note") == 0


def test_an_unknown_cast_is_logged_and_skipped(
    client: RpcClient, topic: str, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    serve()
    with caplog.at_level(logging.WARNING, logger="cove.rpc"):
        client.cast(topic, "no_such_method", {"password": SECRET})
        client.call(topic, "echo", {}, timeout=5)
        wait_for(lambda: "no_such_method" in caplog.text)
    assert SECRET not in caplog.text


def test_invalid_messages_are_dropped_and_never_logged_with_their_args(
    bus_url: str,
    client: RpcClient,
    topic: str,
    serve: Serve,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve()
    bodies: list[str | bytes] = [
        b"\x00\xffnot json",
        "[1, 2]",
        json.dumps({"v": 2, "method": "note", "args": {"password": SECRET}}),
        json.dumps({"v": 1, "method": "note", "args": SECRET}),
        json.dumps({"v": 1, "method": "note", "args": {"password": SECRET}}),
    ]
    with caplog.at_level(logging.DEBUG, logger="cove.rpc"):
        # A raw kombu producer, as a foreign or broken sender would be.
        with Connection(bus_url) as conn:
            producer = Producer(conn.channel(), exchange=Exchange("cove", type="direct"))
            for body in bodies:
                producer.publish(body, routing_key=topic, content_type="application/json")
        client.call(topic, "echo", {"password": SECRET}, timeout=5)
        client.cast(topic, "note", {"password": SECRET})
        wait_for(lambda: recorder.count("note") == 1)
    assert recorder.count("note") == 1  # only the valid cast
    dropped = [r for r in caplog.records if "dropping a message" in r.getMessage()]
    assert len(dropped) == len(bodies)
    assert SECRET not in caplog.text


# -- the broker away ------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def dead_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return f"redis+socket://{tmp_path}/no-redis-here.sock"
    return f"amqp://cove:{SECRET}@127.0.0.1:{free_port()}//"


def test_an_unreachable_bus_raises_service_unavailable_in_time(dead_url: str) -> None:
    client = RpcClient(dead_url, connect_timeout=0.5)
    for action in (
        lambda: client.call("t", "echo", {}, timeout=30),
        lambda: client.cast("t", "echo", {"password": SECRET}),
        lambda: client.declare_topic("t"),
    ):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as info:
            action()
        assert time.monotonic() - started < 1.5
        assert not isinstance(info.value, RpcTimeout)
        assert "is unreachable" in info.value.message
        assert SECRET not in info.value.message
    client.close()


def test_a_server_that_cannot_reach_the_bus_fails_to_start(dead_url: str) -> None:
    server = RpcServer(dead_url, "t", {}, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        server.start()
    assert time.monotonic() - started < 2
    assert SECRET not in info.value.message


def test_server_and_client_survive_a_redis_restart() -> None:
    base = Path(tempfile.mkdtemp(prefix="cove-test-"))
    redis = start_redis(base)
    client = RpcClient(redis.url, connect_timeout=3)
    idle = RpcClient(redis.url, connect_timeout=3)
    server = RpcServer(redis.url, "restart", Recorder().endpoints(), connect_timeout=3)
    try:
        server.start()
        assert client.call("restart", "echo", {"n": 1}, timeout=5)["args"] == {"n": 1}
        assert idle.call("restart", "echo", {"n": 1}, timeout=5)["args"] == {"n": 1}
        redis.restart()

        # Requests sent before the server has declared its queue again are lost (the embedded
        # Redis keeps nothing across a restart): retry until the server is back.
        def answered() -> bool:
            try:
                return bool(client.call("restart", "echo", {"n": 2}, timeout=0.5))
            except ServiceUnavailable:  # RpcTimeout included
                return False

        wait_for(answered, timeout=15)
        assert server.consuming
        # A client whose connection predates the restart recovers on its first call.
        assert idle.call("restart", "echo", {"n": 3}, timeout=5)["args"] == {"n": 3}
    finally:
        server.stop()
        client.close()
        idle.close()
        redis.stop()
        remove_tree(base)


def test_a_broker_that_stops_answering_holds_no_caller_past_its_timeout(
    rabbitmq_server: Any,
) -> None:
    """A broker that stops answering on a connection in use (stopped, or busy starting) makes
    a declare and a cast fail with ServiceUnavailable, never wait for good: a guest's heartbeat
    thread stuck there would leave its instance lost for ever."""
    client = RpcClient(rabbitmq_server.url, connect_timeout=1)
    topic = f"stalled-{uuid.uuid4().hex}"
    linked, stopped = threading.Event(), threading.Event()
    outcomes: list[BaseException | None] = []

    def attempt() -> None:
        # A link is per thread: make it here, in use, before the broker stops.
        client.declare_topic(topic)
        linked.set()
        stopped.wait(30)
        for action in (
            lambda: client.declare_topic(f"{topic}-new"),
            lambda: client.cast(topic, "note", {"password": SECRET}),
        ):
            try:
                action()
                outcomes.append(None)
            except BaseException as exc:  # recorded for the assertion
                outcomes.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    assert linked.wait(30)
    os.killpg(rabbitmq_server.proc.pid, signal.SIGSTOP)
    try:
        stopped.set()
        # Each action gives up after its timeout and one reconnect (~2 s); far more means it
        # waits on the broker without limit.
        worker.join(30)
        stuck = worker.is_alive()
    finally:
        os.killpg(rabbitmq_server.proc.pid, signal.SIGCONT)
    worker.join(30)
    assert not stuck, "a caller waited on a silent broker past its timeout"
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, ServiceUnavailable), outcome
        assert SECRET not in outcome.message
    # And the broker serves the client again once it answers.
    wait_for(lambda: _declared(client, f"{topic}-again"), timeout=30)
    client.close()


def _declared(client: RpcClient, topic: str) -> bool:
    try:
        client.declare_topic(topic)
        return True
    except ServiceUnavailable:
        return False


# -- observed (the control plane's metrics) -------------------------------------------------------


class Observed:
    """An observer that keeps what it is told (``cove.rpc.observer.RpcObserver``)."""

    def __init__(self) -> None:
        self.sends: list[tuple[str, str, str | None]] = []
        self.handles: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def sent(self, kind: str, topic: str, method: str, seconds: float, error: str | None) -> None:
        assert seconds >= 0
        with self._lock:
            self.sends.append((kind, method, error))

    def handled(self, topic: str, method: str, seconds: float, error: str | None) -> None:
        assert seconds >= 0
        with self._lock:
            self.handles.append((method, error))


def test_requests_sent_and_handled_are_told_to_the_observers(
    bus_url: str, topic: str, recorder: Recorder
) -> None:
    seen = Observed()
    server = RpcServer(bus_url, topic, recorder.endpoints(), connect_timeout=5, observer=seen)
    server.start()
    client = RpcClient(bus_url, connect_timeout=3, observer=seen)
    try:
        assert client.call(topic, "echo", {"n": 1}, timeout=5)["args"] == {"n": 1}
        with pytest.raises(InstanceNotFound):
            client.call(topic, "missing", {"name": "x"}, timeout=5)
        client.cast(topic, "note", {"n": 2})
        wait_for(lambda: recorder.count("note") == 1)
        wait_for(lambda: len(seen.handles) == 3)
    finally:
        client.close()
        server.stop()
    assert seen.sends == [
        ("call", "echo", None),
        ("call", "missing", "InstanceNotFound"),
        ("cast", "note", None),
    ]
    assert sorted(seen.handles, key=str) == sorted(
        [("echo", None), ("missing", "InstanceNotFound"), ("note", None)], key=str
    )
