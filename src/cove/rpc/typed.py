"""What the typed service clients share: send a method's arguments as wire values and read its
result back as the type the method declares."""

from __future__ import annotations

from typing import Any, TypeVar

from cove.common.errors import CoveError, InvalidArguments, RpcTimeout
from cove.rpc.client import RpcClient
from cove.rpc.codec import WireError, from_wire, to_wire
from cove.rpc.envelope import RequestContext

T = TypeVar("T")


class ServiceClient:
    """One service's topic on the bus. Subclasses give one typed method per RPC, each taking
    the request context first; the agreement test in tests/unit/test_rpc_contracts.py holds
    them to the server's method table."""

    #: Raised when an answer is not of the method's result type.
    answer_error: type[CoveError] = InvalidArguments

    def __init__(self, bus: RpcClient, topic: str, timeout: float = 30.0) -> None:
        self.bus = bus
        self.topic = topic
        self.timeout = timeout
        #: Who answers on the topic, as error messages name it.
        self.peer = f"The {topic} service"

    def _cast(self, ctx: RequestContext, method: str, **args: Any) -> None:
        """Raises ServiceUnavailable when the bus is unreachable."""
        self.bus.cast(self.topic, method, to_wire(args), ctx)

    def _call(
        self,
        ctx: RequestContext,
        method: str,
        result: type[T],
        timeout: float | None = None,
        **args: Any,
    ) -> T:
        """Raises what the server raised, RpcTimeout (naming :attr:`peer`), ServiceUnavailable,
        and :attr:`answer_error` when the answer is not of the method's result type."""
        waited = timeout or self.timeout
        try:
            reply = self.bus.call(self.topic, method, to_wire(args), ctx, timeout=waited)
        except RpcTimeout as exc:
            raise RpcTimeout(f"{self.peer} did not answer within {waited:.0f} s.") from exc
        try:
            value: T = from_wire(result, reply, f"the answer to {method}")
        except WireError as exc:
            raise self.answer_error(
                f"{self.peer} gave an unexpected answer to {method}: {exc}"
            ) from None
        return value
