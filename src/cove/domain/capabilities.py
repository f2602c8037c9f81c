"""What each datastore can do, declared up front so the API refuses unsupported actions.

The facts live in each datastore's descriptor (``cove.domain.datastores``); this module keeps
the views of them that the API, the catalogue and the guest managers read.
"""

from __future__ import annotations

from cove.domain.datastores import DATASTORES
from cove.domain.datastores.base import Capability

__all__ = ["MANAGED", "STANDARD_PORTS", "Capability", "capabilities"]

#: The datastores Cove has a guest manager for: only their versions are registered.
MANAGED: frozenset[str] = frozenset(DATASTORES)

#: The standard client port of each datastore; the local driver gives every instance its own
#: address so every instance can listen on it.
STANDARD_PORTS: dict[str, int] = {name: ds.port for name, ds in DATASTORES.items()}


def capabilities(datastore: str) -> frozenset[Capability]:
    """What ``datastore`` can do; nothing for a datastore Cove does not know."""
    known = DATASTORES.get(datastore)
    return known.capabilities if known is not None else frozenset()
