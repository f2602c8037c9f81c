"""Typed values on the wire: frozen dataclasses, enums and datetimes to JSON and back.

Every RPC method is an ordinary typed Python function; this module turns its arguments and its
result into JSON values and back by the function's own annotations, so neither side builds or
re-parses dicts by hand. What it carries: ``None``, ``bool``, ``int``, ``float``, ``str``,
``datetime`` (ISO-8601 UTC text), string enums, lists, tuples, ``dict[str, ...]``, unions of
these, and dataclasses made of them (an object with one key per field; unknown keys are ignored
so a newer sender may add optional fields).

Decoding is strict (``True`` is no integer, ``"1"`` no number) and its errors name the field,
never the value: arguments carry passwords.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import Any

from cove.common.errors import InvalidArguments
from cove.common.ids import isoformat, parse_iso


class WireError(ValueError):
    """A value does not have the type its annotation gives. The text names where, not what."""


def to_wire(value: Any) -> Any:
    """``value`` as JSON values (dataclasses become objects, enums their values)."""
    if value is None or (
        isinstance(value, bool | int | float | str) and not isinstance(value, enum.Enum)
    ):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return isoformat(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} cannot travel on the bus")


def from_wire(tp: Any, data: Any, where: str = "value") -> Any:
    """``data`` (JSON values) as the type ``tp``. Raises WireError naming ``where``."""
    if tp is Any:
        return data
    if tp is None or tp is type(None):
        if data is not None:
            raise WireError(f"{where}: expected null")
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _from_union(typing.get_args(tp), data, where)
    if origin in (list, tuple):
        return _from_sequence(tp, origin, data, where)
    if origin in (dict, Mapping) or tp is dict:
        return _from_mapping(tp, data, where)
    if isinstance(tp, type):
        return _from_class(tp, data, where)
    raise TypeError(f"{where}: the type {tp!r} cannot travel on the bus")


def _from_union(members: tuple[Any, ...], data: Any, where: str) -> Any:
    for member in members:
        try:
            return from_wire(member, data, where)
        except WireError:
            continue
    raise WireError(f"{where}: wrong type")


def _from_sequence(tp: Any, origin: type, data: Any, where: str) -> Any:
    if not isinstance(data, list | tuple):
        raise WireError(f"{where}: expected a list")
    args = typing.get_args(tp)
    item = args[0] if args else Any
    values = [from_wire(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    return tuple(values) if origin is tuple else values


def _from_mapping(tp: Any, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: expected an object")
    args = typing.get_args(tp)
    item = args[1] if len(args) == 2 else Any
    return {str(k): from_wire(item, v, f"{where}.{k}") for k, v in data.items()}


def _from_class(tp: type, data: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _from_dataclass(tp, data, where)
    if issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise WireError(f"{where}: not one of the known values") from None
    if tp is datetime:
        if not isinstance(data, str):
            raise WireError(f"{where}: expected a timestamp")
        try:
            return parse_iso(data)
        except ValueError:
            raise WireError(f"{where}: not an ISO-8601 timestamp") from None
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if tp in (bool, int, float, str):
        if isinstance(data, tp) and (tp is bool or not isinstance(data, bool)):
            return data
        raise WireError(f"{where}: expected {tp.__name__}")
    raise TypeError(f"{where}: the type {tp.__name__} cannot travel on the bus")


def _from_dataclass(tp: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: expected an object")
    hints = _hints(tp)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(tp):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{where}.{f.name}: field required")
            continue
        values[f.name] = from_wire(hints[f.name], data[f.name], f"{where}.{f.name}")
    return tp(**values)


@cache
def _hints(target: Any) -> dict[str, Any]:
    return typing.get_type_hints(target)


# -- functions --------------------------------------------------------------------------------


def parameters(fn: Callable[..., Any]) -> dict[str, Any]:
    """The typed parameters of an RPC function after its request context, by name."""
    hints = _hints(getattr(fn, "__func__", fn))
    names = list(inspect.signature(fn).parameters)[1:]  # the first is the request context
    return {name: hints[name] for name in names}


def result_type(fn: Callable[..., Any]) -> Any:
    """The annotated result type of an RPC function."""
    return _hints(getattr(fn, "__func__", fn)).get("return", Any)


def endpoint(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as an RPC server calls it: wire arguments in, wire result out.

    Arguments are decoded by ``fn``'s annotations (a missing one with a default takes it; an
    unknown one, or one of the wrong type, is refused with InvalidArguments before ``fn`` runs).
    """
    params = parameters(fn)
    signature = inspect.signature(fn)
    name = getattr(fn, "__name__", "endpoint")

    def serve(ctx: Any, **args: Any) -> Any:
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise InvalidArguments(f"{name}: unknown argument(s): {', '.join(unknown)}")
        decoded: dict[str, Any] = {}
        for arg, tp in params.items():
            if arg not in args:
                if signature.parameters[arg].default is inspect.Parameter.empty:
                    raise InvalidArguments(f"{name}: argument {arg} is required")
                continue
            try:
                decoded[arg] = from_wire(tp, args[arg], arg)
            except WireError as exc:
                raise InvalidArguments(f"{name}: {exc}") from None
        return to_wire(fn(ctx, **decoded))

    serve.__wrapped__ = fn  # type: ignore[attr-defined]
    return serve


def endpoints(table: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """A server's method table with every method wrapped by :func:`endpoint`."""
    return {name: endpoint(fn) for name, fn in table.items()}
