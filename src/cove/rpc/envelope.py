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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from cove.common.errors import CoveError, RemoteError, error_class
from cove.common.ids import isoformat, new_id, utcnow

#: The envelope version this code speaks. A message with another version is dropped.
VERSION = 1

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


class _WireContext(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str = Field(min_length=1)
    project_id: str | None = None
    user_id: str | None = None


class Request(BaseModel):
    """A decoded, validated request envelope (a cast, or a call when ``reply_to`` is set)."""

    # Unknown keys are ignored so a newer sender may add optional fields within version 1.
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1]
    method: str = Field(min_length=1)
    args: dict[str, Any]
    context: _WireContext
    msg_id: str = Field(min_length=1)
    sent_at: AwareDatetime
    reply_to: str | None = Field(default=None, min_length=1)
    ttl: float | None = Field(default=None, gt=0)

    @property
    def is_call(self) -> bool:
        return self.reply_to is not None

    @property
    def request_context(self) -> RequestContext:
        return RequestContext(
            request_id=self.context.request_id,
            project_id=self.context.project_id,
            user_id=self.context.user_id,
        )

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


class _WireError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field(min_length=1)
    message: str


class Reply(BaseModel):
    """A decoded reply: exactly one of ``result`` and ``error`` was sent."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    msg_id: str = Field(min_length=1)
    result: Any = None
    error: _WireError | None = None

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


def _validation_summary(exc: ValidationError) -> str:
    # Locations and messages only: pydantic's default text quotes the input values.
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


def decode_request(body: bytes | str) -> Request:
    """Decode and validate a request envelope. Raises InvalidMessage."""
    data = _load_object(body)
    version = data.get("v")
    if version != VERSION:
        shown = version if isinstance(version, int) else type(version).__name__
        raise InvalidMessage(f"unsupported envelope version {shown}")
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid envelope: {_validation_summary(exc)}") from None


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
    try:
        return Reply.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid reply: {_validation_summary(exc)}") from None


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
