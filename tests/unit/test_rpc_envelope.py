"""The RPC envelope and URL hygiene, without a broker."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cove.common.errors import (
    CoveError,
    InstanceNotFound,
    RemoteError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownMethod,
)
from cove.rpc import RequestContext, redact_url
from cove.rpc.envelope import (
    InvalidMessage,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
    error_from_reply,
    error_reply_fields,
)

SECRET = "hunter2-very-secret"


# -- RequestContext -------------------------------------------------------------------------------


def test_context_defaults_to_a_new_request_id() -> None:
    first, second = RequestContext(), RequestContext()
    assert uuid.UUID(first.request_id)
    assert first.request_id != second.request_id
    assert first.project_id is None and first.user_id is None


def test_context_round_trips_through_its_dict() -> None:
    ctx = RequestContext(request_id="req-1", project_id="p", user_id="u")
    assert ctx.to_dict() == {"request_id": "req-1", "project_id": "p", "user_id": "u"}
    assert RequestContext.from_dict(ctx.to_dict()) == ctx


def test_context_from_dict_ignores_unknown_keys_and_fills_request_id() -> None:
    ctx = RequestContext.from_dict({"project_id": "p", "roles": ["admin"]})
    assert ctx.project_id == "p"
    assert uuid.UUID(ctx.request_id)


@pytest.mark.parametrize(
    "data", [{"request_id": 5}, {"project_id": 5}, {"user_id": ["u"]}], ids=str
)
def test_context_from_dict_rejects_wrong_types(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RequestContext.from_dict(data)


def test_context_is_frozen() -> None:
    ctx = RequestContext()
    with pytest.raises(AttributeError):
        ctx.user_id = "someone"  # type: ignore[misc]


# -- requests -------------------------------------------------------------------------------------


def test_cast_envelope_has_exactly_the_contract_fields() -> None:
    ctx = RequestContext(request_id="r", project_id="p", user_id="u")
    sent_at = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    msg_id, body = encode_request("restart", {"force": True}, ctx, sent_at=sent_at)
    data = json.loads(body)
    assert data == {
        "v": 1,
        "method": "restart",
        "args": {"force": True},
        "context": {"request_id": "r", "project_id": "p", "user_id": "u"},
        "msg_id": msg_id,
        "sent_at": "2024-05-01T12:00:00.123456Z",
    }
    assert uuid.UUID(msg_id)


def test_call_envelope_adds_reply_to_and_ttl() -> None:
    msg_id, body = encode_request(
        "list_databases", {}, RequestContext(), msg_id="m-1", reply_to="cove.reply.x", ttl=12.5
    )
    data = json.loads(body)
    assert msg_id == "m-1" == data["msg_id"]
    assert data["reply_to"] == "cove.reply.x"
    assert data["ttl"] == 12.5


def test_call_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError):
        encode_request("m", {}, RequestContext(), reply_to="q", ttl=None)
    with pytest.raises(ValueError):
        encode_request("m", {}, RequestContext(), reply_to="q", ttl=0)


def test_request_round_trip() -> None:
    ctx = RequestContext(project_id="p")
    _, body = encode_request("m", {"a": [1, 2], "b": None}, ctx, reply_to="q", ttl=3)
    request = decode_request(body.encode())
    assert request.method == "m"
    assert request.args == {"a": [1, 2], "b": None}
    assert request.request_context == ctx
    assert request.is_call and request.reply_to == "q" and request.ttl == 3
    assert request.sent_at.tzinfo is not None


def test_args_that_are_not_json_are_refused_without_quoting_them() -> None:
    with pytest.raises(TypeError) as info:
        encode_request(
            "create_user", {"password": SECRET, "when": datetime.now()}, RequestContext()
        )
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError):
        encode_request("m", {"x": math.nan}, RequestContext())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf-8", "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object but a list"),
        ('"a string"', "not a JSON object but a str"),
        ('{"method": "m"}', "unsupported envelope version"),
        ('{"v": 2, "method": "m"}', "unsupported envelope version 2"),
        ('{"v": "1", "method": "m"}', "unsupported envelope version str"),
    ],
)
def test_decode_request_rejects_what_is_not_a_v1_envelope(body: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        decode_request(body)


def _valid() -> dict[str, object]:
    _, body = encode_request("m", {"password": SECRET}, RequestContext())
    data: dict[str, object] = json.loads(body)
    return data


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"args": SECRET}, "args"),
        ({"args": [SECRET]}, "args"),
        ({"method": ""}, "method"),
        ({"context": {"project_id": SECRET}}, "context.request_id"),
        ({"sent_at": "2024-05-01T12:00:00"}, "sent_at"),
        ({"sent_at": SECRET}, "sent_at"),
        ({"msg_id": None}, "msg_id"),
        ({"ttl": -1, "reply_to": "q"}, "ttl"),
    ],
)
def test_invalid_envelopes_name_the_field_but_never_the_value(
    change: dict[str, object], field: str
) -> None:
    data = _valid() | change
    with pytest.raises(InvalidMessage) as info:
        decode_request(json.dumps(data))
    assert field in str(info.value)
    assert SECRET not in str(info.value)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = _valid() | {"priority": 5}
    assert decode_request(json.dumps(data)).method == "m"


def test_describe_never_shows_args() -> None:
    request = decode_request(json.dumps(_valid()))
    text = request.describe()
    assert SECRET not in text
    assert request.msg_id in text and request.context.request_id in text and "m" in text


def test_a_cast_never_expires() -> None:
    request = decode_request(json.dumps(_valid() | {"sent_at": "2000-01-01T00:00:00Z"}))
    assert not request.expired()


def test_a_call_expires_after_its_ttl() -> None:
    sent_at = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    _, body = encode_request("m", {}, RequestContext(), reply_to="q", ttl=5, sent_at=sent_at)
    request = decode_request(body)
    assert not request.expired(sent_at + timedelta(seconds=4.9))
    assert request.expired(sent_at + timedelta(seconds=5.1))
    # sent_at in another zone means the same instant.
    other = json.loads(body) | {"sent_at": "2024-05-01T14:00:00+02:00"}
    assert decode_request(json.dumps(other)).expired(sent_at + timedelta(seconds=5.1))


# -- replies --------------------------------------------------------------------------------------


def test_result_reply_round_trip() -> None:
    body = encode_result("m-1", {"databases": ["a", "b"]})
    assert json.loads(body) == {"msg_id": "m-1", "result": {"databases": ["a", "b"]}}
    assert decode_reply(body).unwrap() == {"databases": ["a", "b"]}


def test_a_null_result_is_a_result() -> None:
    assert decode_reply(encode_result("m-1", None)).unwrap() is None


def test_result_that_is_not_json_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_result("m-1", {1, 2})


def test_error_reply_format() -> None:
    body = encode_error("m-1", "InstanceNotFound", "no such instance")
    assert json.loads(body) == {
        "msg_id": "m-1",
        "error": {"type": "InstanceNotFound", "message": "no such instance"},
    }


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("InstanceNotFound", InstanceNotFound),
        ("UnknownMethod", UnknownMethod),
        ("RpcTimeout", RpcTimeout),
        ("CoveError", CoveError),
    ],
)
def test_error_reply_raises_the_named_cove_error(error_type: str, cls: type[CoveError]) -> None:
    reply = decode_reply(encode_error("m-1", error_type, "remote text"))
    with pytest.raises(cls) as info:
        reply.unwrap()
    assert type(info.value) is cls
    assert info.value.message == "remote text"


def test_remote_error_keeps_its_message() -> None:
    with pytest.raises(RemoteError) as info:
        decode_reply(encode_error("m", "RemoteError", "KeyError: 'x'")).unwrap()
    assert info.value.message == "KeyError: 'x'"


def test_unknown_error_names_become_remote_error() -> None:
    error = error_from_reply("SomethingElse", "boom")
    assert type(error) is RemoteError
    assert error.message == "SomethingElse: boom"
    # Not a Cove error, even though Python knows the name.
    assert type(error_from_reply("ValueError", "x")) is RemoteError


def test_error_reply_fields() -> None:
    assert error_reply_fields(InstanceNotFound("gone")) == ("InstanceNotFound", "gone")
    assert error_reply_fields(ServiceUnavailable("down")) == ("ServiceUnavailable", "down")
    assert error_reply_fields(KeyError("k")) == ("RemoteError", "KeyError: 'k'")


@pytest.mark.parametrize(
    "body",
    [
        "nope",
        "[]",
        '{"msg_id": "m"}',
        '{"msg_id": "m", "result": 1, "error": {"type": "X", "message": "y"}}',
        '{"msg_id": "m", "error": {"type": "X"}}',
        '{"result": 1}',
    ],
)
def test_invalid_replies_are_rejected(body: str) -> None:
    with pytest.raises(InvalidMessage):
        decode_reply(body)


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:s3cret@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("amqp://cove:p%40ss@mq.example/cove", "amqp://cove:***@mq.example/cove"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis+socket:///var/lib/cove/redis.sock", "redis+socket:///var/lib/cove/redis.sock"),
        ("amqp://guest@host//", "amqp://guest@host//"),
        (
            "amqp://a:one@h1//;amqp://b:two@h2//",
            "amqp://a:***@h1//;amqp://b:***@h2//",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"v": True},
        {"v": 1.0},
        {"ttl": 1e300, "reply_to": "q"},
        {"ttl": float("inf"), "reply_to": "q"},
        {"sent_at": "9999-12-31T23:59:59Z"},
    ],
)
def test_envelopes_that_could_break_expiry_are_refused(change: dict[str, object]) -> None:
    data = _valid() | change
    with pytest.raises(InvalidMessage):
        decode_request(json.dumps(data))
