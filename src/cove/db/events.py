"""Each instance's recent notification events (``instance_events``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cove.db.models import InstanceEvent
from cove.domain.events import Event

#: Events kept per instance; older ones are removed as new ones arrive.
KEPT = 100


def record(session: Session, event: Event, project_id: str) -> None:
    """Keep ``event`` among its instance's recent events (nothing for an event about no
    instance), and forget the oldest beyond KEPT."""
    instance_id = event.instance_id
    if instance_id is None:
        return
    session.add(
        InstanceEvent(
            id=event.message_id,
            instance_id=instance_id,
            project_id=project_id,
            event_type=event.event_type,
            created=event.timestamp,
            message=json.dumps(event.message()),
        )
    )
    session.flush()
    stale = select(InstanceEvent.id).where(InstanceEvent.instance_id == instance_id)
    stale = stale.order_by(InstanceEvent.created.desc(), InstanceEvent.id.desc()).offset(KEPT)
    old = list(session.scalars(stale))
    if old:
        session.execute(delete(InstanceEvent).where(InstanceEvent.id.in_(old)))


def recent(session: Session, instance_id: str, limit: int) -> list[dict[str, Any]]:
    """The instance's newest ``limit`` events' messages, newest first."""
    rows = session.scalars(
        select(InstanceEvent)
        .where(InstanceEvent.instance_id == instance_id)
        .order_by(InstanceEvent.created.desc(), InstanceEvent.id.desc())
        .limit(limit)
    )
    return [json.loads(row.message) for row in rows]
