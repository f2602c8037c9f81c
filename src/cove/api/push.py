"""Giving instances their new settings within the request that changed them, as Trove does:
attaching or detaching a configuration group, or changing a group's values, is answered once
the guests have taken the values, so those that can change live already have.

The change is committed first, each instance marked ``settings_pending`` in the same
transaction (``cove.db.instances``); the push here only brings the values into effect sooner.
A guest agent takes them into its server's files and sets live what can be set live, but the
compute driver's copy of them, which an agent reads when it starts, is the task manager's to
rewrite: so the mark stays until the task manager's monitor has pushed the settings too
(``cove.taskmanager.configure.push_pending``), which is also how a push that failed here is
retried.

An instance that cannot take settings now (not placed, a task running, its guest not
reporting) is not asked; the task manager gives them to it once it can. A guest that refuses
them or does not answer within ``rpc_timeout`` leaves a fault on the instance, and the request
is still accepted: the change itself is recorded and will be applied.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import (
    SETTINGS_FAULT,
    InstanceSettings,
    get_instance,
    mark_settings_pending,
    record_fault,
    settings_of,
    snapshot,
)
from cove.db.models import Instance
from cove.domain.status import RESTARTABLE, can_act
from cove.rpc import RequestContext

LOG = logging.getLogger(__name__)

#: At most this many guests are asked at once for one request.
PARALLEL = 8


@dataclass(frozen=True)
class Push:
    """The settings one instance's guest is to take."""

    instance_id: str
    settings: InstanceSettings


def ready_pushes(s: Session, c: ApiContext, instance_ids: list[str]) -> list[Push]:
    """Inside the transaction that changed and marked the instances: the settings to push to
    those whose guest can take them now, as this transaction leaves them (so a push carries
    this change, never a later one's). The others are left to the task manager."""
    if not instance_ids:
        return []
    query = (
        select(Instance)
        .where(Instance.id.in_(instance_ids), Instance.deleted.is_(False))
        .execution_options(populate_existing=True)
    )
    rows = {inst.id: inst for inst in s.scalars(query)}
    now = utcnow()
    pushes = []
    for instance_id in instance_ids:
        inst = rows.get(instance_id)
        if inst is None:
            continue
        ready = can_act(snapshot(inst, inst.guest), now, c.settings.heartbeat_interval, RESTARTABLE)
        if inst.address is None or not ready:
            LOG.info("instance %s cannot take settings now; left to the task manager", instance_id)
            continue
        pushes.append(Push(instance_id, settings_of(inst)))
    return pushes


def push(c: ApiContext, ctx: RequestContext, pushes: list[Push]) -> None:
    """Give each guest its settings, several at once (at most :data:`PARALLEL`), waiting at
    most twice ``rpc_timeout`` in all: a push still running then ends on its own, and one not
    started is left to the task manager. Raises nothing for a guest's failure, which is
    recorded as its instance's fault."""
    if len(pushes) <= 1:
        for one in pushes:
            _push_one(c, ctx, one)
        return
    pool = ThreadPoolExecutor(min(PARALLEL, len(pushes)), thread_name_prefix="settings-push")
    try:
        futures = [pool.submit(_push_one, c, ctx, one) for one in pushes]
        wait(futures, timeout=2 * c.settings.rpc_timeout)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _push_one(c: ApiContext, ctx: RequestContext, one: Push) -> None:
    instance_id, settings = one.instance_id, one.settings
    fault: str | None = None
    try:
        applied = c.guest(instance_id).apply_configuration(
            ctx,
            settings.ram_mb,
            settings.vcpus,
            settings.volume_gb,
            dict(settings.overrides),
            settings.revision,
        )
    except Exception as exc:
        # The change is committed: whatever went wrong, the answer is the change accepted.
        if isinstance(exc, CoveError):
            LOG.warning("instance %s did not take its new settings: %s", instance_id, exc.message)
            reason = exc.public_message
        else:
            LOG.exception("pushing new settings to instance %s failed", instance_id)
            reason = f"unexpected {type(exc).__name__}."
        fault = (
            f"{SETTINGS_FAULT}: {reason} The values are saved; Cove applies them as soon as "
            "the guest takes them."
        )
    else:
        LOG.info(
            "instance %s took its new settings%s",
            instance_id,
            "; a restart is required" if applied.restart_required else "",
        )
    try:
        with c.db.session() as s:
            # Marked again once the guest answered: should this push have reached the guest
            # after a newer one of the task manager, that one must not count as the last.
            if mark_settings_pending(s, instance_id) and fault is not None:
                record_fault(get_instance(s, instance_id), fault, utcnow())
    except Exception:
        # The change and its mark are committed already; the task manager pushes again.
        LOG.exception("could not record the push to instance %s", instance_id)
