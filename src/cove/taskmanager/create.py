"""Provisioning: address, place, guest agent, then ``prepare`` on the guest.

Each step is recorded on the instance row and is idempotent, so the workflow can run again from
the start after a task manager died anywhere in it (cove.taskmanager.leases): the address is
kept, the driver repairs what is missing, and ``prepare`` on a prepared guest only starts its
server. The request's databases and users (with passwords) come sealed on the row
(cove.db.sealed), never in the cast. ``prepare`` is a call: the build ends here when it
answers (or when the guest's report or heartbeat reaches the conductor first), and a bus that
went away meanwhile only makes it ask again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cove.common.errors import CoveError, GuestError, ServiceUnavailable, UnreadableTaskArgs
from cove.common.ids import new_id, utcnow
from cove.db.backups import chain, get_backup, meta_of, store_of
from cove.db.configurations import values_of
from cove.db.instances import allocate_address, end_task, get_instance
from cove.db.models import Instance
from cove.db.networks import address_pool
from cove.db.sealed import CreateArgs
from cove.domain import wal
from cove.domain.backups import BackupStatus, RestoreJob, RestorePiece
from cove.domain.capabilities import Capability, capabilities
from cove.domain.guest import ClusterMember, GuestSettings
from cove.domain.parameters import denied
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.clusters import JOIN_ALLOWANCE, announce_peers, form, member_spec
from cove.taskmanager.context import TaskContext
from cove.taskmanager.replicas import replica_source
from cove.taskmanager.stores import seal_key, with_credentials
from cove.taskmanager.wal import replay_source

LOG = logging.getLogger(__name__)

#: Longest pause between two attempts to reach a guest whose bus or agent is away.
MAX_RETRY_PAUSE = 2.0


def create_instance(
    tc: TaskContext, ctx: RequestContext, instance_id: str, lost: threading.Event
) -> None:
    """Build the instance; ``lost`` is set when this task manager no longer holds the task
    (it then stops waiting). Ends the task in NONE or BUILD_ERROR, never raises."""
    try:
        placed = _place(tc, instance_id)
        if placed is None:
            return
        spec, args, deadline = placed
        guest = tc.guest(instance_id)
        if not _through_outages(tc, instance_id, deadline, lost, "declare", guest.declare):
            return
        with tc.db.session() as s:
            inst = get_instance(s, instance_id)
            if inst.task != Task.BUILDING.value:
                return
            inst.agent_started_at = utcnow()
            source_id = inst.replica_of_id
            cluster_id = inst.cluster_id
        tc.driver.create(spec)
        if not _mark_placed(tc, instance_id):
            # The build was given up meanwhile (timed out, then perhaps deleted): what was
            # just placed must not outlive it.
            LOG.info(
                "instance %s stopped building meanwhile; removing what was placed", instance_id
            )
            tc.driver.destroy(instance_id)
            return
        LOG.info("instance %s placed at %s; preparing", instance_id, spec.address)

        restore = (
            restore_job(tc, args.restore_from, args.restore_time) if args.restore_from else None
        )

        member = None
        if cluster_id is not None:
            # A cluster member waits for its turn (cove.taskmanager.clusters).
            turn = member_spec(tc, instance_id, deadline, lost)
            if turn is False:
                return
            member = turn if isinstance(turn, ClusterMember) else None

        def prepare() -> None:
            if member is not None:
                guest.prepare(ctx, [], [], None, cluster=member)
                return
            if source_id is None:
                guest.prepare(ctx, args.databases, args.users, restore)
                return
            # A replica copies its source: it is given where and how to connect instead.
            source = replica_source(tc, ctx, source_id)
            guest.prepare(ctx, [], [], None, replica_of=source)

        # A prepare asked again while one runs waits for it, and a prepared guest only starts
        # its server: asking again after the bus or the agent went away is safe.
        if _through_outages(tc, instance_id, deadline, lost, "prepare", prepare):
            if member is not None:
                form(tc, ctx, instance_id)  # the last member of a new sharded cluster
            with tc.db.session() as s:
                if end_task(s, instance_id, Task.BUILDING, Task.NONE, None, utcnow()):
                    LOG.info("instance %s is ready", instance_id)
            if cluster_id is not None:
                announce_peers(tc, ctx, cluster_id)
    except Exception as exc:
        message = public(exc)
        LOG.exception("creating instance %s failed", instance_id)
        fail_build(tc, instance_id, message)


def restore_job(tc: TaskContext, backup_id: str, restore_time: str | None = None) -> RestoreJob:
    """What a guest needs to restore ``backup_id`` and the backups it builds on, and (for a
    chain where the datastore replays an archived log, or a moment) that log. Raises
    GuestError when the backup can no longer be restored (deleted, not completed)."""
    with tc.db.session() as s:
        try:
            links = chain(s, get_backup(s, backup_id))
        except CoveError as exc:
            raise GuestError(f"The backup to restore is gone: {exc.message}") from None
        pieces = []
        for link in links:
            if link.status != BackupStatus.COMPLETED.value or link.checksum is None:
                raise GuestError(f"Backup {link.id} is not complete and cannot be restored.")
            pieces.append(
                RestorePiece(
                    backup_id=link.id,
                    artifact=link.artifact,
                    checksum=link.checksum,
                    seal=seal_key(tc, link.key_id, link.id),
                    meta=meta_of(link),
                )
            )
        replays = Capability.POINT_IN_TIME in capabilities(
            links[0].datastore_version.datastore.name
        )
        source = (
            replay_source(tc, store_of(links[0]), links[0].instance_id, restore_time)
            if replays and (len(links) > 1 or restore_time is not None)
            else None
        )
        return RestoreJob(store=with_credentials(tc, store_of(links[-1])), chain=pieces, wal=source)


def _mark_placed(tc: TaskContext, instance_id: str) -> bool:
    """Record the place as running; False when the instance stopped building meanwhile."""
    with tc.db.session() as s:
        row = s.get(Instance, instance_id)
        if row is None or row.deleted or row.task != Task.BUILDING.value:
            return False
        row.compute_state = ComputeState.ACTIVE.value
        row.updated = utcnow()
        return True


def _through_outages(
    tc: TaskContext,
    instance_id: str,
    deadline: float,
    lost: threading.Event,
    what: str,
    action: Callable[[], None],
) -> bool:
    """Run ``action`` (idempotent), again each time the bus or the guest agent is unreachable,
    until it succeeds; False when the build ended elsewhere or the lease was lost meanwhile.
    Raises what ``action`` raises otherwise, and GuestError once ``deadline`` (monotonic)
    passed (checked between attempts)."""
    pause = 0.1
    while True:
        if time.monotonic() > deadline:
            raise GuestError("The instance did not become ready in time.")
        try:
            action()
            return True
        except ServiceUnavailable as exc:
            if lost.is_set() or not _building(tc, instance_id):
                return False
            LOG.warning("instance %s: %s: %s; trying again", instance_id, what, exc.message)
            if lost.wait(pause):
                return False
            pause = min(pause * 2, MAX_RETRY_PAUSE)


def public(exc: BaseException) -> str:
    """What a fault may tell the tenant about ``exc``: a Cove error's public message; for any
    other error (whose text may name paths, addresses or settings) a generic message with a
    reference under which the details are logged."""
    if isinstance(exc, CoveError):
        return exc.public_message
    reference = new_id()[:8]
    LOG.error("unexpected error, fault reference %s", reference, exc_info=exc)
    return (
        f"An unexpected error occurred (reference {reference}); the operator finds the "
        "details in the task manager's log."
    )


def _building(tc: TaskContext, instance_id: str) -> bool:
    with tc.db.session() as s:
        row = s.get(Instance, instance_id)
        return row is not None and not row.deleted and row.task == Task.BUILDING.value


def _place(tc: TaskContext, instance_id: str) -> tuple[GuestSettings, CreateArgs, float] | None:
    """The instance's settings with an address, its request's arguments and the build's
    deadline (monotonic); None when it is no longer building. Raises UnreadableTaskArgs."""
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if inst.task != Task.BUILDING.value:
            LOG.info("instance %s is no longer building; nothing to do", instance_id)
            return None
        if inst.task_args is None:
            raise UnreadableTaskArgs("the request's databases and users were not recorded")
        args = tc.sealer.open(instance_id, inst.task_args, CreateArgs)
        if inst.address is None:
            port = inst.port
            inst.address = allocate_address(
                s,
                address_pool(s, inst.network_id, tc.settings),
                instance_id,
                lambda address: tc.driver.address_usable(address, port),
            )
        left = build_deadline(tc, s, inst, args) - utcnow()
        return guest_spec(tc, inst), args, time.monotonic() + left.total_seconds()


#: The pace a restore is counted on, in bytes of stored backup (compressed and sealed) per
#: second: far below what the engines restore at here (100-300 MB/s of stored bytes), so a
#: busy machine or a slow store still finishes within the allowance.
RESTORE_PACE = 8 << 20


def build_deadline(
    tc: TaskContext, s: Session, inst: Instance, args: CreateArgs | None
) -> datetime:
    """When the build of ``inst`` is given up: ``build_timeout`` after its task started, and
    for a restore one second more per RESTORE_PACE bytes of the backups it restores and of
    the archived WAL it replays (whole segments: an incremental's artifact is a small
    manifest, while its replay reads every segment from its chain's start to its end)."""
    allowance = 0.0
    if args is not None and args.restore_from:
        try:
            links = chain(s, get_backup(s, args.restore_from))
        except (CoveError, ValueError):
            links = []  # the restore fails at once
        segments = args.replay_segments
        if len(links) > 1:
            start, end = meta_of(links[0]).get("start_wal"), meta_of(links[-1]).get("end_wal")
            if start and end:
                segments = max(segments, wal.span(start, end))
        replayed = segments * wal.SEGMENT_BYTES
        allowance = (sum(link.size or 0 for link in links) + replayed) / RESTORE_PACE
    # A cluster member first waits for the members before it to join.
    allowance += (inst.cluster_index or 0) * JOIN_ALLOWANCE
    started = inst.task_started_at or utcnow()
    return started + timedelta(seconds=tc.settings.build_timeout + allowance)


def build_overdue(tc: TaskContext, instance_id: str, now: datetime) -> bool:
    """Whether the build of ``instance_id`` passed its deadline (:func:`build_deadline`); its
    sealed request is opened only once ``build_timeout`` passed."""
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted or inst.task != Task.BUILDING.value:
            return False
        started = inst.task_started_at or now
        if now - started <= timedelta(seconds=tc.settings.build_timeout):
            return False
        args = None
        if inst.task_args is not None:
            try:
                args = tc.sealer.open(instance_id, inst.task_args, CreateArgs)
            except CoveError:
                args = None  # unreadable: no allowance (the build fails on it anyway)
        return now > build_deadline(tc, s, inst, args)


def guest_spec(tc: TaskContext, inst: Instance) -> GuestSettings:
    """What the compute driver and the guest need to know of a placed instance, from its row:
    its flavor sizes, volume size and configuration overrides as they stand now."""
    if inst.address is None:
        raise ValueError(f"instance {inst.id} has no address yet")
    version = inst.datastore_version
    return GuestSettings(
        instance_id=inst.id,
        datastore=version.manager,
        datastore_version=version.name,
        bin_dir=version.bin_dir,
        address=inst.address,
        port=inst.port,
        ram_mb=inst.flavor.ram,
        vcpus=inst.flavor.vcpus,
        volume_gb=inst.volume_size,
        transport_url=tc.settings.transport_url,
        heartbeat_interval=tc.settings.heartbeat_interval,
        log_format=tc.settings.log_format,
        # A parameter denied since the group was made is never given to the guest.
        overrides={
            name: value
            for name, value in values_of(inst.configuration).items()
            if not denied(version.manager, name)
        },
    )


def fail_build(tc: TaskContext, instance_id: str, message: str) -> None:
    """End the build in BUILD_ERROR with ``message`` as the fault, unless it ended meanwhile.
    Raises InstanceNotFound."""
    with tc.db.session() as s:
        end_task(s, instance_id, Task.BUILDING, Task.BUILD_ERROR, message, utcnow())
