"""Checks of what users send, shared by the routers: each turns a request model into the typed
specs the guest receives, or raises a 400 naming the problem."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from cove.api.schemas import DatabaseIn, UserIn
from cove.common.errors import BadRequest, ValidationFailed
from cove.domain import names
from cove.domain.capabilities import Capability, capabilities
from cove.domain.specs import DatabaseSpec, UserSpec

T = TypeVar("T")
R = TypeVar("R")


def checked(rule: Callable[[T], R], value: T) -> R:
    """Apply a rule of ``cove.domain`` (a name's, an ``access``'s); raises ValidationFailed
    with its message."""
    try:
        return rule(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc


def user_name(name: str, datastore: str | None, *, existing: bool = False) -> str:
    """``name`` checked by :func:`cove.domain.names.user_name` (a new name unless
    ``existing``); ``datastore`` None checks the form only, before the instance is looked up.
    Raises ValidationFailed."""
    return checked(lambda v: names.user_name(v, datastore, existing=existing), name)


def database_name(name: str, datastore: str | None) -> str:
    """``name`` checked by :func:`cove.domain.names.database_name`; ``datastore`` None checks
    the form only. Raises ValidationFailed."""
    return checked(lambda v: names.database_name(v, datastore), name)


def names_fit(datastore: str, databases: Iterable[str], users: Iterable[str]) -> None:
    """The names of a new instance's databases and users, held to ``datastore``'s rules once
    it is known (:func:`database_specs` and :func:`user_specs` checked their form). Raises
    ValidationFailed."""
    for db in databases:
        database_name(db, datastore)
    for user in users:
        user_name(user, datastore)


def host_allowed(datastore: str, name: str, host: str) -> str:
    """A checked ``host`` for user ``name`` of ``datastore``: any host where users have hosts
    (MariaDB), only '%' elsewhere. Raises BadRequest."""
    if host != "%" and Capability.USER_HOSTS not in capabilities(datastore):
        raise BadRequest(
            f"User '{name}': users of datastore {datastore} have no host; leave it out or use '%'."
        )
    return host


def database_specs(databases: Iterable[DatabaseIn]) -> list[DatabaseSpec]:
    specs: list[DatabaseSpec] = []
    for db in databases:
        database_name(db.name, None)
        if any(s.name == db.name for s in specs):
            raise BadRequest(f"Database '{db.name}' is listed twice.")
        specs.append(DatabaseSpec(db.name, db.character_set, db.collate))
    return specs


def user_specs(
    users: Iterable[UserIn], initial_databases: set[str] | None = None
) -> list[UserSpec]:
    """With ``initial_databases`` (at instance creation), every database a user names must be
    among them, as Trove requires. Names and hosts are checked for form only: :func:`names_fit`
    and :func:`host_allowed` check them against the datastore once it is known."""
    specs: list[UserSpec] = []
    for user in users:
        user_name(user.name, None)
        checked(names.password, user.password)
        host = str(checked(names.user_host, user.host))
        if any((s.name, s.host) == (user.name, host) for s in specs):
            raise BadRequest(f"User '{user.name}@{host}' is listed twice.")
        for ref in user.databases:
            database_name(ref.name, None)
            if initial_databases is not None and ref.name not in initial_databases:
                raise BadRequest(
                    f"The request indicates that user {user.name} should have access to "
                    f"database {ref.name}, but database {ref.name} is not included in the "
                    "initial databases list."
                )
        specs.append(
            UserSpec(user.name, user.password, host, tuple(r.name for r in user.databases))
        )
    return specs


def checked_text(value: str, what: str) -> str:
    """``value``, if it is valid Unicode text: a lone surrogate in JSON can be neither looked
    up nor shown. Raises ValidationFailed, whose message never echoes it."""
    return checked(lambda v: names.unicode_text(v, what), value)
