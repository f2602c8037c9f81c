"""Whether the API may reach an instance's guest agent now: its readiness and its datastore's
capabilities. The call itself goes through ``ApiContext.guest``."""

from __future__ import annotations

from cove.api.context import ApiContext
from cove.common.errors import InstanceNotReady, OperationNotSupported
from cove.common.ids import utcnow
from cove.db.instances import get_instance, snapshot
from cove.domain.capabilities import Capability, capabilities
from cove.domain.status import SERVING, GuestStatus, Task, can_act, compute_status


def check_ready(
    c: ApiContext,
    project_id: str,
    instance_id: str,
    capability: Capability | None = None,
    allowed: frozenset[GuestStatus] = SERVING,
    writes: bool = False,
) -> str:
    """Raise unless the instance can take an action now (one that ``writes`` to its server:
    not on a read-only replica); return its datastore name.

    Raises InstanceNotFound, OperationNotSupported (501) or InstanceNotReady (422).
    """
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        ds_name = inst.datastore_version.datastore.name
        snap = snapshot(inst, inst.guest)
        source = inst.replica_of_id
    if writes and source is not None:
        raise InstanceNotReady(
            f"Instance {instance_id} is a read-only replica of instance {source}; change "
            "its databases, users and root on the source (they reach the replica), or detach "
            "it first."
        )
    if capability is not None:
        require(ds_name, capability)
    now = utcnow()
    if not can_act(snap, now, c.settings.heartbeat_interval, allowed):
        status = compute_status(snap, now, c.settings.heartbeat_interval)
        raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is {status.status}).")
    return ds_name


#: Tasks during which an instance's agent is not there to ask (not yet, or no longer).
_NO_AGENT = frozenset({Task.BUILDING, Task.BUILD_ERROR, Task.DELETING, Task.DELETE_ERROR})


def check_agent(c: ApiContext, project_id: str, instance_id: str) -> str:
    """Raise unless the instance's guest agent may be asked now: the instance was built, is
    not being deleted, and its agent has reported; return its datastore's name. Its server
    may be stopped, crashed, restarting or backing up: what the agent reads of its own files
    does not wait for that (an agent that does not answer is the call's RpcTimeout).

    Raises InstanceNotFound or InstanceNotReady (422)."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        ds_name = inst.datastore_version.datastore.name
        snap = snapshot(inst, inst.guest)
        heard = inst.guest is not None
    if snap.task in _NO_AGENT or not heard:
        status = compute_status(snap, utcnow(), c.settings.heartbeat_interval)
        raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is {status.status}).")
    return ds_name


def require(datastore: str, capability: Capability) -> None:
    """Raises OperationNotSupported (501) unless ``datastore`` has ``capability``."""
    if capability not in capabilities(datastore):
        raise OperationNotSupported(
            f"Operation '{capability.value}' is not supported for datastore {datastore}."
        )
