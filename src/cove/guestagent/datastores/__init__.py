"""Datastore managers, chosen by the datastore's short name."""

from __future__ import annotations

from collections.abc import Callable

from cove.common.errors import ConfigurationError
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.base import DatastoreManager


def _postgresql(config: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.postgresql.manager import PostgresManager

    return PostgresManager(config)


def _mariadb(config: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.mariadb.manager import MariaManager

    return MariaManager(config)


def _redis(config: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.redis.manager import RedisManager

    return RedisManager(config)


MANAGERS: dict[str, Callable[[GuestSettings], DatastoreManager]] = {
    "postgresql": _postgresql,
    "mariadb": _mariadb,
    "redis": _redis,
}


def load_manager(config: GuestSettings) -> DatastoreManager:
    """Raises ConfigurationError naming the known managers when the name is unknown."""
    try:
        factory = MANAGERS[config.datastore]
    except KeyError:
        known = ", ".join(sorted(MANAGERS))
        raise ConfigurationError(
            f"unknown datastore manager '{config.datastore}' (known: {known})"
        ) from None
    return factory(config)
