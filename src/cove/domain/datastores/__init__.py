"""The registry of datastores Cove manages: one descriptor each (see ``base`` for the contract).

Every place that differs by datastore (version discovery, the parameter catalogue and its
deny-list, capabilities, ports, the local driver's clean-up and the guest's manager) reads the
descriptor chosen here by the datastore's short name.
"""

from __future__ import annotations

from cove.domain.datastores.base import (
    Capability,
    Datastore,
    FoundVersion,
    NameRules,
    StrayServer,
    UnknownDatastore,
)
from cove.domain.datastores.mariadb import MARIADB
from cove.domain.datastores.postgresql import POSTGRESQL
from cove.domain.datastores.redis import REDIS

__all__ = [
    "DATASTORES",
    "Capability",
    "Datastore",
    "FoundVersion",
    "NameRules",
    "StrayServer",
    "UnknownDatastore",
    "datastore",
]

#: Datastore name -> its descriptor.
DATASTORES: dict[str, Datastore] = {ds.name: ds for ds in (POSTGRESQL, MARIADB, REDIS)}


def datastore(name: str) -> Datastore:
    """The descriptor of ``name``. Raises UnknownDatastore, which lists the known names."""
    try:
        return DATASTORES[name]
    except KeyError:
        raise UnknownDatastore(name, sorted(DATASTORES)) from None
