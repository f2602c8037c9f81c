"""The conductor: the one writer of guest-reported state.

Guests cast ``heartbeat`` and ``report`` here. A message older than the newest already seen for
the same instance and method is discarded, so a delayed message never overwrites a newer state.

A guest's ``server`` reports (its server exited by itself, was brought back, or could not be)
become the instance's fault while the server is down; the conductor clears such a fault, and
only such a fault, once the server serves again: on a ``recovered`` report, or on a serving
heartbeat sent after the last ``server`` report (a server started again by a new agent).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from cove.common.ids import utcnow
from cove.db.engine import Database
from cove.db.instances import record_fault
from cove.db.models import ConductorSeen, GuestState, Instance
from cove.db.replication import renew_lease
from cove.domain.failover import LEASE_TTL, LeaseGrant
from cove.domain.guest import (
    SERVER_REPORT,
    VOLUME_REPORT,
    HeartbeatPayload,
    ServerOutcome,
    VolumeOutcome,
)
from cove.domain.status import SERVING, ComputeState, GuestStatus, Task
from cove.rpc import RequestContext, codec

LOG = logging.getLogger(__name__)

#: How every fault the conductor records for a server that stopped by itself begins: the
#: conductor clears a fault that begins so, and no other, once the server serves again.
SERVER_FAULT = "The database server stopped unexpectedly"
#: How the fault of a process killed at the flavor's memory limit begins; a heartbeat clears it
#: only once ``OOM_FAULT_HOLD`` has passed since the last kill was reported (a PostgreSQL server
#: serves again at once, and the fault would otherwise be gone before anyone saw it).
OOM_FAULT = "The database server ran out of memory"
OOM_FAULT_HOLD = timedelta(seconds=60)
#: How the fault of a full volume begins; a ``volume`` report of room again clears it.
VOLUME_FAULT = "The volume is full"


def server_fault(outcome: ServerOutcome, details: str) -> str | None:
    """The fault to show for a ``server`` report (None: the server serves again)."""
    if outcome is ServerOutcome.CRASHED:
        return f"{SERVER_FAULT}: {details}"
    if outcome is ServerOutcome.GAVE_UP:
        return f"{SERVER_FAULT} and could not be started again: {details}"
    if outcome is ServerOutcome.OUT_OF_MEMORY:
        return f"{OOM_FAULT}: {details}"
    return None


class Conductor:
    def __init__(self, db: Database) -> None:
        self.db = db

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        """The conductor's RPC table; ``cove.rpc.conductor.ConductorClient`` is its client."""
        return codec.endpoints(
            {"heartbeat": self.heartbeat, "report": self.report, "renew_lease": self.renew_lease}
        )

    def _fresh(self, s: Session, instance_id: str, method: str, sent_at: datetime) -> bool:
        """Record ``sent_at`` as the newest message of its kind, atomically: the conditional
        update also locks the row, so writes about one instance are applied in order."""

        def newer() -> bool:
            moved = s.execute(
                update(ConductorSeen)
                .where(
                    ConductorSeen.instance_id == instance_id,
                    ConductorSeen.method == method,
                    ConductorSeen.sent_at < sent_at,
                )
                .values(sent_at=sent_at)
            )
            return bool(moved.rowcount)  # type: ignore[attr-defined]

        if newer():
            return True
        try:
            with s.begin_nested():
                s.add(ConductorSeen(instance_id=instance_id, method=method, sent_at=sent_at))
            return True
        except IntegrityError:
            # The row exists, or another worker has just recorded it: compare again, now
            # against the committed row.
            return newer()

    def _retrying(self, work: Callable[[Session], None]) -> None:
        """Run ``work`` in a transaction, again when the database gave up on it for a reason
        another attempt can clear (a conflicting insert, a deadlock, a lock held too long)."""
        for attempt in range(3):
            try:
                with self.db.session() as s:
                    work(s)
                return
            except (IntegrityError, OperationalError) as exc:
                if attempt == 2:
                    raise
                LOG.info("retrying a conductor write: %s", type(exc.orig).__name__)

    def heartbeat(
        self,
        ctx: RequestContext,
        instance_id: str,
        service_status: GuestStatus,
        payload: HeartbeatPayload,
        sent_at: datetime,
    ) -> None:
        self._retrying(lambda s: self._heartbeat(s, instance_id, service_status, payload, sent_at))

    def _heartbeat(
        self,
        s: Session,
        instance_id: str,
        status: GuestStatus,
        payload: HeartbeatPayload,
        sent: datetime,
    ) -> None:
        inst = s.get(Instance, instance_id, with_for_update=True)
        if inst is None or inst.deleted:
            return
        if not self._fresh(s, instance_id, "heartbeat", sent):
            LOG.debug("discarding an old heartbeat of %s", instance_id)
            return
        # A heartbeat is as old as the guest says: a backlog drained late must not look fresh.
        now = min(utcnow(), sent)
        if inst.task == Task.BUILDING.value and status in SERVING:
            # A guest only reports a serving server once prepare is done: if its report was
            # lost, the heartbeat still ends the build.
            inst.task = Task.NONE.value
            inst.task_owner = inst.task_lease_until = inst.task_args = None
            inst.compute_state = ComputeState.ACTIVE.value
            inst.updated = now
            LOG.info("instance %s is ready (seen in its heartbeat)", instance_id)
        if status in SERVING and self._server_fault_over(s, inst, sent):
            record_fault(inst, None, now)
            LOG.info("the database server of instance %s serves again", instance_id)
        if self._volume_fault_over(s, inst, payload, sent):
            record_fault(inst, None, now)
            LOG.info("the volume of instance %s has room again", instance_id)
        guest = s.get(GuestState, instance_id)
        if guest is None:
            s.add(
                GuestState(
                    instance_id=instance_id,
                    status=status.value,
                    payload=json.dumps(codec.to_wire(payload)),
                    heartbeat_at=now,
                )
            )
        else:
            guest.status = status.value
            guest.payload = json.dumps(codec.to_wire(payload))
            guest.heartbeat_at = now

    def renew_lease(
        self, ctx: RequestContext, instance_id: str, epoch: int | None, position: int | None
    ) -> LeaseGrant:
        """Extend the lease of a group's primary and record its written ``position`` (a call:
        the agent needs the answer; see ``cove.db.replication.renew_lease``)."""
        with self.db.session() as s:
            return renew_lease(s, instance_id, epoch, LEASE_TTL, position)

    def report(
        self,
        ctx: RequestContext,
        instance_id: str,
        operation: str,
        outcome: str,
        details: str,
        sent_at: datetime,
    ) -> None:
        self._retrying(lambda s: self._report(s, instance_id, operation, outcome, details, sent_at))

    def _report(
        self,
        s: Session,
        instance_id: str,
        operation: str,
        outcome: str,
        details: str,
        sent_at: datetime,
    ) -> None:
        inst = s.get(Instance, instance_id, with_for_update=True)
        if inst is None or inst.deleted:
            return
        if not self._fresh(s, instance_id, f"report.{operation}", sent_at):
            return
        now = utcnow()
        if operation == "prepare" and inst.task == Task.BUILDING.value:
            if outcome == "success":
                inst.task = Task.NONE.value
                inst.task_owner = inst.task_lease_until = inst.task_args = None
                inst.compute_state = ComputeState.ACTIVE.value
                LOG.info("instance %s is ready", instance_id)
            else:
                fault = f"Preparing the instance failed: {details}"
                LOG.warning("instance %s failed to prepare: %s", instance_id, details)
                record_fault(inst, fault, now, task=Task.BUILD_ERROR)
            inst.updated = now
        elif operation == SERVER_REPORT and outcome in tuple(ServerOutcome):
            self._server_report(inst, ServerOutcome(outcome), details, now)
        elif operation == VOLUME_REPORT and outcome == VolumeOutcome.FULL:
            if (inst.fault_message or "") != f"{VOLUME_FAULT}: {details}":
                LOG.warning("the volume of instance %s is full: %s", instance_id, details)
                record_fault(inst, f"{VOLUME_FAULT}: {details}", now)
        elif operation == VOLUME_REPORT and outcome == VolumeOutcome.OK:
            if (inst.fault_message or "").startswith(VOLUME_FAULT):
                LOG.info("the volume of instance %s has room again: %s", instance_id, details)
                record_fault(inst, None, now)
        else:
            LOG.info("report %s/%s for instance %s", operation, outcome, instance_id)

    @staticmethod
    def _server_report(inst: Instance, outcome: ServerOutcome, details: str, now: datetime) -> None:
        fault = server_fault(outcome, details)
        if fault is not None:
            LOG.warning("instance %s: %s", inst.id, fault)
            record_fault(inst, fault, now)
        elif (inst.fault_message or "").startswith(SERVER_FAULT):
            LOG.info("the database server of instance %s serves again: %s", inst.id, details)
            record_fault(inst, None, now)

    @staticmethod
    def _volume_fault_over(
        s: Session, inst: Instance, payload: HeartbeatPayload, sent: datetime
    ) -> bool:
        """Whether a heartbeat sent at ``sent`` ends the instance's full-volume fault: it says
        the volume has room, and it is newer than the last ``volume`` report (a lost ``ok``
        report must not leave the fault behind)."""
        if not (inst.fault_message or "").startswith(VOLUME_FAULT):
            return False
        seen = payload.isolation
        if seen is None or seen.volume_mb is None or seen.volume_full:
            return False
        last = s.get(ConductorSeen, (inst.id, f"report.{VOLUME_REPORT}"))
        return last is None or last.sent_at < sent

    @staticmethod
    def _server_fault_over(s: Session, inst: Instance, sent: datetime) -> bool:
        """Whether a heartbeat sent at ``sent`` with a serving status ends the instance's
        server fault: there is one, and the heartbeat is newer than the last ``server``
        report (the guest's own clock times both)."""
        fault = inst.fault_message or ""
        if not fault.startswith((SERVER_FAULT, OOM_FAULT)):
            return False
        seen = s.get(ConductorSeen, (inst.id, f"report.{SERVER_REPORT}"))
        if seen is None:
            return True
        hold = OOM_FAULT_HOLD if fault.startswith(OOM_FAULT) else timedelta(0)
        return seen.sent_at + hold < sent
