"""A replica's copy of its source's tenant users: Redis replicates the data set but not ACL
users, so a replica's agent reads its source's users and makes its own the same.

The agent reads them with ``ACL LIST`` on the source, logged in as the replication account
with the source it recorded (``conf.REPLICA_OF``, mode 0600: the account may run ACL LIST and
nothing else of ACL, see ``acl.REPLICATION_RULES``). It keeps the tenant's users and root
(``acl.tenant_user``: not the agent's own user, not the replication account) and sets each on
the replica with the very rules and password hashes the source lists (``#<sha256>``) unless
it already has them (:func:`canonical`: in an order of its own, as Redis may list them), deletes
the tenant users the source no longer has, ends the sessions of a user whose password changed
(as the source's agent did on the source) and saves the ACL file, so a restart keeps them.
Nothing changes when the replica already has the source's users, and no rule (so no password
hash) reaches a log or an error message: a refusal is reported by its kind only.

The copy runs under the replication engine's lock, on a server that is a replica and recorded
as one: never while it is promoted, detached or re-pointed. A promoted or detached server keeps
the users it copied: they are the tenant's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common.errors import GuestError
from cove.domain.replication import ReplicaSource
from cove.guestagent.datastores.redis import acl, conf
from cove.guestagent.datastores.redis.server import RedisServer

LOG = logging.getLogger(__name__)

#: Seconds to reach a replica's source and to wait for its answer: a copy that fails is tried
#: again at the next one.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0

#: Users by name, with their ACL rules as ACL LIST writes them.
Users = Mapping[str, tuple[str, ...]]


def parse_acl_list(lines: Iterable[object]) -> dict[str, tuple[str, ...]]:
    """The users of ``ACL LIST``'s ``lines`` (``user <name> <rule> ...``), with their rules.
    A selector, which ACL LIST writes with spaces (``(~key* +get)``), is one rule, as ACL
    SETUSER takes it."""
    users: dict[str, tuple[str, ...]] = {}
    for line in lines:
        words = str(line).split()
        if len(words) < 2 or words[0] != "user":
            continue
        rules: list[str] = []
        selector: list[str] = []
        for word in words[2:]:
            if selector or word.startswith("("):
                selector.append(word)
                if word.endswith(")"):
                    rules.append(" ".join(selector))
                    selector = []
            else:
                rules.append(word)
        if selector:
            continue  # cut short: never set half a user
        users[words[1]] = tuple(rules)
    return users


def tenant_users(users: Users) -> dict[str, tuple[str, ...]]:
    """The tenant's users and root among ``users`` (``acl.tenant_user``)."""
    return {name: rules for name, rules in users.items() if acl.tenant_user(name)}


def _command(rule: str) -> tuple[str, str] | None:
    """The command and subcommand ("" for all of them) of a ``+cmd`` or ``-cmd|sub`` rule;
    None for every other rule (categories, keys, channels, flags, passwords, selectors)."""
    if len(rule) < 2 or rule[0] not in "+-" or rule[1] == "@":
        return None
    command, _, sub = rule[1:].lower().partition("|")
    return command, sub


def _independent(rules: Sequence[str]) -> bool:
    """Whether no two of the command ``rules`` name the same command, or a command and one
    of its subcommands: their order then changes nothing."""
    subs: dict[str, list[str]] = {}
    for rule in rules:
        command, sub = _command(rule) or ("", "")
        subs.setdefault(command, []).append(sub)
    return all(len(s) == 1 or ("" not in s and len(set(s)) == len(s)) for s in subs.values())


def canonical(rules: Sequence[str]) -> tuple[str, ...]:
    """``rules`` with every run of independent command rules sorted, every other rule in its
    place: what ACL LIST shows is the same user whatever the order of such a run, and Redis
    does not keep it (it lists a command's subcommands in the order of a hash table, which
    differs between servers and after an ACL SETUSER of the same rules)."""
    out: list[str] = []
    run: list[str] = []
    for rule in (*rules, ""):  # "" ends the last run
        if _command(rule) is not None:
            run.append(rule)
            continue
        out.extend(sorted(run) if _independent(run) else run)
        run = []
        if rule:
            out.append(rule)
    return tuple(out)


