"""Runs in the OpenStack client virtualenv (see clients.py), never in Cove's: a troveclient
``Client('1.0', session=...)`` built the way a user script builds it, serving calls read as JSON
lines on stdin and answered as JSON lines on stdout.

The credentials come from COVE_OS_AUTH_URL, COVE_OS_USERNAME, COVE_OS_PASSWORD and
COVE_OS_PROJECT_NAME. The first line written says the client is ready (or why it is not). Each
request ``{"manager", "method", "args", "kwargs", "attrs"?}`` runs ``client.<manager>.<method>``
and is answered ``{"result": ...}`` or ``{"error": <exception class>, "code", "message"}``;
``attrs`` names attributes to read from the result with getattr, as a script would (which may
make troveclient fetch the resource again).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from importlib.metadata import version
from typing import Any


def connect() -> Any:
    from keystoneauth1 import loading, session
    from troveclient import client

    auth = loading.get_plugin_loader("password").load_from_options(
        auth_url=os.environ["COVE_OS_AUTH_URL"],
        username=os.environ["COVE_OS_USERNAME"],
        password=os.environ["COVE_OS_PASSWORD"],
        project_name=os.environ["COVE_OS_PROJECT_NAME"],
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return client.Client("1.0", session=session.Session(auth=auth))


def plain(value: Any) -> Any:
    """``value`` as JSON: resources as their dicts, sequences as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def serve(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    method = getattr(getattr(client, request["manager"]), request["method"])
    try:
        result = method(*request.get("args", []), **request.get("kwargs", {}))
        reply: dict[str, Any] = {"result": plain(result)}
        if request.get("attrs"):
            reply["attrs"] = {a: plain(getattr(result, a)) for a in request["attrs"]}
        return reply
    except Exception as exc:
        return {
            "error": type(exc).__name__,
            "code": getattr(exc, "code", None) or getattr(exc, "http_status", None),
            "message": str(exc),
            "trace": traceback.format_exc()[-3000:],
        }


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    try:
        client = connect()
        endpoint = client.client.get_endpoint()
    except Exception as exc:
        traceback.print_exc()
        send({"error": type(exc).__name__, "message": str(exc)})
        return 1
    send(
        {
            "ready": True,
            "endpoint": endpoint,
            "troveclient": version("python-troveclient"),
            "keystoneauth1": version("keystoneauth1"),
        }
    )
    for line in sys.stdin:
        if line.strip():
            send(serve(client, json.loads(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
