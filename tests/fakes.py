"""Stand-ins for the bus and the compute driver, shared by the tests.

Each models what its tests rely on of the real thing, and tests/integration/test_contracts.py
runs the same tests over the stand-in and the real thing (an ``RpcClient`` and ``RpcServer`` on a
private Redis; a ``LocalDriver`` in a temporary directory), so a stand-in that drifts from its
original fails there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import pytest

from cove.common.errors import ConfigurationError, UnknownMethod
from cove.compute.base import ComputeDriver
from cove.compute.endpoints import ClusterEndpoint, GroupEndpoint, PublishedEndpoint
from cove.compute.firewall import Guarded
from cove.domain.guest import GuestSettings
from cove.domain.status import ComputeState
from cove.rpc.envelope import (
    REMOTE_ERROR,
    RequestContext,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
    error_reply_fields,
)
from cove.rpc.transport import check_topic

LOG = logging.getLogger(__name__)

#: ``fail``'s method name that stands for every method.
ANY = "*"

Endpoint = Callable[..., Any]


class Sent(NamedTuple):
    """A cast or call as its receiver sees it: ``args`` decoded from the JSON that travelled."""

    topic: str
    method: str
    args: dict[str, Any]


class FakeBus:
    """``cove.rpc.RpcClient`` in memory: ``cast``, ``call``, ``declare_topic``, ``delete_topic``
    and ``close``, taking the same arguments, synchronous.

    Arguments travel as on the real bus: they must be JSON values (what ``cove.rpc.codec.to_wire``
    makes of a typed client's arguments; anything else raises TypeError or ValueError at the
    sender), and receivers and records see a decoded copy. Answers are JSON values as well.

    Records, in order: ``casts`` and ``calls`` (``Sent`` tuples), ``sent`` (both, interleaved),
    ``declared`` and ``deleted`` (one topic per request; both are idempotent).

    Who answers:

    * A topic given ``serve(topic, endpoints)`` is served as an ``RpcServer`` serves it:
      endpoints are called ``fn(context, **args)``; a cast runs its endpoint and drops (logs)
      whatever goes wrong; a call returns the endpoint's result, raises a Cove error again at
      the caller, any other exception as ``RemoteError``, and ``UnknownMethod`` for a method the
      table lacks.
    * Any other call is answered from ``answers`` by method name: a JSON value, a callable
      ``fn(context, **args)`` returning one, or an exception to raise at the caller (the guest
      did not answer: ``RpcTimeout``). A call nothing answers fails the test at once (the real
      bus would wait and raise ``RpcTimeout``; say so with an answer when that is the point).
    * A cast to a topic without a server is kept until one is served if the topic's queue
      exists (declared, or served before), and dropped otherwise; either way it is recorded.

    ``fail(method, error)`` makes the bus itself fail: nothing is sent, nothing recorded, and
    ``error`` is raised at the sender (``ServiceUnavailable`` when the bus is down).
    ``declare_topic`` and ``delete_topic`` count as calls of those names.
    """

    def __init__(self) -> None:
        self.casts: list[Sent] = []
        self.calls: list[Sent] = []
        self.sent: list[Sent] = []
        self.declared: list[str] = []
        self.deleted: list[str] = []
        #: Notifications published: (topic, message).
        self.notified: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}
        self.closed = False
        self._servers: dict[str, dict[str, Endpoint]] = {}
        self._queues: dict[str, list[tuple[str, str]]] = {}  # topic: (method, body) waiting
        self._failures: dict[tuple[str, str], BaseException] = {}

    def __repr__(self) -> str:
        return f"FakeBus(casts={len(self.casts)}, calls={len(self.calls)})"

    # -- telling it what to do ------------------------------------------------------------------

    def serve(self, topic: str, endpoints: Mapping[str, Endpoint]) -> None:
        """Serve ``topic`` with ``endpoints`` (e.g. a service's ``endpoints()``) from now on,
        delivering first the casts its queue kept."""
        check_topic(topic)
        self._servers[topic] = dict(endpoints)
        for method, body in self._queues.pop(topic, []):
            self._deliver_cast(topic, method, body)
        self._queues[topic] = []

    def answer(self, method: str, value: Any) -> None:
        """Answer calls of ``method`` (on topics without a server) with ``value``."""
        self.answers[method] = value

    def fail(
        self, method: str, error: BaseException | None, *, casts: bool = True, calls: bool = True
    ) -> None:
        """Make sending ``method`` (``ANY``: every method) raise ``error`` at the sender, for
        casts, calls or both; ``error=None`` makes it work again."""
        for kind, chosen in (("cast", casts), ("call", calls)):
            if not chosen:
                continue
            if error is None:
                self._failures.pop((kind, method), None)
            else:
                self._failures[(kind, method)] = error

    # -- what RpcClient offers ------------------------------------------------------------------

    def cast(
        self,
        topic: str,
        method: str,
        args: dict[str, Any],
        context: RequestContext | None = None,
    ) -> None:
        self._check_failure("cast", method)
        check_topic(topic)
        _, body = encode_request(method, args, context or RequestContext())
        record = Sent(topic, method, decode_request(body).args)
        self.casts.append(record)
        self.sent.append(record)
        if topic in self._servers:
            self._deliver_cast(topic, method, body)
        elif topic in self._queues:
            self._queues[topic].append((method, body))

    def call(
        self,
        topic: str,
        method: str,
        args: dict[str, Any],
        context: RequestContext | None = None,
        timeout: float = 30.0,
    ) -> Any:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._check_failure("call", method)
        check_topic(topic)
        msg_id, body = encode_request(
            method, args, context or RequestContext(), reply_to="fake", ttl=timeout
        )
        request = decode_request(body)
        record = Sent(topic, method, request.args)
        self.calls.append(record)
        self.sent.append(record)
        table = self._servers.get(topic)
        if table is not None:
            return self._serve_call(topic, table, request.request_context, method, msg_id, body)
        if method not in self.answers:
            pytest.fail(
                f"unexpected call of {method} on {topic}: no server and no answer "
                "(give the fake bus one with answer() or serve())"
            )
        answer = self.answers[method]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(request.request_context, **request.args)
        try:
            reply = encode_result(msg_id, answer)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the fake bus's answer to {method} is not JSON ({exc}): give wire values "
                "(cove.rpc.codec.to_wire)"
            ) from None
        return decode_reply(reply).unwrap()

    def declare_topic(self, topic: str) -> None:
        self._check_failure("call", "declare_topic")
        check_topic(topic)
        self.declared.append(topic)
        self._queues.setdefault(topic, [])

    def delete_topic(self, topic: str) -> None:
        self._check_failure("call", "delete_topic")
        check_topic(topic)
        self.deleted.append(topic)
        # The queue goes with what it kept; a server still consuming declares it again.
        self._queues.pop(topic, None)
        if topic in self._servers:
            self._queues[topic] = []

    def notify(self, topic: str, message: dict[str, Any]) -> None:
        self._check_failure("cast", "notify")
        check_topic(topic)
        json.dumps(message)  # what the real one sends must be JSON
        self.notified.append((topic, message))

    def close(self) -> None:
        """Like RpcClient's: the bus may be used again afterwards."""
        self.closed = True

    # -- inside ---------------------------------------------------------------------------------

    def _check_failure(self, kind: str, method: str) -> None:
        error = self._failures.get((kind, method)) or self._failures.get((kind, ANY))
        if error is not None:
            raise error

    def _deliver_cast(self, topic: str, method: str, body: str) -> None:
        request = decode_request(body)
        endpoint = self._servers[topic].get(method)
        if endpoint is None:
            LOG.error("unknown method on %s: %s (cast dropped)", topic, method)
            return
        try:
            endpoint(request.request_context, **request.args)
        except Exception:
            LOG.exception("cast %s on %s failed (dropped, as a server drops it)", method, topic)

    def _serve_call(
        self,
        topic: str,
        table: Mapping[str, Endpoint],
        context: RequestContext,
        method: str,
        msg_id: str,
        body: str,
    ) -> Any:
        endpoint = table.get(method)
        if endpoint is None:
            problem = f"{topic} has no method {method!r}"
            reply = encode_error(msg_id, UnknownMethod.__name__, problem)
            return decode_reply(reply).unwrap()
        try:
            result = endpoint(context, **decode_request(body).args)
        except Exception as exc:
            return decode_reply(encode_error(msg_id, *error_reply_fields(exc))).unwrap()
        try:
            reply = encode_result(msg_id, result)
        except (TypeError, ValueError) as exc:
            message = f"{type(exc).__name__}: the result of {method} is not JSON-serialisable"
            reply = encode_error(msg_id, REMOTE_ERROR, message)
        return decode_reply(reply).unwrap()


class FakeDriver(ComputeDriver):
    """A compute driver in memory that keeps per instance what a real one keeps: its settings
    and the state of its place.

    Records what was done: ``created`` and ``updated`` (the settings given), ``destroyed`` and
    ``revived`` (instance ids; ``revived`` lists agents ``ensure_running`` started again).

    As the local driver: ``create`` is idempotent and leaves the agent running; ``update`` and
    ``ensure_running`` need a placed instance (ConfigurationError otherwise); ``update`` returns
    the settings it replaced (None when it has none, see ``place``); ``state`` is ACTIVE while
    the agent runs, SHUTDOWN when it died (``stop_agent``) and ERROR for an instance it does not
    hold; ``destroy`` is idempotent and forgets the instance. Unlike it, the settings are kept
    as given (no ``instance_dir`` is filled in).

    ``fail(method, error)`` makes every later call of ``method`` raise ``error`` before doing
    anything (``error=None`` makes it work again).

    ``published`` and ``guarded`` hold the last state ``serve_endpoints`` and ``guard`` were
    given.
    """

    def __init__(self, name: str = "local") -> None:
        # The name rows are recorded with (the settings' default driver): the monitor looks
        # only at instances of its driver.
        self.name = name
        self.created: list[GuestSettings] = []
        self.updated: list[GuestSettings] = []
        self.destroyed: list[str] = []
        self.revived: list[str] = []
        self.settings: dict[str, GuestSettings | None] = {}
        self.states: dict[str, ComputeState] = {}
        self._failures: dict[str, BaseException] = {}
        self.published: list[PublishedEndpoint] = []
        self.guarded: list[Guarded] = []

    def __repr__(self) -> str:
        return f"FakeDriver({sorted(self.states)})"

    # -- telling it what to do ------------------------------------------------------------------

    def place(
        self,
        instance_id: str,
        settings: GuestSettings | None = None,
        state: ComputeState = ComputeState.ACTIVE,
    ) -> None:
        """Hold ``instance_id`` as if it had been placed before (by a build a test skipped),
        with ``settings`` (None: not known) and its agent in ``state``. Records nothing."""
        self.settings[instance_id] = settings
        self.states[instance_id] = state

    def stop_agent(self, instance_id: str) -> None:
        """The instance's agent dies (its place stays)."""
        assert instance_id in self.states, f"{instance_id} is not placed"
        self.states[instance_id] = ComputeState.SHUTDOWN

    def fail(self, method: str, error: BaseException | None) -> None:
        if error is None:
            self._failures.pop(method, None)
        else:
            self._failures[method] = error

    # -- the driver contract --------------------------------------------------------------------

    def create(self, spec: GuestSettings) -> None:
        self._check_failure("create")
        self.created.append(spec)
        self.settings[spec.instance_id] = spec
        self.states[spec.instance_id] = ComputeState.ACTIVE

    def update(self, spec: GuestSettings) -> GuestSettings | None:
        self._check_failure("update")
        self._placed(spec.instance_id)
        previous = self.settings[spec.instance_id]
        self.updated.append(spec)
        self.settings[spec.instance_id] = spec
        return previous

    def ensure_running(self, instance_id: str) -> bool:
        self._check_failure("ensure_running")
        self._placed(instance_id)
        if self.states[instance_id] is ComputeState.ACTIVE:
            return False
        self.revived.append(instance_id)
        self.states[instance_id] = ComputeState.ACTIVE
        return True

    def state(self, instance_id: str) -> ComputeState:
        self._check_failure("state")
        return self.states.get(instance_id, ComputeState.ERROR)

    def destroy(self, instance_id: str) -> None:
        self._check_failure("destroy")
        self.destroyed.append(instance_id)
        self.settings.pop(instance_id, None)
        self.states.pop(instance_id, None)

    # -- inside ---------------------------------------------------------------------------------

    def serve_endpoints(
        self,
        groups: Sequence[GroupEndpoint],
        clusters: Sequence[ClusterEndpoint] = (),
        published: Sequence[PublishedEndpoint] = (),
    ) -> bool:
        self._check_failure("serve_endpoints")
        self.published = list(published)
        return True

    def guard(self, guarded: Sequence[Guarded]) -> bool:
        self._check_failure("guard")
        self.guarded = list(guarded)
        return True

    def _check_failure(self, method: str) -> None:
        error = self._failures.get(method)
        if error is not None:
            raise error

    def _placed(self, instance_id: str) -> None:
        if instance_id not in self.states:
            raise ConfigurationError(f"instance {instance_id} has no guest config")
