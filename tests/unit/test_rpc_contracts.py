"""Every service's RPC table and its typed client agree, and nothing outside ``cove.rpc`` talks
to the bus in raw topics and hand-built argument dicts.

For each service the test compares the client's methods with the server's table (names,
parameters, their types and defaults, the result type), then calls every client method with
sample values on the fake bus of tests/fakes.py and decodes what went on the wire by the
server's annotations: what arrives must be what was sent.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cove.common.errors import GuestError, RpcTimeout
from cove.conductor.service import Conductor
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.service import GuestService
from cove.rpc import RequestContext, codec, topics
from cove.rpc.conductor import ConductorClient
from cove.rpc.guest import GuestClient, GuestReplicationClient
from cove.rpc.taskmanager import TaskManagerClient
from cove.rpc.typed import ServiceClient
from cove.taskmanager.service import TaskManager
from fakes import FakeBus

SRC = Path(__file__).resolve().parents[2] / "src" / "cove"


def _served(server: type) -> dict[str, Callable[..., Any]]:
    # The tables only bind methods: an instance made without __init__ is enough to read one.
    instance = object.__new__(server)
    if isinstance(instance, GuestService):
        # The guest's table also binds the methods of its admin endpoints.
        instance.admin_endpoints = object.__new__(GuestAdminEndpoints)
    return instance.endpoints()


def _table(server: type) -> dict[str, Callable[..., Any]]:
    return {name: fn.__wrapped__ for name, fn in _served(server).items()}


#: Each service's clients (the guest's RPCs are split over two, by subject), its server class
#: and its topic.
SERVICES: list[tuple[Callable[[FakeBus], list[ServiceClient]], type, str]] = [
    (lambda bus: [TaskManagerClient(bus)], TaskManager, topics.TASKMANAGER),  # type: ignore[arg-type]
    (lambda bus: [ConductorClient(bus)], Conductor, topics.CONDUCTOR),  # type: ignore[arg-type]
    (
        lambda bus: [GuestClient(bus, "i-1"), GuestReplicationClient(bus, "i-1")],  # type: ignore[arg-type]
        GuestService,
        topics.guest("i-1"),
    ),
]
IDS = ["taskmanager", "conductor", "guest"]


def _rpcs(clients: list[ServiceClient]) -> dict[str, Callable[..., Any]]:
    """The clients' RPC methods: the public ones that take the request context first."""
    out = {}
    for client in clients:
        for name, fn in inspect.getmembers(client, inspect.ismethod):
            params = list(inspect.signature(fn).parameters)
            if not name.startswith("_") and params[:1] == ["ctx"]:
                assert name not in out, f"two clients of one service have {name}"
                out[name] = fn
    return out


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(getattr(fn, "__func__", fn))
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, hints.get(p.name), p.default) for p in params[1:]]


@pytest.mark.parametrize(("make", "server", "topic"), SERVICES, ids=IDS)
def test_every_rpc_has_the_same_name_parameters_and_result_on_both_sides(
    make: Callable[[FakeBus], list[ServiceClient]], server: type, topic: str
) -> None:
    client_rpcs = _rpcs(make(FakeBus()))
    table = _table(server)
    assert sorted(client_rpcs) == sorted(table)
    for name, fn in client_rpcs.items():
        assert _shape(fn) == _shape(table[name]), name
        assert codec.result_type(fn) == codec.result_type(table[name]), name


def sample(tp: Any) -> Any:
    """A value of the type ``tp`` as an RPC would carry it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is list:
        return [sample(typing.get_args(tp)[0])]
    if origin is tuple:
        return (sample(typing.get_args(tp)[0]),)
    if origin is dict:
        return {"key": sample(typing.get_args(tp)[1])}
    if tp is type(None) or tp is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(tp)})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    values = {str: "text", int: 7, float: 2.5, bool: True, datetime: datetime.now(UTC)}
    return values[tp]


@pytest.mark.parametrize(("make", "server", "topic"), SERVICES, ids=IDS)
def test_what_a_client_sends_is_what_its_server_decodes(
    make: Callable[[FakeBus], list[ServiceClient]], server: type, topic: str
) -> None:
    bus = FakeBus()
    clients = make(bus)
    table = _table(server)
    for name, fn in _rpcs(clients).items():
        args = {p: sample(tp) for p, tp, _default in _shape(fn)}
        result = sample(codec.result_type(fn))
        bus.answer(name, codec.to_wire(result))
        assert fn(RequestContext(), **args) == result, name
        sent_topic, method, wire = bus.sent[-1]
        assert (sent_topic, method) == (topic, name)
        decoded = {
            a: codec.from_wire(tp, wire[a], a) for a, tp in codec.parameters(table[name]).items()
        }
        assert decoded == args, name


def test_the_server_refuses_arguments_of_the_wrong_type_without_quoting_them() -> None:
    served = codec.endpoint(object.__new__(TaskManager).delete_instance)
    with pytest.raises(Exception, match="instance_id: expected str") as caught:
        served(RequestContext(), instance_id=["s3cret"])
    assert "s3cret" not in str(caught.value)
    with pytest.raises(Exception, match="unknown argument"):
        served(RequestContext(), instance_id="x", extra=1)


def _bus_calls_outside_rpc() -> list[str]:
    """Every place outside cove.rpc that sends on the bus by hand or names a topic itself."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "rpc"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                found += [f"{where}: {problem}" for problem in _raw_call(node)]
            if isinstance(node, ast.Constant) and node.value == "guestagent.":
                found.append(f"{where}: the guest topic prefix")
            if isinstance(node, ast.JoinedStr):
                head = node.values[0] if node.values else None
                if isinstance(head, ast.Constant) and str(head.value).endswith("guestagent."):
                    found.append(f"{where}: a guest topic built by hand")
    return found


def _raw_call(node: ast.Call) -> list[str]:
    func = ast.unparse(node.func)
    if isinstance(node.func, ast.Attribute) and node.func.attr in (
        "cast",
        "call",
        "declare_topic",
        "delete_topic",
    ):
        return [f"{func}(...) outside the typed clients"]
    if func.endswith("RpcServer"):
        topic = node.args[1] if len(node.args) > 1 else None
        topic = next((k.value for k in node.keywords if k.arg == "topic"), topic)
        if topic is None or isinstance(topic, ast.Constant | ast.JoinedStr):
            return ["RpcServer on a topic not taken from cove.rpc.topics"]
    return []


def test_no_raw_topics_or_argument_dicts_outside_the_rpc_package() -> None:
    assert _bus_calls_outside_rpc() == []


def test_a_guest_that_answers_oddly_or_late_is_named_in_the_error() -> None:
    bus = FakeBus()
    guest = GuestClient(bus, "i-9", timeout=3)  # type: ignore[arg-type]
    bus.answer("min_ram_mb", "lots")
    with pytest.raises(GuestError, match="The guest agent of instance i-9 gave an unexpected"):
        guest.min_ram_mb(RequestContext())

    bus.answer(
        "min_ram_mb", RpcTimeout("no reply to min_ram_mb on topic guestagent.i-9 (msg_id=x)")
    )
    with pytest.raises(
        RpcTimeout, match=r"^The guest agent of instance i-9 did not answer within 3 s\.$"
    ):
        guest.min_ram_mb(RequestContext())
