"""The Cove bus: RPC client and server over kombu (RabbitMQ or Redis), JSON envelopes.

``RpcClient`` casts and calls methods on a topic; ``RpcServer`` serves a table of methods on one
topic; ``RequestContext`` says who asked. The envelope format is in ``cove.rpc.envelope``.
"""

from cove.rpc.client import RpcClient
from cove.rpc.envelope import RequestContext
from cove.rpc.server import RpcServer
from cove.rpc.transport import redact_url

__all__ = ["RequestContext", "RpcClient", "RpcServer", "redact_url"]
