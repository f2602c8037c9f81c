"""Datastore managers, chosen by the datastore's short name through its descriptor
(``cove.domain.datastores``), which imports the chosen manager's package and no other."""

from __future__ import annotations

from cove.common.errors import ConfigurationError
from cove.domain.datastores import UnknownDatastore, datastore
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.base import DatastoreManager


def load_manager(config: GuestSettings) -> DatastoreManager:
    """Raises ConfigurationError naming the known datastores when the name is unknown."""
    try:
        descriptor = datastore(config.datastore)
    except UnknownDatastore as exc:
        raise ConfigurationError(f"no datastore manager: {exc}") from None
    return descriptor.manager(config)
