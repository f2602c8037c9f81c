"""The typed client of the task managers (topic ``taskmanager``).

One method per RPC of ``cove.taskmanager.service.TaskManager``. Every one is a cast: the API
records the request on the instance first, and a task manager carries it out (and records how
it ended) on its own time.
"""

from __future__ import annotations

from cove.domain.specs import DatabaseSpec, Resize, UserSpec
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

    def create_instance(
        self,
        ctx: RequestContext,
        instance_id: str,
        databases: list[DatabaseSpec],
        users: list[UserSpec],
    ) -> None:
        self._cast(
            ctx, "create_instance", instance_id=instance_id, databases=databases, users=users
        )

    def delete_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "delete_instance", instance_id=instance_id)

    def restart_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "restart_instance", instance_id=instance_id)

    def update_configuration(self, ctx: RequestContext, instance_id: str) -> None:
        self._cast(ctx, "update_configuration", instance_id=instance_id)

    def resize_instance(self, ctx: RequestContext, resize: Resize) -> None:
        self._cast(ctx, "resize_instance", resize=resize)
