"""Redis, as Cove runs it: one redis-server per instance, ACL users, append-only persistence."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

from cove.domain.datastores.base import (
    Capability,
    Datastore,
    FoundVersion,
    NameRules,
    StrayServer,
)
from cove.domain.guest import GuestSettings

if TYPE_CHECKING:
    from cove.domain.parameters import Parameter
    from cove.guestagent.datastores.base import DatastoreManager


def find_versions() -> list[FoundVersion]:
    from cove.compute.discovery import find_redis

    return find_redis()


def server_version(bin_dir: Path) -> str | None:
    from cove.compute.discovery import redis_version

    return redis_version(bin_dir / "redis-server")


def read_parameters(bin_dir: str) -> list[Parameter]:
    from cove.compute.parameters import redis

    return redis.read_parameters(bin_dir)


def manager(settings: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.redis.manager import RedisManager

    return RedisManager(settings)


# fmt: off
DENIED = (
    # files, paths and where the server listens
    "dir", "dbfilename", "appendfilename", "appenddirname", "port", "tls-*", "bind",
    "bind-source-addr", "unixsocket*", "pidfile", "logfile", "syslog-*", "daemonize",
    "supervised", "include", "loadmodule", "oom-score-adj*", "set-proc-title",
    "proc-title-template", "save", "appendonly", "appendfsync", "aof-*",
    # replication and cluster
    "replicaof", "slaveof", "masteruser", "masterauth", "replica-*", "slave-*", "repl-*",
    "cluster-*", "min-replicas-*", "min-slaves-*",
    # security
    "requirepass", "aclfile", "acllog-max-len", "acl-pubsub-default", "protected-*",
    "enable-*", "rename-command", "sanitize-dump-payload", "user",
    # what the agent and the platform rely on
    "maxclients", "io-threads*", "disable-thp", "jemalloc-bg-thread", "crash-*",
    "shutdown-*", "latency-tracking*", "*cpulist", "socket-mark-id",
    # the flavor's memory: a tenant cannot take more of the host than its flavor gives
    "maxmemory", "maxmemory-clients",
)
# fmt: on

NAMES = NameRules(
    # "default" is the user a client without a user name logs in as (Cove's root);
    # cove_admin the guest agent's own.
    own_users=frozenset({"default", "cove_admin", "cove_replication"}),
    # The service user's name.
    special_users=frozenset({"cove"}),
)

REDIS = Datastore(
    name="redis",
    title="Redis",
    port=6379,
    # Databases are no Redis concept; users are ACL users, root the default user.
    capabilities=frozenset(
        {
            Capability.USERS,
            Capability.ROOT,
            Capability.CONFIGURATION,
            Capability.BACKUPS,
            Capability.REPLICATION,
        }
    ),
    denied=DENIED,
    # Its configuration turns off DEBUG, MODULE and protected configs, which 7.0 introduced.
    minimum=(7, 0),
    needs="redis-server",
    stray=StrayServer(
        pid_file=("run", "redis.pid"),
        # The configuration's "dir" is the data directory, which Redis changes into.
        workdir=("data",),
        # Redis writes its append-only file out and exits; the data is about to be deleted,
        # so it is not worth a long wait.
        stop=((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)),
    ),
    names=NAMES,
    find_versions=find_versions,
    server_version=server_version,
    read_parameters=read_parameters,
    manager=manager,
)
