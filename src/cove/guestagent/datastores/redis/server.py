"""Starting, watching and stopping the Redis server process, and the agent's connection."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent.child import ChildServer, read_pid_file
from cove.guestagent.datastores import membership
from cove.guestagent.datastores.redis import cluster, conf
from cove.guestagent.datastores.replication_password import recorded_password

LOG = logging.getLogger(__name__)

#: Seconds a stop waits for an append-only file rewrite under way to end.
REWRITE_WAIT = 30.0


class RedisServer(ChildServer):
    """One Redis server: its files, its process and the agent's admin connection.

    Stopped with SIGTERM (Redis flushes the AOF and exits), then SIGKILL; a stop first lets an
    append-only file rewrite under way end (for up to :data:`REWRITE_WAIT` seconds), because
    Redis ignores SIGTERM while it writes its first AOF ("Writing initial AOF, can't exit",
    just after a replica's full sync) and would be killed, its copy lost, at the timeout. Its
    process title names its config file too, but Redis cuts a title to the room its
    environment leaves, so the server is recognised by its program and its working directory.
    """

    title = "Redis"
    program = "redis-server"

    def __init__(self, config: GuestSettings, on_exit: Callable[[int], None]) -> None:
        super().__init__(config, config.log_dir / conf.LOG_FILE, on_exit)
        self.binary = Path(config.bin_dir) / "redis-server"
        self.conf_file = config.conf_dir / conf.CONF_FILE
        self.acl_file = config.conf_dir / conf.ACL_FILE
        self.secret_file = config.conf_dir / conf.ADMIN_SECRET
        self.socket = config.run_dir / conf.SOCKET
        self.pid_file = config.run_dir / conf.PID_FILE

    # -- files -------------------------------------------------------------------------------

    def initialise(self) -> None:
        """A fresh, empty data directory, a new admin password and the first ACL file; the
        server is nobody's replica and has no replicas (what an earlier, failed prepare as a
        replica recorded goes)."""
        for directory in (self.config.conf_dir, self.config.log_dir, self.config.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        conf.forget_replica_of(self.config.conf_dir)
        for name in (conf.REPLICATION_PASSWORD, conf.FENCE_POSITION):
            (self.config.conf_dir / name).unlink(missing_ok=True)
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        password = conf.new_admin_password()
        conf.write_private(self.secret_file, password + "\n")
        conf.write_private(self.acl_file, conf.initial_acl(password))

    def write_config(self) -> None:
        """redis.conf for ``self.config``, a replica's when the server is recorded as one
        (``conf.REPLICA_OF``); raises Unprocessable (before writing anything) for an override
        no tenant may set, GuestError when the replica's record cannot be read."""
        source = conf.read_replica_of(self.config.conf_dir)
        synchronous = (self.config.conf_dir / conf.SYNCHRONOUS).exists()
        text = conf.redis_conf(self.config, source, synchronous)
        if membership.is_member(self.config.conf_dir):
            password = recorded_password(self.config.conf_dir / conf.REPLICATION_PASSWORD)
            text += "".join(cluster.conf_lines(self.config, password))
        self.restore_config(text)

    def read_config(self) -> str | None:
        """The current redis.conf, or None when there is none yet."""
        try:
            return self.conf_file.read_text()
        except FileNotFoundError:
            return None

    def restore_config(self, text: str | None) -> None:
        """Put ``text`` (from :meth:`read_config`) back as redis.conf, whole or not at all."""
        if text is None:
            self.conf_file.unlink(missing_ok=True)
            return
        tmp = self.conf_file.with_name(f".{conf.CONF_FILE}.new")
        conf.write_private(tmp, text)
        tmp.replace(self.conf_file)

    def admin_password(self) -> str:
        """The agent's own password; raises GuestError when its file cannot be read."""
        try:
            return self.secret_file.read_text().strip()
        except OSError as exc:
            raise GuestError(f"cannot read the Redis admin password: {exc.strerror}") from exc

    # -- process -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [str(self.binary), str(self.conf_file)]

    def read_pid(self) -> int | None:
        return read_pid_file(self.pid_file)

    def before_start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a socket left by a killed server is not an answer
        # A server started again writes past the offset recorded when it was fenced.
        (self.config.conf_dir / conf.FENCE_POSITION).unlink(missing_ok=True)

    def stop(self) -> None:
        self._let_rewrite_end()
        super().stop()

    def _let_rewrite_end(self) -> None:
        """Wait (at most :data:`REWRITE_WAIT` s) while the running server rewrites its AOF;
        at once when it does not answer."""
        deadline = time.monotonic() + REWRITE_WAIT
        while self.running() and time.monotonic() < deadline:
            try:
                with self.connect() as client:
                    info = client.info("persistence")
            except (GuestError, redis.RedisError):
                return
            if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
                return
            time.sleep(0.05)

    # -- connections -------------------------------------------------------------------------

    def connect(self, timeout: float = 10) -> redis.Redis:
        """A client logged in as the agent's user over the unix socket (no network), whose
        commands give up after ``timeout`` seconds."""
        return redis.Redis(
            unix_socket_path=str(self.socket),
            username=conf.ADMIN_USER,
            password=self.admin_password(),
            socket_timeout=timeout,
            socket_connect_timeout=min(5, timeout),
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),  # callers wait and retry themselves
        )

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.connect() as client:
                return bool(client.ping())
        except (GuestError, redis.RedisError):
            return False
