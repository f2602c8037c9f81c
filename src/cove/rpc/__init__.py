"""The Cove bus: RPC client and server over kombu (RabbitMQ or Redis), JSON envelopes.

``RpcClient`` casts and calls methods on a topic; ``RpcServer`` serves a table of methods on one
topic; ``RequestContext`` says who asked. The envelope format is in ``cove.rpc.envelope``.

The names are loaded when first used: ``cove.rpc.codec`` alone (a guest agent reads its
settings with it before anything else) must not pull in kombu, whose import a new guest agent
spends while its database server starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cove.rpc.client import RpcClient
    from cove.rpc.envelope import RequestContext
    from cove.rpc.server import RpcServer
    from cove.rpc.transport import redact_url

__all__ = ["RequestContext", "RpcClient", "RpcServer", "redact_url"]

_HOMES = {
    "RpcClient": "cove.rpc.client",
    "RequestContext": "cove.rpc.envelope",
    "RpcServer": "cove.rpc.server",
    "redact_url": "cove.rpc.transport",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
