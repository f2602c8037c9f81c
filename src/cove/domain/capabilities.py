"""What each datastore can do, declared up front so the API refuses unsupported actions."""

from __future__ import annotations

from enum import StrEnum


class Capability(StrEnum):
    DATABASES = "databases"
    USERS = "users"
    #: Users are accounts per (name, host), the host limiting where they may log in from.
    USER_HOSTS = "user hosts"
    ROOT = "root"
    CONFIGURATION = "configuration"
    BACKUPS = "backups"
    REPLICATION = "replication"
    CLUSTERS = "clusters"


DATASTORE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    "postgresql": frozenset(
        {Capability.DATABASES, Capability.USERS, Capability.ROOT, Capability.CONFIGURATION}
    ),
    "mariadb": frozenset(
        {
            Capability.DATABASES,
            Capability.USERS,
            Capability.USER_HOSTS,
            Capability.ROOT,
            Capability.CONFIGURATION,
        }
    ),
    # Databases are no Redis concept; users are ACL users, root the default user.
    "redis": frozenset({Capability.USERS, Capability.ROOT, Capability.CONFIGURATION}),
}

#: The datastores Cove has a guest manager for: only their versions are registered.
MANAGED: frozenset[str] = frozenset(DATASTORE_CAPABILITIES)

#: The standard client port of each datastore; the local driver gives every instance its own
#: address so every instance can listen on it.
STANDARD_PORTS: dict[str, int] = {"postgresql": 5432, "mariadb": 3306, "redis": 6379}


def capabilities(datastore: str) -> frozenset[Capability]:
    return DATASTORE_CAPABILITIES.get(datastore, frozenset())
