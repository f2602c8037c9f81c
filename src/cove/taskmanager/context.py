"""What every task manager workflow works with."""

from __future__ import annotations

from dataclasses import dataclass

from cove.common.settings import Settings
from cove.compute.base import ComputeDriver
from cove.db.engine import Database
from cove.rpc import RpcClient


@dataclass
class TaskContext:
    settings: Settings
    db: Database
    bus: RpcClient
    driver: ComputeDriver


def guest_topic(instance_id: str) -> str:
    return f"guestagent.{instance_id}"
