"""The typed client of the conductors (topic ``conductor``): what guest agents report.

One method per RPC of ``cove.conductor.service.Conductor``: ``heartbeat`` and ``report`` are
casts, ``renew_lease`` a call. A conductor drops a
message older than the newest it has seen for the same instance and method, so every message
carries the time it was sent.
"""

from __future__ import annotations

from datetime import datetime

from cove.domain.failover import LeaseGrant
from cove.domain.guest import HeartbeatPayload
from cove.domain.status import GuestStatus
from cove.rpc import topics
from cove.rpc.client import RpcClient
from cove.rpc.envelope import RequestContext
from cove.rpc.typed import ServiceClient

#: Seconds one ``renew_lease`` waits for its answer.
RENEW_TIMEOUT = 1.0


class ConductorClient(ServiceClient):
    def __init__(self, bus: RpcClient) -> None:
        super().__init__(bus, topics.CONDUCTOR)

    def declare(self) -> None:
        """Declare the conductors' queue, so reports wait for one to start. Idempotent."""
        self.bus.declare_topic(self.topic)

    def heartbeat(
        self,
        ctx: RequestContext,
        instance_id: str,
        service_status: GuestStatus,
        payload: HeartbeatPayload,
        sent_at: datetime,
    ) -> None:
        self._cast(
            ctx,
            "heartbeat",
            instance_id=instance_id,
            service_status=service_status,
            payload=payload,
            sent_at=sent_at,
        )

    def report(
        self,
        ctx: RequestContext,
        instance_id: str,
        operation: str,
        outcome: str,
        details: str,
        sent_at: datetime,
    ) -> None:
        self._cast(
            ctx,
            "report",
            instance_id=instance_id,
            operation=operation,
            outcome=outcome,
            details=details,
            sent_at=sent_at,
        )

    def renew_lease(
        self, ctx: RequestContext, instance_id: str, epoch: int | None, position: int | None
    ) -> LeaseGrant:
        """Extend the lease of the group whose primary ``instance_id`` is (``epoch``: the one
        last granted, None after a change of role), recording how far it has written
        (``position``, None when it cannot tell). Waits RENEW_TIMEOUT: a late answer counts
        from when the renewal was sent, so waiting longer gains nothing. Raises RpcTimeout,
        ServiceUnavailable."""
        return self._call(
            ctx,
            "renew_lease",
            LeaseGrant,
            RENEW_TIMEOUT,
            instance_id=instance_id,
            epoch=epoch,
            position=position,
        )
