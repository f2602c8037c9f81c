"""The Redis datastore manager: a facade over the server process, its ACL users, its backups
and its replication (``replication``: REPLICAOF replicas, whose first full sync ``prepare``
waits for).

Redis does not replicate ACL users, so a replica's agent copies its source's tenant users and
root (``usersync``): once its first full sync is done, after it follows another primary, and
whenever the agent calls :meth:`RedisManager.sync_users` (cheap, meant for every heartbeat).

Databases are no Redis concept: the manager declares no DATABASES capability, so the guest
agent refuses every database request before it reaches the admin object (``RedisAcl``, which
refuses them too), and a prepare or a user naming databases is refused the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import redis

from cove.common.errors import CoveError, GuestError, OperationNotSupported
from cove.domain.backups import RestoreJob
from cove.domain.capabilities import capabilities
from cove.domain.guest import ClusterHealth, ClusterMember, DatabaseVitals, GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.datastores import membership
from cove.guestagent.datastores.redis import cluster, conf
from cove.guestagent.datastores.redis.acl import NO_DATABASES, RedisAcl
from cove.guestagent.datastores.redis.backup import RedisBackups
from cove.guestagent.datastores.redis.replication import RedisReplication
from cove.guestagent.datastores.redis.server import RedisServer
from cove.guestagent.datastores.served import ServedManager

LOG = logging.getLogger(__name__)

#: The least seconds between two copies of a replica's users that :meth:`RedisManager.sync_users`
#: starts: the agent may call it on every heartbeat, and beats come early when things change.
USER_SYNC_SPACING = 2.0


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
        self._sync_guard = threading.Lock()
        self._syncing = False
        self._next_sync = 0.0
        self._sync_failure: str | None = None
        self._account_checked = False

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
        replica is prepared once it holds the copy; then copy the source's users (a failure
        there is only logged: the next :meth:`sync_users` tries again). Raises GuestError
        when the copy of the data fails (the server is stopped again, and the next prepare
        starts over)."""
        mark = self.replication.log_mark()
        super()._replicate(source)
        try:
            self.replication.await_copy(source, mark)
        except BaseException:
            # Not left retrying a source that refused it, or streaming a half-made copy.
            with self._init_lock:
                self.server.stop()
            raise
        self._copy_users()

    def follow(self, source: ReplicaSource) -> None:
        """As every manager's, then the users of ``source`` copied (after a re-point as
        after a rejoin: the ACL commands answer while the copy of the data loads)."""
        super().follow(source)
        self._copy_users()

    # -- clusters ----------------------------------------------------------------------------

    def _become_member(self, member: ClusterMember) -> None:
        if not member.secret:
            raise GuestError("a sharded cluster's member needs the cluster's secret")
        cluster.record(self.config.conf_dir, member)

    def _join_cluster(self, member: ClusterMember) -> None:
        """As every manager's (the server starts in cluster mode, an empty node), then the
        replication account with the cluster's password, and the other members met."""
        super()._join_cluster(member)
        with self._cluster_client("join the cluster") as client:
            self.replication.ensure_account(member.secret)
            cluster.meet(client, self.config, member.peers)

    @contextlib.contextmanager
    def _cluster_client(self, doing: str) -> Iterator[redis.Redis]:
        if not membership.is_member(self.config.conf_dir):
            raise GuestError("the server is not a cluster member")
        client = self.server.connect()
        try:
            yield client
        except redis.RedisError as exc:
            raise GuestError(f"cannot {doing}: {exc}") from exc
        finally:
            client.close()

    def set_cluster_slots(self, first: int, last: int) -> None:
        with self._cluster_client("serve the slots") as client:
            cluster.serve_slots(client, first, last)

    def follow_in_cluster(self, master: str) -> None:
        with self._cluster_client("replicate its master") as client:
            cluster.replicate(client, master, self.config.port)

    def cluster_health(self) -> ClusterHealth | None:
        try:
            if not membership.is_member(self.config.conf_dir) or not self.server.running():
                return None
            # A hung server must not hold the heartbeat up.
            client = self.server.connect(timeout=2)
            try:
                return cluster.health(client)
            finally:
                client.close()
        except (GuestError, redis.RedisError, OSError, KeyError, ValueError) as exc:
            LOG.debug("cannot read the cluster's state: %s", exc)
            return None

    def vitals(self) -> DatabaseVitals | None:
        try:
            if not self.prepared or not self.server.running():
                return None
            client = self.server.connect(timeout=2)  # a hung server: no late heartbeat
            try:
                info = client.info()
            finally:
                client.close()
            hits, misses = int(info["keyspace_hits"]), int(info["keyspace_misses"])
            return DatabaseVitals(
                connections=int(info["connected_clients"]),
                operations=int(info["total_commands_processed"]),
                cache_hits=hits,
                cache_reads=hits + misses,
            )
        except (GuestError, redis.RedisError, OSError, KeyError, ValueError) as exc:
            LOG.debug("cannot read the server's vital signs: %s", exc)
            return None

    # -- a replica's users: its source's -----------------------------------------------------

    def sync_users(self) -> None:
        """The agent's periodic hook (every heartbeat): on a prepared replica whose server
        runs, copy its source's tenant users and root (``usersync``); on a primary whose
        replicas connect with an account made by an earlier agent (without ACL LIST), give
        the account its current rights, once per agent. The work runs in a thread of its own,
        one at a time and at most every :data:`USER_SYNC_SPACING` seconds: this returns at
        once, and never raises."""
        if not self.prepared or self.fenced or not self.server.running():
            return
        account = self.config.conf_dir / conf.REPLICATION_PASSWORD
        if not self.is_replica and (self._account_checked or not account.exists()):
            return
        now = time.monotonic()
        with self._sync_guard:
            if self._syncing or now < self._next_sync:
                return
            self._syncing = True
            self._next_sync = now + USER_SYNC_SPACING
        threading.Thread(target=self._sync_in_background, name="redis-users", daemon=True).start()

    def _sync_in_background(self) -> None:
        try:
            if self.is_replica:
                self._copy_users()
            elif self._attempt("check the replication account", self.replication.source):
                self._account_checked = True  # set again only when it had to be
        except Exception as exc:  # a thread of its own: nobody else would see it
            LOG.warning("the copy of the source's users failed: %s", type(exc).__name__)
        finally:
            with self._sync_guard:
                self._syncing = False

    def _copy_users(self) -> None:
        """Make the replica's tenant users its source's now; a failure is logged and tried
        again by the next :meth:`sync_users`."""
        self._attempt("copy the source's users", self.replication.users.sync)

    def _attempt(self, doing: str, work: Callable[[], object]) -> bool:
        """Run ``work``; a CoveError is logged as a warning (once while the same one lasts:
        the next beat tries again) and answers False."""
        try:
            work()
        except CoveError as exc:
            if exc.message != self._sync_failure:
                LOG.warning("cannot %s (tried again soon): %s", doing, exc.message)
            self._sync_failure = exc.message
            return False
        if self._sync_failure is not None:
            LOG.info("could %s again", doing)
        self._sync_failure = None
        return True

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
