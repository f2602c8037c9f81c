"""Checks every request passes before routing: text that no part of Cove can store or show is
refused here, once, instead of failing deep inside (a lone surrogate cannot be encoded, a NUL
cannot be stored by PostgreSQL), and bodies are capped in size.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from cove.common.errors import BadRequest, CoveError, OverLimit

MAX_BODY_BYTES = 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def storable(text: str) -> bool:
    """Whether ``text`` is valid Unicode without NUL characters."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_storable(value: Any) -> bool:
    """Whether every string in a decoded JSON document (keys included) is storable."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


async def check_request(request: Request) -> CoveError | None:
    """The error to answer ``request`` with, or None when it may go on."""
    if not storable(request.scope["path"]):
        return BadRequest("The request path must be valid Unicode without NUL characters.")
    for key, value in request.query_params.multi_items():
        if not (storable(key) and storable(value)):
            return BadRequest("Query parameters must be valid Unicode without NUL characters.")
    if request.method not in _BODY_METHODS:
        return None
    too_large = OverLimit(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():  # counted as it comes: never more than the cap
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return too_large
            chunks.append(chunk)
    except ClientDisconnect:
        return BadRequest("The client went away before sending the whole body.")
    body = b"".join(chunks)
    # Starlette hands a body read here on to the route (as Request.body() itself does).
    request._body = body
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except RecursionError:
        return BadRequest("Malformed request body: the JSON is nested too deeply.")
    except ValueError:
        return None  # not JSON: the route's own validation says so, in its words
    if not _all_storable(document):
        return BadRequest(
            "Malformed request body: text must be valid Unicode without NUL characters."
        )
    return None
