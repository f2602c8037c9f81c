"""The typed client of the task managers (topic ``taskmanager``).

One method per RPC of ``cove.taskmanager.service.TaskManager``. Every one is a cast carrying
only the instance id (or the backup id): the API records the request on the row first (with
what the task needs sealed on the row, cove.db.sealed), and a task manager carries it out (and
records how it ended) on its own time. A cast that is lost is not a request lost: the task
managers' monitor runs any task nobody holds (cove.taskmanager.leases).
"""

from __future__ import annotations

from cove.rpc import topics
from cove.rpc.client import RpcClient
from cove.rpc.envelope import RequestContext
from cove.rpc.typed import ServiceClient


class TaskManagerClient(ServiceClient):
    def __init__(self, bus: RpcClient) -> None:
        super().__init__(bus, topics.TASKMANAGER)

    def declare(self) -> None:
        """Declare the task managers' queue, so requests wait for one to start. Idempotent."""
        self.bus.declare_topic(self.topic)

    def create_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "create_instance", instance_id=instance_id)

    def delete_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "delete_instance", instance_id=instance_id)

    def restart_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "restart_instance", instance_id=instance_id)

    def resize_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "resize_instance", instance_id=instance_id)

    def detach_replica(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "detach_replica", instance_id=instance_id)

    def promote_replica(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "promote_replica", instance_id=instance_id)

    def eject_primary(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "eject_primary", instance_id=instance_id)

    def create_backup(self, ctx: RequestContext, backup_id: str) -> None:
        self._cast(ctx, "create_backup", backup_id=backup_id)
