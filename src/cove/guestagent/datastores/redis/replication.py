"""Redis replication (``REPLICAOF``): the primary's replication account, a replica made from a
primary, changing primaries, and where a server stands.

A primary keeps one ACL user for its replicas, ``cove_replication``, with only what a
replica's connection needs (``acl.REPLICATION_RULES``: PSYNC, REPLCONF and PING, no key, no
channel) and ACL LIST, to read. Its password is made once, at random, and kept in the
configuration directory (mode 0600), so every ``source`` answers the same one; the server
holds only its SHA-256, and the ACL file keeps the user across restarts (ACL SAVE). Redis does
not replicate ACL users: a replica's agent copies its source's tenant users and root itself,
through that account (``usersync``, whose :class:`~.usersync.UserMirror` this engine holds,
under its lock), and never the account: a promoted replica's ``source`` makes the account
anew, with a password of its own, and a server that becomes a replica drops the account it
had.

A replica is a server whose ``redis.conf`` ends with its source's ``replicaof``,
``masteruser``, ``masterauth`` and ``replica-read-only yes``; the manager's ``write_config``
renders them at every start from the agent's record of the source (``conf.REPLICA_OF``).
Where the password lives, and why no tenant reads it:

* on disk only in the record and in ``redis.conf``, both in the configuration directory and of
  mode 0600 (never on a command line: the server's argv names only its config file);
* in the server, as ``masterauth``, which only CONFIG GET shows: CONFIG is in the @admin
  category that every tenant user and root (``acl.USER_RULES``, ``acl.ROOT_RULES``) are
  refused, as are DEBUG and MODULE (which could read the server's memory); what root may do
  beyond a user's shows no password either: MONITOR never relays @admin commands (so not the
  agent's CONFIG SET masterauth, REPLICAOF or ACL SETUSER), and SLOWLOG and the server's log
  show ``masterauth`` and ACL rules redacted, ROLE and CLIENT LIST only addresses and names.

The copy is Redis's own full sync, which the server starts as soon as it runs as a replica:
``make_replica`` empties the data directory and records the source; the manager then starts
the server and waits for the first sync (:meth:`RedisReplication.await_copy`).

Fencing a primary stops the server, cleanly: writes are paused first (CLIENT PAUSE WRITE), the
offset read then is the last one the server wrote, the agent waits briefly for the connected
replicas to acknowledge it, and SIGTERM makes Redis wait for lagging replicas once more
(``shutdown-timeout``) before it exits. A pause alone would not do: Redis forgets it when it
restarts, and a server the agent is not asked to restart could still take writes once it ends.
The offset is recorded (``conf.FENCE_POSITION``), so a fence asked again, the server stopped,
answers it.

Positions are replication offsets, comparable within a group: a primary's
``master_repl_offset`` is the end of the stream it wrote; a replica's is the end of the stream
it applied and passes on (equal to ``slave_repl_offset`` while its link is up; unlike that
one, 0 rather than a placeholder before its first sync). A promoted replica goes on from its
offset (PSYNC2), so the group's other replicas continue from theirs. Offsets grow without
writes too: a primary pings its replicas through the stream.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from cove.common.errors import GuestError
from cove.domain.replication import ReplicaSource, ReplicationState, Role
from cove.guestagent.datastores.redis import acl, conf
from cove.guestagent.datastores.redis.server import RedisServer
from cove.guestagent.datastores.redis.usersync import UserMirror
from cove.guestagent.datastores.replication_password import recorded_password

LOG = logging.getLogger(__name__)

#: What a replica answers to being made a source.
READ_ONLY = "This instance is a read-only replica"
#: Seconds a new replica may take to reach its source and start the copy.
LINK_TIMEOUT = 60.0
#: How long copying the source's data may take once it started.
COPY_TIMEOUT = 6 * 3600.0
#: Seconds a fenced primary waits for its replicas to acknowledge its last offset (they do so
#: every second) before it stops, which waits once more.
FENCE_WAIT = 15.0
#: Milliseconds a fenced primary holds writes: until it stops, which follows at once.
PAUSE_MS = 600_000
#: Refusals of a source, as a replica's log quotes them: asking again changes nothing.
REFUSALS = ("-WRONGPASS", "-NOPERM", "-NOAUTH")


# -- what a server says, as values -----------------------------------------------------------


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _command(client: redis.Redis, *args: str) -> Any:
    """One command as the server answers it (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def role_of(info: Mapping[str, Any]) -> Role:
    """The role ``INFO replication`` (as the Redis client parses it) names."""
    return Role.REPLICA if info.get("role") == "slave" else Role.PRIMARY


def position_of(info: Mapping[str, Any]) -> int | None:
    """The server's replication offset (see the module's notes); None for a replica that has
    not synced since it started (no link, and no offset: a first sync may start at 0)."""
    offset = _int(info.get("master_repl_offset"))
    if role_of(info) is Role.REPLICA and offset <= 0 and info.get("master_link_status") != "up":
        return None
    return offset


def state_of(info: Mapping[str, Any]) -> ReplicationState:
    """The ``ReplicationState`` of ``INFO replication``."""
    role = role_of(info)
    streaming = role is Role.REPLICA and info.get("master_link_status") == "up"
    return ReplicationState(role, position_of(info), streaming)


def lagging(info: Mapping[str, Any], position: int) -> list[str]:
    """The online replicas (``host:port``) of a primary's ``INFO replication`` that have not
    acknowledged ``position`` yet. One still being copied is no follower yet: not counted."""
    out = []
    for key, value in info.items():
        if not (key.startswith("slave") and key[5:].isdigit() and isinstance(value, Mapping)):
            continue
        if value.get("state") == "online" and _int(value.get("offset")) < position:
            out.append(f"{value.get('ip')}:{value.get('port')}")
    return sorted(out)


def account_state(user: Mapping[str, Any] | None, password: str) -> str:
    """What ``ACL GETUSER`` says of the replication account: "missing", "current" (on,
    with ``password`` and exactly the replication rules), "stale" (the agent's, to be set
    again: also one with the rules of an earlier agent, ``acl.FORMER_REPLICATION_RULES``) or
    "foreign" (keys, channels or commands a replication account never has: a user the agent
    did not make)."""
    if user is None:
        return "missing"
    commands = set(str(user.get("commands", "")).split())
    wanted, former = (
        {rule for rule in rules if rule[0] in "+-"}
        for rules in (acl.REPLICATION_RULES, acl.FORMER_REPLICATION_RULES)
    )
    if (
        user.get("keys")
        or user.get("channels")
        or user.get("selectors")
        or commands not in (wanted, former)
    ):
        return "foreign"
    digest = conf.password_hash(password)[1:]
    on = "on" in (user.get("flags") or [])
    current = on and list(user.get("passwords") or []) == [digest] and commands == wanted
    return "current" if current else "stale"


def without_user(acl_text: str, name: str) -> str:
    """An ACL file's ``acl_text`` without the line of user ``name``."""
    kept = [
        line
        for line in acl_text.splitlines(keepends=True)
        if line.split(maxsplit=2)[:2] != ["user", name]
    ]
    return "".join(kept)


def log_message(line: str) -> tuple[str, str]:
    """A Redis log line's level mark (``#`` warning, ``*`` notice, ``-`` verbose, ``.``
    debug) and message; ("", line) for a line in no such form."""
    parts = line.split(" ", 5)  # pid:role day month year time mark message
    if len(parts) == 6 and ":" in parts[0]:
        mark, _, message = parts[5].partition(" ")
        if mark in ("#", "*", "-", "."):
            return mark, message.strip()
    return "", line.strip()


def sync_refusal(lines: Sequence[str]) -> str | None:
    """The first refusal of a replica's source in its log ``lines``: its password or its
    rights are wrong, which trying again does not mend."""
    for line in lines:
        _mark, message = log_message(line)
        if any(refusal in message for refusal in REFUSALS):
            return message
    return None


def last_warning(lines: Sequence[str]) -> str | None:
    """The last warning in a server's log ``lines`` (why a replica has no link)."""
    for line in reversed(lines):
        mark, message = log_message(line)
        if mark == "#":
            return message
    return None


# -- the engine ------------------------------------------------------------------------------


class RedisReplication:
    """The ``ReplicationEngine`` of a Redis manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, server: RedisServer) -> None:
        # The server's settings follow apply_configuration: read them there every time.
        self.server = server
        self._lock = threading.Lock()
        #: A replica's copy of its source's tenant users, kept under the same lock, so never
        #: while the server is promoted, detached or re-pointed.
        self.users = UserMirror(server, self._lock)

    @property
    def _conf_dir(self) -> Path:
        return self.server.config.conf_dir

    @contextlib.contextmanager
    def _client(self, doing: str) -> Iterator[redis.Redis]:
        """The agent's connection; a failure raises GuestError saying what was being done.
        A refusal's text may quote a rule (and so a password hash): only its kind is kept."""
        try:
            with self.server.connect() as client:
                yield client
        except redis.RedisError as exc:
            detail = type(exc).__name__ if isinstance(exc, redis.ResponseError) else str(exc)
            raise GuestError(f"cannot {doing}: {detail}") from exc

    def _info(self) -> Mapping[str, Any]:
        with self._client("read the replication state") as client:
            return client.info("replication")

    def state(self) -> ReplicationState:
        return state_of(self._info())

    def set_synchronous(self, enabled: bool) -> None:
        # Recorded for every later write of redis.conf, and set live.
        marker = self._conf_dir / conf.SYNCHRONOUS
        try:
            if enabled:
                conf.write_private(marker, "on\n")
            else:
                marker.unlink(missing_ok=True)
        except OSError as exc:
            raise GuestError(f"cannot record the synchronous mode: {exc.strerror}") from exc
        with self._client("set the synchronous mode") as client:
            for name, value in conf.SYNCHRONOUS_SETTINGS.items():
                client.config_set(name, value if enabled else 0)

    # -- the primary's side ------------------------------------------------------------------

    def begin_source(self) -> bool:
        """Never: a Redis primary feeds replicas from its memory and its backlog, with no log
        to begin."""
        return False

    def source(self) -> ReplicaSource:
        """Raises GuestError on a replica, or when the server does not answer."""
        config = self.server.config
        with self._lock:
            if role_of(self._info()) is Role.REPLICA:
                raise GuestError(
                    f"{READ_ONLY}: it cannot be the source of another replica; "
                    "make replicas of its primary."
                )
            password = recorded_password(self._conf_dir / conf.REPLICATION_PASSWORD)
            self.ensure_account(password)
        return ReplicaSource(
            instance_id=config.instance_id,
            host=config.address,
            port=config.port,
            user=conf.REPLICATION_USER,
            password=password,
        )

    def ensure_account(self, password: str) -> None:
        """The ACL user exists with ``password`` and the replication rules only, saved to the
        ACL file; left alone when it already is (so its replicas' links stay up)."""
        with self._client("set up the replication account") as client:
            user = _command(client, "ACL", "GETUSER", conf.REPLICATION_USER)
            found = account_state(user if isinstance(user, Mapping) else None, password)
            if found == "foreign":
                raise GuestError(
                    f"A user named {conf.REPLICATION_USER} exists that the guest agent did not "
                    "make; rename it before making replicas."
                )
            if found == "current":
                return
            _command(
                client,
                "ACL",
                "SETUSER",
                conf.REPLICATION_USER,
                "reset",
                "on",
                conf.password_hash(password),
                *acl.REPLICATION_RULES,
            )
            _command(client, "ACL", "SAVE")
        LOG.info("%s the replication account", "made" if found == "missing" else "updated")

    def fence(self) -> int | None:
        """Stop the server after its replicas have its last offset (see the module's notes);
        answers that offset. Idempotent: a stopped server answers the offset recorded when it
        was fenced (None when none was). Raises GuestError only when the server cannot be
        stopped; one that does not answer is stopped all the same."""
        recorded = self._conf_dir / conf.FENCE_POSITION
        with self._lock:
            position = self._drain() if self.server.running() else None
            if position is not None:
                try:
                    conf.write_private(recorded, f"{position}\n")
                except OSError as exc:
                    LOG.warning("cannot record the fenced offset: %s", exc.strerror)
            self.server.stop()
            if self.server.running():
                raise GuestError("Redis did not stop: the server still takes writes")
            if position is None:
                with contextlib.suppress(OSError, ValueError):
                    position = int(recorded.read_text().strip())
        return position

    def _drain(self) -> int | None:
        """Pause client writes, then wait (briefly) until the connected replicas have the last
        offset, and answer it; None, after a warning, when the server does not answer."""
        try:
            with self._client("pause the writes") as client:
                _command(client, "CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
                info = client.info("replication")
                position = _int(info.get("master_repl_offset"))
                deadline = time.monotonic() + FENCE_WAIT
                behind = lagging(info, position)
                while behind and time.monotonic() < deadline:
                    time.sleep(0.1)
                    behind = lagging(client.info("replication"), position)
        except GuestError as exc:
            LOG.warning("%s; stopping the server all the same", exc.message)
            return None
        if behind:
            LOG.warning(
                "replica(s) %s have not acknowledged offset %d yet; Redis waits for them "
                "once more as it stops",
                ", ".join(behind),
                position,
            )
        return position

    # -- the replica's side ------------------------------------------------------------------

    def make_replica(self, source: ReplicaSource) -> None:
        """Runs with the server stopped: a fresh instance (its own admin password and ACL
        file: a prepare may come before the warm-up made them), recorded as a replica of
        ``source``; the copy itself happens when it starts (:meth:`await_copy`). Raises
        GuestError."""
        try:
            self.server.initialise()
        except OSError as exc:
            raise GuestError(f"cannot set the replica up: {exc.strerror}") from exc
        self._become_replica(source)
        LOG.info("the server starts as a replica of instance %s", source.instance_id)

    def rejoin(self, source: ReplicaSource) -> None:
        """Runs with the server stopped. The data goes: Redis keeps no replication offset
        across a restart with append-only persistence, so the source sends a full copy
        anyway, and until it arrives the server would serve writes the new primary may not
        have. Raises GuestError."""
        self._become_replica(source)
        LOG.info(
            "the server starts as a replica of instance %s, from a fresh copy of its data",
            source.instance_id,
        )

    def _become_replica(self, source: ReplicaSource) -> None:
        """An empty data directory, the record of ``source``, and nothing of a primary: the
        replication account (a replica does not own the group's password) and a fenced
        offset."""
        config = self.server.config
        try:
            if config.data_dir.exists():
                shutil.rmtree(config.data_dir)
            config.data_dir.mkdir(mode=0o700)
            conf.record_replica_of(config.conf_dir, source)
            for name in (conf.REPLICATION_PASSWORD, conf.FENCE_POSITION):
                (config.conf_dir / name).unlink(missing_ok=True)
            acl_file = config.conf_dir / conf.ACL_FILE
            text = acl_file.read_text()
            if without_user(text, conf.REPLICATION_USER) != text:
                conf.write_private(acl_file, without_user(text, conf.REPLICATION_USER))
        except OSError as exc:
            raise GuestError(f"cannot set the replica up: {exc.strerror}") from exc

    def log_mark(self) -> int:
        """Where the server's log ends now: :meth:`await_copy` reads what follows."""
        try:
            return self.server.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, mark: int) -> list[str]:
        try:
            with self.server.log_file.open("rb") as fh:
                fh.seek(mark)
                return fh.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def await_copy(self, source: ReplicaSource, log_mark: int) -> None:
        """Block until the replica just started streams from ``source``, its copy loaded;
        ``log_mark`` (:meth:`log_mark`, before the start) is where its log of this attempt
        begins. Raises GuestError at once when the source refuses the account, when it has
        not begun sending a copy within :data:`LINK_TIMEOUT`, or when the copy lasts beyond
        :data:`COPY_TIMEOUT`."""
        failed = f"cannot copy the data of instance {source.instance_id}"
        started = time.monotonic()
        deadline = started + LINK_TIMEOUT
        while True:
            copying = False
            try:
                info = self._info()
                if info.get("master_link_status") == "up" and self._aof_written():
                    LOG.info("copied the data of instance %s", source.instance_id)
                    return
                copying = _int(info.get("master_sync_in_progress")) == 1
            except GuestError as exc:
                if not self.server.running():
                    raise GuestError(f"{failed}: Redis exited") from exc
                copying = isinstance(exc.__cause__, redis.BusyLoadingError)
            lines = self._log_since(log_mark)
            refusal = sync_refusal(lines)
            if refusal is not None:
                raise GuestError(f"{failed}: {refusal}")
            now = time.monotonic()
            if copying:
                deadline = min(max(deadline, now + LINK_TIMEOUT), started + COPY_TIMEOUT)
            if now > deadline:
                why = last_warning(lines) or f"{source.host}:{source.port} did not answer"
                raise GuestError(f"{failed}: {why}")
            time.sleep(0.2)

    def _aof_written(self) -> bool:
        """Whether the append-only file holds the copy: after a full sync Redis rewrites it,
        and until that ends it refuses to stop (a SIGTERM is ignored, "Writing initial
        AOF, can't exit"), so a replica is ready only then."""
        with self._client("read the persistence state") as client:
            info = client.info("persistence")
        return not (
            _int(info.get("aof_rewrite_in_progress")) or _int(info.get("aof_rewrite_scheduled"))
        )

    def _record(self, source: ReplicaSource | None) -> None:
        """Record ``source`` (None: no source) and rewrite redis.conf by it, so a restart
        keeps what is about to be set live."""
        try:
            if source is None:
                conf.forget_replica_of(self._conf_dir)
            else:
                conf.record_replica_of(self._conf_dir, source)
        except OSError as exc:
            raise GuestError(f"cannot record the replica's source: {exc.strerror}") from exc
        self.server.write_config()

    def repoint(self, source: ReplicaSource) -> bool:
        """On a running replica, stream from ``source`` from now on (the new account live,
        then REPLICAOF; the record first, so a restart half-way streams from ``source`` too).
        False, changing nothing, on a stopped server or a primary. Raises GuestError when the
        server does not answer or refuses."""
        with self._lock:
            if not self.server.running() or role_of(self._info()) is not Role.REPLICA:
                return False
            self._record(source)
            with self._client("stream from the new primary") as client:
                client.config_set("masteruser", source.user)
                client.config_set("masterauth", source.password)
                _command(client, "REPLICAOF", source.host, str(source.port))
        LOG.info("the replica streams from instance %s", source.instance_id)
        return True

    def detach(self) -> None:
        """REPLICAOF NO ONE, the record of the source gone; at once on a server that is no
        replica. Idempotent; raises GuestError."""
        with self._lock:
            if self._stand_alone():
                LOG.info("the replica is a standalone server now")

    def promote(self) -> None:
        """As :meth:`detach`: a Redis replica applies what it receives as it reads it, so
        there is nothing left to apply first, and it has no copy of its primary's account to
        take away; its ``source`` makes its own. The tenant users it copied stay (as on a
        detached server). Idempotent; raises GuestError."""
        with self._lock:
            if self._stand_alone():
                LOG.info("the replica is a primary now")

    def _stand_alone(self) -> bool:
        """Make the server take writes, for good; True when it was a replica."""
        was_replica = role_of(self._info()) is Role.REPLICA
        if not was_replica and not (self._conf_dir / conf.REPLICA_OF).exists():
            return False
        self._record(None)  # first: a restart now keeps it standalone
        with self._client("make the server stand alone") as client:
            if was_replica:
                _command(client, "REPLICAOF", "NO", "ONE")
            # The old source's password leaves the server's memory too.
            client.config_set("masterauth", "")
            client.config_set("masteruser", "")
        return was_replica
