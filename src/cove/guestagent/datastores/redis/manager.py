"""The Redis datastore manager: a facade over the server process, its ACL users, its backups
and its replication (``replication``: REPLICAOF replicas, whose first full sync ``prepare``
waits for).

Databases are no Redis concept: the manager declares no DATABASES capability, so the guest
agent refuses every database request before it reaches the admin object (``RedisAcl``, which
refuses them too), and a prepare or a user naming databases is refused the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence

import redis

from cove.common.errors import GuestError, OperationNotSupported
from cove.domain.backups import RestoreJob
from cove.domain.capabilities import capabilities
from cove.domain.guest import GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.datastores.redis import conf
from cove.guestagent.datastores.redis.acl import NO_DATABASES, RedisAcl
from cove.guestagent.datastores.redis.backup import RedisBackups
from cove.guestagent.datastores.redis.replication import RedisReplication
from cove.guestagent.datastores.redis.server import RedisServer
from cove.guestagent.datastores.served import ServedManager

LOG = logging.getLogger(__name__)


class RedisManager(ServedManager):
    server: RedisServer
    admin: RedisAcl
    replication: RedisReplication
    capabilities = capabilities("redis")

    def __init__(self, config: GuestSettings) -> None:
        super().__init__(config)
        self.admin = RedisAcl(self.server.connect)
        self.backups = RedisBackups(self.server)
        self.replication = RedisReplication(self.server)

    def _make_server(self, config: GuestSettings, on_exit: Callable[[int], None]) -> RedisServer:
        return RedisServer(config, on_exit)

    def write_config(self) -> None:
        self.server.write_config()

    def _prepare(
        self,
        databases: Sequence[DatabaseSpec],
        users: Sequence[UserSpec],
        restore: RestoreJob | None,
        replica_of: ReplicaSource | None,
    ) -> None:
        if databases or any(u.databases for u in users):
            raise OperationNotSupported(NO_DATABASES)
        super()._prepare(databases, users, restore, replica_of)

    def _replicate(self, source: ReplicaSource) -> None:
        """Start the server as a replica of ``source``, then wait for its first full sync: a
        replica is prepared once it holds the copy. Raises GuestError when the copy fails
        (the server is stopped again, and the next prepare starts over)."""
        mark = self.replication.log_mark()
        super()._replicate(source)
        try:
            self.replication.await_copy(source, mark)
        except BaseException:
            # Not left retrying a source that refused it, or streaming a half-made copy.
            with self._init_lock:
                self.server.stop()
            raise

    def _fill(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        self.admin.create_users(users)

    def min_ram_mb(self) -> int:
        """Redis holds its data in memory and may use 3/4 of the flavor's (see conf): a flavor
        needs 4/3 of what the data takes now, and at least the floor."""
        try:
            with self.server.connect() as client:
                used = int(client.info("memory")["used_memory"])
        except (redis.RedisError, KeyError, ValueError) as exc:
            raise GuestError(f"cannot read Redis's memory use: {exc}") from exc
        needed = math.ceil(used / (1024 * 1024) * 4 / 3)
        return max(self.min_ram_floor_mb, needed)

    # -- configuration -----------------------------------------------------------------------

    def _apply_configuration(self, old: GuestSettings, new: GuestSettings) -> bool:
        """Rewrite redis.conf; while the server runs, CONFIG SET what changed. A setting Redis
        holds immutable at runtime, or an override taken away (the running value stays until
        the server starts without it), takes a restart. A value Redis refuses raises
        GuestError naming it; on any failure what was set live is set back and the previous
        file and settings are put back."""
        before = conf.settings(old)
        try:
            after = conf.settings(new)  # raises before anything is written
        except Exception:
            self.config = old
            raise
        previous = self.server.read_config()
        self.server.config = new
        try:
            self.server.write_config()
            if not self.server.running():
                return False  # the next start reads every setting
            changed = {
                name: conf.show_value(value)
                for name, value in after.items()
                if name not in before or conf.show_value(before[name]) != conf.show_value(value)
            }
            immutable = self._set_live(changed)
        except Exception:
            self.config = self.server.config = old
            self.server.restore_config(previous)
            raise
        waiting = immutable + sorted(set(before) - set(after))
        if waiting:
            LOG.info("settings waiting for a restart: %s", ", ".join(waiting))
        return bool(waiting)

    def _set_live(self, changed: dict[str, str]) -> list[str]:
        """CONFIG SET each of ``changed``; return those Redis cannot change while it runs.
        Raises GuestError (after setting back what was set) when Redis refuses a value."""
        immutable: list[str] = []
        done: list[tuple[str, str]] = []
        try:
            with self.server.connect() as client:
                for name, value in changed.items():
                    prior = str(client.config_get(name).get(name, ""))
                    try:
                        client.config_set(name, value)
                    except redis.ResponseError as exc:
                        if "immutable" in str(exc) or "protected" in str(exc):
                            immutable.append(name)
                            continue
                        for undo, was in reversed(done):
                            with contextlib.suppress(redis.RedisError):
                                client.config_set(undo, was)
                        raise GuestError(f"Redis refused the value of {name}: {exc}") from exc
                    done.append((name, prior))
        except redis.RedisError as exc:
            raise GuestError(f"cannot change the Redis configuration: {exc}") from exc
        return immutable

    def effective_configuration(self) -> dict[str, str]:
        return {k: conf.show_value(v) for k, v in conf.settings(self.config).items()}
