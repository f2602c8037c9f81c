"""The descriptor of one datastore: everything Cove knows about it, in one place.

A :class:`Datastore` says how the datastore's versions are found, how its parameter catalogue
is read and what tenants may never set, what it can do, where its clients connect, how a server
it left running is recognised and stopped, and which guest manager runs it. Each datastore has
one module in this package defining one descriptor constant, registered in ``DATASTORES``
(``cove.domain.datastores``). Adding a datastore is that module plus one guest package
(``cove.guestagent.datastores.<name>``).

Data fields are plain values, safe to read in any process:

``name``
    The short name the API, the control database and ``guest.json`` use ("postgresql").
``title``
    How logs and messages name it ("PostgreSQL").
``port``
    The standard client port. The local driver gives every instance its own address, so every
    instance listens on it, as on a Trove VM.
``capabilities``
    What the API lets tenants do with it (the guest manager declares the same set).
``denied``
    Shell-style patterns, matched case-sensitively against the lower-cased name of a setting as
    the server spells it: settings tenants may never set (paths, ports, addresses, replication,
    security, the flavor's memory). They never enter the catalogue and are never written.
``minimum``
    The oldest version Cove manages, given with as many numbers as name a version: PostgreSQL
    versions are named by their major number ("15"), MariaDB and Redis ones by major.minor
    ("10.11"). The reason for each minimum is given beside it.
``needs``
    The binaries a server directory must hold, as an operator reads it in an error message.
``stray``
    How the local driver finds and stops a server the guest agent left running (see
    :class:`StrayServer`).
``names``
    The user and database names tenants may not use (see :class:`NameRules`): the server's and
    Cove's own accounts and databases, and the names the server refuses or reads as something
    else. The API refuses them before a request reaches a guest, and the guest again.

Hooks are functions of the descriptor's module that import the layer doing the work inside
their body, so that the guest agent never imports ``cove.compute`` or ``cove.db``, the control
plane never imports a guest manager, and a machine without a datastore's server never loads its
reader:

``find_versions() -> list[FoundVersion]``
    Control plane (``cove.compute.discovery``). Every version installed in the usual places,
    one per version name (the first server found wins), oldest first, none older than
    ``minimum``. Runs each candidate binary with ``--version`` (a short-lived process, up to
    10 s each). A missing or broken binary is simply not found: it never raises for one.
``server_version(bin_dir) -> str | None``
    Control plane. The full version number ("15.18") of the server in ``bin_dir``, or None
    when ``bin_dir`` does not hold one with everything in ``needs``. Runs the binary; never
    raises.
``read_parameters(bin_dir) -> list[Parameter]``
    Control plane (``cove.compute.parameters.<name>``). The catalogue of the server in
    ``bin_dir``, asked of the server itself: runs the binary or a throw-away server and may
    block for up to about a minute. Raises whatever running it raised (``CommandFailed``,
    ``OSError``, ``TimeoutError``, a client library's errors); the caller decides what a failure
    means.
``manager(settings) -> DatastoreManager``
    Guest agent only (``cove.guestagent.datastores.<name>``). The manager of the instance that
    ``settings`` describe. Builds it without starting anything and raises nothing of its own.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cove.domain.guest import GuestSettings
    from cove.domain.parameters import Parameter
    from cove.guestagent.datastores.base import DatastoreManager


class Capability(StrEnum):
    """What a datastore can do, declared up front so the API refuses unsupported actions."""

    DATABASES = "databases"
    USERS = "users"
    #: Users are accounts per (name, host), the host limiting where they may log in from.
    USER_HOSTS = "user hosts"
    ROOT = "root"
    CONFIGURATION = "configuration"
    BACKUPS = "backups"
    #: Backups on top of a parent backup, holding only what changed since.
    INCREMENTAL_BACKUPS = "incremental backups"
    #: Restores to a moment between two backups, replaying an archived log.
    POINT_IN_TIME = "point-in-time restore"
    REPLICATION = "replication"
    CLUSTERS = "clusters"


class UnknownDatastore(LookupError):
    """No datastore of that name is known to Cove; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown datastore '{name}' (known: {', '.join(known)})")
        self.name = name
        self.known = known


