"""The names of the bus's topics: defined here and nowhere else."""

from __future__ import annotations

#: The task managers' shared queue.
TASKMANAGER = "taskmanager"
#: The conductors' shared queue.
CONDUCTOR = "conductor"

_GUEST_PREFIX = "guestagent."


def guest(instance_id: str) -> str:
    """The topic of one instance's guest agent."""
    return _GUEST_PREFIX + instance_id
