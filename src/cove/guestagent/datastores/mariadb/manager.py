"""The MariaDB datastore manager: a facade over the server, its config, its admin, its live
settings, its backups and its replication."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pymysql

from cove.common.errors import CoveError, GuestError
from cove.domain.capabilities import capabilities
from cove.domain.clusters import CHECK_PORT
from cove.domain.guest import ClusterHealth, ClusterMember, DatabaseVitals, GuestSettings
from cove.domain.parameters import Value
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.datastores import membership
from cove.guestagent.datastores.mariadb import conf, galera, vitals
from cove.guestagent.datastores.mariadb.admin import MariaAdmin
from cove.guestagent.datastores.mariadb.backup import MariadbBackups
from cove.guestagent.datastores.mariadb.live import LiveSettings
from cove.guestagent.datastores.mariadb.replication import MariaDBReplication
from cove.guestagent.datastores.mariadb.server import MariaServer
from cove.guestagent.datastores.served import ServedManager
from cove.guestagent.readiness import Readiness

LOG = logging.getLogger(__name__)


class MariaManager(ServedManager):
    server: MariaServer
    admin: MariaAdmin
    backups: MariadbBackups
    replication: MariaDBReplication
    capabilities = capabilities("mariadb")

    def __init__(self, config: GuestSettings) -> None:
        super().__init__(config)
        self.admin = MariaAdmin(self._admin_connect)
        self.live = LiveSettings(self.server.connect)
        self.backups = MariadbBackups(self.server)
        self.replication = MariaDBReplication(self.server, self.backups)
        self.server.after_start = self.replication.finish_setup
        # A cluster member tells its endpoint's checks whether it takes queries.
        self.readiness = Readiness(config.address, CHECK_PORT, self._ready_for_clients)
        if self.server.clustered:
            self.readiness.start()

    def _make_server(self, config: GuestSettings, on_exit: Callable[[int], None]) -> MariaServer:
        return MariaServer(config, on_exit)

    def apply_logs(self, enabled: frozenset[str]) -> None:
        """my.cnf for the next start; a running server turns each log on or off at once
        (both are dynamic). Raises GuestError."""
        self.server.write_config()
        if self.server.running():
            self.live.set_global("general_log", "general" in enabled)
            self.live.set_global("slow_query_log", "slow_query" in enabled)

    def _admin_connect(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """The agent's connection for the admin: on a replica its transactions are read-only,
        because the agent's account writes past ``read_only`` and a write of the replica's
        own would stop its replication. Raises GuestError."""
        conn = self.server.connect()
        if self.server.is_replica:
            try:
                with conn.cursor() as cur:
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
            except pymysql.MySQLError as exc:
                conn.close()
                raise GuestError(f"cannot connect to MariaDB: {exc.args[-1]}") from exc
        return conn

    def adopt(self) -> bool:
        adopted = super().adopt()
        if adopted and self.server.running():
            # A replica whose setup an earlier agent did not finish.
            try:
                self.replication.finish_setup()
            except GuestError as exc:
                LOG.error("cannot finish setting the replica up: %s", exc.message)
        return adopted

    def write_config(self) -> None:
        self.server.write_config()

    def _refuse_writes(self, refuse: bool) -> None:
        """``read_only`` in my.cnf and live; a replica keeps its own. The agent's account and
        a tenant's with READ_ONLY ADMIN write past it (the volume's size still holds), and a
        statement waiting for room holds the change up: it gives up after a few seconds and is
        asked again. Raises GuestError, OSError (my.cnf) or Unprocessable (an override no
        tenant may set)."""
        self.server.write_config(refused=refuse)
        if not self.server.running() or self.server.is_replica:
            return
        try:
            with self.server.connect(timeout=3) as conn, conn.cursor() as cur:
                cur.execute(f"SET GLOBAL read_only = {'ON' if refuse else 'OFF'}")
        except pymysql.MySQLError as exc:
            raise GuestError(f"cannot set read_only: {exc}") from exc

    # -- clusters ----------------------------------------------------------------------------

    def _become_member(self, member: ClusterMember) -> None:
        galera.provider()  # refused here, before the server is touched, when not installed
        if self.server.is_replica:
            raise GuestError("a replica cannot be a cluster member")
        membership.record(self.config.conf_dir, member)
        self.server.new_cluster = member.bootstrap
        self.readiness.start()

    def _ready_for_clients(self) -> bool:
        # A member whose volume is full refuses writes: out of the endpoint's rotation.
        health = self.cluster_health()
        return health is not None and health.ready and not self.writes_refused

    def cluster_health(self) -> ClusterHealth | None:
        try:
            if not self.server.clustered or not self.server.running():
                return None
            # A hung server must not hold the heartbeat up.
            with self.server.connect(timeout=2) as conn, conn.cursor() as cur:
                cur.execute(
                    "SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size', "
                    "'wsrep_local_state_comment', 'wsrep_ready')"
                )
                found = {str(name): str(value) for name, value in cur.fetchall()}
        except (GuestError, pymysql.MySQLError, OSError) as exc:
            LOG.debug("cannot read the cluster's state: %s", exc)
            return None
        try:
            size = int(found.get("wsrep_cluster_size", "0"))
        except ValueError:
            size = 0
        return ClusterHealth(
            size=size,
            state=found.get("wsrep_local_state_comment", "unknown"),
            ready=found.get("wsrep_ready") == "ON",
        )

    def set_cluster_peers(self, peers: list[str]) -> None:
        member = membership.read(self.config.conf_dir)
        if member is None:
            raise GuestError("the server is not a cluster member")
        membership.record(self.config.conf_dir, ClusterMember(member.cluster_id, peers))
        self.server.write_config()

    def _fill(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        self.admin.create_databases(databases)
        self.admin.create_users(users)

    # -- configuration -----------------------------------------------------------------------

    def _apply_configuration(self, old: GuestSettings, new: GuestSettings) -> bool:
        """my.cnf takes every setting for the next start; a running server gets each changed
        variable by SET GLOBAL (a removed override goes back to the flavor's value or the
        server's default). True when one of them is read-only while the server runs. When the
        server refuses a value, my.cnf, the values already set live and the settings go back
        to what they were before the GuestError is raised."""
        before, after = conf.tunables(old), conf.tunables(new)  # raises before any change
        conf_file = self.server.conf_file
        previous = conf_file.read_text() if conf_file.is_file() else None
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        removed = [k for k in before if k not in after]
        prior: dict[str, str] = {}
        done: list[str] = []
        self.server.config = new
        try:
            self.server.write_config()
            if not (changed or removed) or not self.server.running():
                return False
            static = self.live.read_only([*changed, *removed])
            prior = self.live.global_values([*changed, *removed])
            needs_restart = bool(static)
            wanted: list[tuple[str, Value | None]] = list(changed.items())
            for name, value in [*wanted, *((k, None) for k in removed)]:
                if name in static:
                    continue
                if self.live.set_global(name, value):
                    done.append(name)
                else:
                    needs_restart = True
        except Exception:
            self.server.config = old
            if previous is not None:
                conf.write_private(conf_file, previous)
            for name in reversed(done):
                try:
                    self.live.set_global(name, prior.get(name))
                except CoveError as exc:
                    LOG.error("cannot set %s back to %r: %s", name, prior.get(name), exc.message)
            raise
        LOG.info(
            "%d setting(s) changed, %d set live%s",
            len(changed) + len(removed),
            len(done),
            "; a restart is needed" if needs_restart else "",
        )
        return needs_restart

    def effective_configuration(self) -> dict[str, str]:
        return {k: conf.show_value(v) for k, v in conf.tunables(self.config).items()}

    def vitals(self) -> DatabaseVitals | None:
        if not self.prepared or not self.server.running():
            return None
        try:
            conn = self.server.connect(timeout=2)  # a hung server: no late heartbeat
            try:
                return vitals.read(conn, self.server.is_replica)
            finally:
                conn.close()
        except (GuestError, pymysql.Error) as exc:
            LOG.debug("cannot read the server's vital signs: %s", exc)
            return None