def credentials(rules: Iterable[str]) -> frozenset[str]:
    """What logging in as a user depends on: on or off, ``nopass`` and its passwords."""
    return frozenset(r for r in rules if r in ("on", "off", "nopass") or r[:1] in ("#", ">"))


@dataclass(frozen=True)
class UserChanges:
    """What makes a replica's tenant users its source's."""

    #: The users to make or set again, with the source's rules.
    set: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The tenant users the source does not have.
    delete: tuple[str, ...] = ()
    #: Users set again whose password (or on/off) changed: their sessions end.
    logout: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.delete)


def user_changes(source: Users, replica: Users) -> UserChanges:
    """What makes ``replica``'s users ``source``'s, both the tenant's only
    (:func:`tenant_users`). Root is never deleted (Redis's ``default`` user always exists): a
    source that does not list it leaves the replica's as it is."""
    changed = {
        name: rules
        for name, rules in source.items()
        if canonical(replica.get(name, ())) != canonical(rules) or name not in replica
    }
    return UserChanges(
        set=dict(sorted(changed.items())),
        delete=tuple(sorted(set(replica) - set(source) - {conf.ROOT_USER})),
        logout=tuple(
            sorted(
                name
                for name, rules in changed.items()
                if name in replica and credentials(replica[name]) != credentials(rules)
            )
        ),
    )


def _run(client: redis.Redis, *args: str) -> Any:
    """One command as the server answers it (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _source_client(source: ReplicaSource) -> redis.Redis:
    return redis.Redis(
        host=source.host,
        port=source.port,
        username=source.user,
        password=source.password,
        socket_timeout=READ_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # the next copy is the retry
    )


@contextlib.contextmanager
def _talking(doing: str) -> Iterator[None]:
    """Turn a Redis error into GuestError saying what was being done; a refusal's text may
    quote a rule (and so a password hash): only its kind is kept."""
    try:
        yield
    except redis.RedisError as exc:
        detail = type(exc).__name__ if isinstance(exc, redis.ResponseError) else str(exc)
        raise GuestError(f"cannot {doing}: {detail}") from exc


class UserMirror:
    """Makes a replica's tenant users and root its source's (see the module's notes)."""

    def __init__(self, server: RedisServer, lock: threading.Lock) -> None:
        self.server = server
        self._lock = lock

    def sync(self) -> UserChanges | None:
        """Make the running replica's tenant users its source's, saving its ACL file when
        anything changed; answers what changed, None (changing nothing) on a server that is
        no replica. Idempotent. Raises GuestError when the source or the server does not
        answer or refuses (its message quotes no rule)."""
        with self._lock:
            source = conf.read_replica_of(self.server.config.conf_dir)
            if source is None:
                return None
            with _talking("copy the source's users"), self.server.connect() as client:
                if client.info("replication").get("role") != "slave":
                    return None
                wanted = tenant_users(self._source_users(source))
                have = tenant_users(parse_acl_list(_run(client, "ACL", "LIST")))
                changes = user_changes(wanted, have)
                if changes:
                    self._apply(client, changes)
        if changes:
            LOG.info(
                "copied the users of instance %s: %s set, %s deleted",
                source.instance_id,
                ", ".join(changes.set) or "none",
                ", ".join(changes.delete) or "none",
            )
        return changes

    def _source_users(self, source: ReplicaSource) -> dict[str, tuple[str, ...]]:
        """ACL LIST on ``source``, as the replication account. Raises GuestError."""
        doing = f"read the users of instance {source.instance_id}"
        with _talking(doing), _source_client(source) as client:
            lines = _run(client, "ACL", "LIST")
        if not isinstance(lines, list):
            raise GuestError(f"cannot {doing}: ACL LIST answered no list")
        return parse_acl_list(lines)

    @staticmethod
    def _apply(client: redis.Redis, changes: UserChanges) -> None:
        """Set, delete and log out as ``changes`` says, then ACL SAVE (also after a failure
        half-way: what was done is the source's, and is kept)."""
        try:
            for name, rules in changes.set.items():
                _run(client, "ACL", "SETUSER", name, "reset", *rules)
            if changes.delete:
                _run(client, "ACL", "DELUSER", *changes.delete)  # ends their sessions too
            for name in changes.logout:
                _run(client, "CLIENT", "KILL", "USER", name)
        finally:
            _run(client, "ACL", "SAVE")
