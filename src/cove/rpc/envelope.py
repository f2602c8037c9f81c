"""The RPC envelope: what one message on the Cove bus looks like, and how it is checked.

A request is one JSON object::

    {"v": 1, "method": str, "args": {...},
     "context": {"request_id": str, "project_id": str | None, "user_id": str | None},
     "msg_id": uuid, "sent_at": ISO-8601 UTC}

and a call adds ``"reply_to"`` (the caller's reply queue) and ``"ttl"`` (seconds, the call's
timeout). A reply is ``{"msg_id", "result"}`` or ``{"msg_id", "error": {"type", "message"}}``.

This module is pure (no I/O) so the format is tested without a broker. Nothing here ever puts
``args`` into an exception message: they carry passwords.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cove.common.errors import CoveError, RemoteError, error_class
from cove.common.ids import isoformat, new_id, utcnow

#: The envelope version this code speaks. A message with another version is dropped.
VERSION = 1
#: The longest a caller may wait for a reply (one day): anything longer is a mistake.
MAX_TTL = 86400.0

#: The error type of an exception that is not a Cove error.
REMOTE_ERROR = RemoteError.__name__


class InvalidMessage(ValueError):
    """A message is not a valid envelope. The text never quotes the message's content."""


@dataclass(frozen=True)
class RequestContext:
    """Who asked for an RPC, carried beside its arguments. Never holds a secret."""

    request_id: str = field(default_factory=new_id)
    project_id: str | None = None
    user_id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "request_id": self.request_id,
            "project_id": self.project_id,
            "user_id": self.user_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestContext:
        """Build a context from its dict form; unknown keys are ignored.

        A missing request id gets a new one. Raises ValueError when a field has the wrong type.
        """
        request_id = data.get("request_id") or new_id()
        if not isinstance(request_id, str):
            raise ValueError("context.request_id must be a string")
        values: dict[str, str | None] = {}
        for key in ("project_id", "user_id"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"context.{key} must be a string or null")
            values[key] = value
        return cls(request_id=request_id, **values)


def _field(
    data: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = True,
    non_empty: bool = False,
    where: str = "",
) -> Any:
    """One checked field of a decoded message. The error names the field, never its value."""
    label = f"{where}{name}"
    if name not in data or data[name] is None:
        if required:
            raise InvalidMessage(f"invalid envelope: {label}: field required")
        return None
    value = data[name]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise InvalidMessage(f"invalid envelope: {label}: wrong type")
    if non_empty and not value:
        raise InvalidMessage(f"invalid envelope: {label}: must not be empty")
    return value


