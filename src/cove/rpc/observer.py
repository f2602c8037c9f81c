"""What an RPC client or server tells about the requests it sends and handles, for a process
that counts them (the control plane's ``cove.common.metrics.Metrics``). The guest agent gives
none: its client and server tell nobody."""

from __future__ import annotations

from typing import Protocol


class RpcObserver(Protocol):
    """Told of each request once it is over; must be cheap and must not raise."""

    def sent(self, kind: str, topic: str, method: str, seconds: float, error: str | None) -> None:
        """A request sent: ``kind`` is ``call`` or ``cast``, ``seconds`` how long it took
        (for a call, until its answer), ``error`` the failure's name or None."""

    def handled(self, topic: str, method: str, seconds: float, error: str | None) -> None:
        """A request the server handled, ``error`` the failure's name or None."""