@dataclass(frozen=True)
class FoundVersion:
    """A server installed on this machine, as version ``name`` of ``datastore``."""

    datastore: str
    name: str  # e.g. "15"
    version: str  # e.g. "15.18"
    bin_dir: str


@dataclass(frozen=True)
class StrayServer:
    """How the local driver stops a server that outlived its guest agent (the agent was
    killed, so nothing stopped it) when the instance is deleted.

    Paths are relative to the instance directory, as parts that are opened one by one without
    following a link. The pid file is the server's own, so the service user wrote it and it may
    name anything: its pid is signalled only when that process belongs to the service user and
    runs in ``workdir``, which only this instance's processes do. (The guest agent also checks
    the program, in ``cove.guestagent.child``, because it must not adopt anything but its
    server; the driver is about to delete the instance, so any process of it may go.)
    """

    pid_file: tuple[str, ...]
    #: The server's working directory: every server Cove runs works in the instance's data.
    workdir: tuple[str, ...]
    #: The signals to send in turn, each with the seconds to wait for the server to exit.
    stop: tuple[tuple[signal.Signals, float], ...]


@dataclass(frozen=True)
class NameRules:
    """The user and database names a datastore keeps from tenants, compared without regard to
    case (a server that tells ``PUBLIC`` from ``public`` in a quoted name may still read either
    as the keyword where a client writes it unquoted). Every name is given in lower case.

    ``own_users`` and ``own_user_prefixes`` are the accounts the server and Cove keep for
    themselves (the guest agent's, root's, the server's built-in ones): no request reaches them
    under any name, and the guest hides them. ``special_users`` are names the server refuses
    for an account, or reads in its SQL as something else than an account (a reserved keyword,
    ``PUBLIC``, ``CURRENT_USER``), and the conventional names of administrators: no account is
    created or renamed to one, but an account that has one already can still be shown, renamed
    and deleted. ``databases`` and ``database_prefixes`` are the server's and Cove's own
    databases, which tenants neither create, delete nor are granted.
    """

    own_users: frozenset[str]
    special_users: frozenset[str] = frozenset()
    own_user_prefixes: tuple[str, ...] = ()
    databases: frozenset[str] = frozenset()
    database_prefixes: tuple[str, ...] = ()

    def own_user(self, name: str) -> bool:
        """Whether ``name`` is one of the server's or Cove's own accounts."""
        lowered = name.lower()
        return lowered in self.own_users or lowered.startswith(self.own_user_prefixes)

    def user_refused(self, name: str) -> bool:
        """Whether a new account (or a rename) may not take ``name``."""
        return self.own_user(name) or name.lower() in self.special_users

    def database_refused(self, name: str) -> bool:
        """Whether ``name`` is one of the server's or Cove's own databases."""
        lowered = name.lower()
        return lowered in self.databases or lowered.startswith(self.database_prefixes)


@dataclass(frozen=True)
class Datastore:
    """One datastore; the module docstring says what each field and hook means."""

    name: str
    title: str
    port: int
    capabilities: frozenset[Capability]
    denied: tuple[str, ...]
    minimum: tuple[int, ...]
    needs: str
    stray: StrayServer
    names: NameRules
    find_versions: Callable[[], list[FoundVersion]]
    server_version: Callable[[Path], str | None]
    read_parameters: Callable[[str], list[Parameter]]
    manager: Callable[[GuestSettings], DatastoreManager]

    @property
    def oldest(self) -> str:
        """The minimum as people write it ("10.6")."""
        return ".".join(str(part) for part in self.minimum)

    def version_name(self, number: str) -> str:
        """The name of the version a server of ``number`` is registered as ("15.18" -> "15")."""
        return ".".join(number.split(".")[: len(self.minimum)])

    def supported(self, number: str) -> bool:
        """Whether a server of version ``number`` ("10.11.6") is new enough for Cove."""
        parts = tuple(int(part) for part in number.split(".")[: len(self.minimum)])
        return parts >= self.minimum