@dataclass(frozen=True)
class Request:
    """A decoded, validated request envelope (a cast, or a call when ``reply_to`` is set).

    Unknown keys are ignored so a newer sender may add optional fields within version 1.
    """

    method: str
    args: dict[str, Any]
    context: RequestContext
    msg_id: str
    sent_at: datetime
    reply_to: str | None = None
    ttl: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """Raises InvalidMessage naming the first bad field."""
        ctx = _field(data, "context", dict)
        _field(ctx, "request_id", str, non_empty=True, where="context.")
        for key in ("project_id", "user_id"):
            _field(ctx, key, str, required=False, where="context.")
        sent_text = _field(data, "sent_at", str)
        try:
            sent_at = datetime.fromisoformat(sent_text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidMessage("invalid envelope: sent_at: not an ISO-8601 time") from None
        if sent_at.tzinfo is None:
            raise InvalidMessage("invalid envelope: sent_at: the time zone is missing")
        if sent_at.year > 9000:
            raise InvalidMessage("invalid envelope: sent_at: out of range")
        ttl = _field(data, "ttl", (int, float), required=False)
        if ttl is not None and not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL):
            raise InvalidMessage(f"invalid envelope: ttl: must be between 0 and {MAX_TTL} s")
        return cls(
            method=_field(data, "method", str, non_empty=True),
            args=_field(data, "args", dict),
            context=RequestContext.from_dict(ctx),
            msg_id=_field(data, "msg_id", str, non_empty=True),
            sent_at=sent_at,
            reply_to=_field(data, "reply_to", str, required=False, non_empty=True),
            ttl=None if ttl is None else float(ttl),
        )

    @property
    def is_call(self) -> bool:
        return self.reply_to is not None

    @property
    def request_context(self) -> RequestContext:
        return self.context

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the sender has stopped waiting: ``sent_at + ttl`` is in the past.

        A message without a ttl (a cast) never expires. Clocks of sender and receiver are
        assumed to agree within a fraction of the ttl.
        """
        if self.ttl is None:
            return False
        return (now or utcnow()) > self.sent_at + timedelta(seconds=self.ttl)

    def describe(self) -> str:
        """What may be logged about this request: never its args."""
        return f"method={self.method} msg_id={self.msg_id} request_id={self.context.request_id}"


@dataclass(frozen=True)
class ReplyError:
    type: str
    message: str


@dataclass(frozen=True)
class Reply:
    """A decoded reply: exactly one of ``result`` and ``error`` was sent."""

    msg_id: str
    result: Any = None
    error: ReplyError | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        """Raises InvalidMessage naming the first bad field."""
        msg_id = _field(data, "msg_id", str, non_empty=True)
        error = None
        if "error" in data:
            raw = _field(data, "error", dict)
            error = ReplyError(
                _field(raw, "type", str, non_empty=True, where="error."),
                _field(raw, "message", str, where="error."),
            )
        return cls(msg_id=msg_id, result=data.get("result"), error=error)

    def unwrap(self) -> Any:
        """Return the result, or raise the error the server replied with.

        Raises the Cove error class named in the reply, with the remote message, or
        ``RemoteError`` when the name is not one of Cove's errors.
        """
        if self.error is None:
            return self.result
        raise error_from_reply(self.error.type, self.error.message)


def _dumps(obj: Mapping[str, Any]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and other languages would reject them.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_request(
    method: str,
    args: Mapping[str, Any],
    context: RequestContext,
    *,
    msg_id: str | None = None,
    reply_to: str | None = None,
    ttl: float | None = None,
    sent_at: datetime | None = None,
) -> tuple[str, str]:
    """Encode a request; returns ``(msg_id, body)``.

    Raises TypeError or ValueError when ``args`` are not JSON-serialisable (the message names
    the method, not the values).
    """
    if not method:
        raise ValueError("an RPC method name must not be empty")
    msg_id = msg_id or new_id()
    envelope: dict[str, Any] = {
        "v": VERSION,
        "method": method,
        "args": dict(args),
        "context": context.to_dict(),
        "msg_id": msg_id,
        "sent_at": isoformat(sent_at or utcnow()),
    }
    if reply_to is not None:
        if ttl is None or ttl <= 0:
            raise ValueError("a call needs a positive ttl")
        envelope["reply_to"] = reply_to
        envelope["ttl"] = ttl
    try:
        return msg_id, _dumps(envelope)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"arguments of {method} are not JSON-serialisable") from None


def _load_object(body: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"not a JSON object but a {type(data).__name__}")
    return data


def decode_request(body: bytes | str) -> Request:
    """Decode and validate a request envelope. Raises InvalidMessage."""
    data = _load_object(body)
    version = data.get("v")
    if type(version) is not int or version != VERSION:
        shown = version if type(version) is int else type(version).__name__
        raise InvalidMessage(f"unsupported envelope version {shown}")
    return Request.from_dict(data)


def encode_result(msg_id: str, result: Any) -> str:
    """Encode a successful reply. Raises TypeError or ValueError when ``result`` is not JSON."""
    return _dumps({"msg_id": msg_id, "result": result})


def encode_error(msg_id: str, error_type: str, message: str) -> str:
    return _dumps({"msg_id": msg_id, "error": {"type": error_type, "message": message}})


def error_reply_fields(exc: BaseException) -> tuple[str, str]:
    """``(type, message)`` describing ``exc`` in a reply.

    A Cove error travels by its class name; anything else becomes ``RemoteError`` with the
    exception's class name in front of its text.
    """
    if isinstance(exc, CoveError):
        return type(exc).__name__, exc.message
    return REMOTE_ERROR, f"{type(exc).__name__}: {exc}"


def decode_reply(body: bytes | str) -> Reply:
    """Decode and validate a reply. Raises InvalidMessage."""
    data = _load_object(body)
    if ("result" in data) == ("error" in data):
        raise InvalidMessage("a reply needs exactly one of 'result' and 'error'")
    return Reply.from_dict(data)


def error_from_reply(error_type: str, message: str) -> CoveError:
    """The exception a caller raises for an error reply."""
    cls = error_class(error_type)
    if cls is None:
        return RemoteError(f"{error_type}: {message}")
    try:
        return cls(message)
    except TypeError:
        # A Cove error whose constructor takes more than a message cannot be rebuilt here.
        return RemoteError(f"{error_type}: {message}")
