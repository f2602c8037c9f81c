"""Validation rules for names and secrets that users send.

Each function returns the value it accepted or raises ValueError with a message fit for a user.
User and database names have a form every datastore shares, checked here, and names each
datastore keeps from tenants, given by its descriptor (``NameRules``): the rules take the
datastore's name, or None while it is not known yet (the caller checks again once it is).
"""

from __future__ import annotations

import re

from cove.common.text import shown
from cove.domain.datastores import DATASTORES
from cove.domain.datastores.base import NameRules

INSTANCE_NAME_MAX = 255
DB_NAME_MAX = 63
PASSWORD_MIN = 1
PASSWORD_MAX = 128

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.$-]*$")
_HOST = re.compile(r"^%?[\w().-]*%?$")
#: Character set and collation names: letters, digits and a little punctuation, no quoting.
ENCODING = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def _encodable(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode text") from None


def unicode_text(value: object, what: str) -> str:
    """``value`` if it is a string that can be encoded (JSON may carry lone surrogates).

    Raises ValueError otherwise.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    _encodable(value, what)
    return value


def instance_name(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("instance name must be a non-empty string")
    _encodable(value, "instance name")
    if len(value) > INSTANCE_NAME_MAX:
        raise ValueError(f"instance name must be at most {INSTANCE_NAME_MAX} characters")
    if not any(ch.isalnum() for ch in value):
        raise ValueError("instance name must contain at least one letter or digit")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("instance name must not contain control characters")
    return value


def _rules(datastore: str | None) -> tuple[NameRules, str] | None:
    """The name rules of ``datastore`` and its title; None when it is not known."""
    known = DATASTORES.get(datastore) if datastore is not None else None
    return (known.names, known.title) if known is not None else None


def _reserved(kind: str, value: str, prefixes: tuple[str, ...], title: str) -> None:
    """Raise the ValueError that says ``value`` is a reserved ``kind`` name."""
    prefix = next((p for p in prefixes if value.lower().startswith(p)), None)
    if prefix is not None:
        raise ValueError(f"{kind} names starting with '{prefix}' are reserved on {title}")
    raise ValueError(f"{kind} name '{value}' is reserved on {title}; choose another")


def database_name(value: str, datastore: str | None) -> str:
    """``value`` if it is a database name tenants may use on ``datastore`` (None: the form
    only). Raises ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError("database name must be a non-empty string")
    _encodable(value, "database name")
    if len(value) > DB_NAME_MAX:
        raise ValueError(f"database name '{shown(value)}' is longer than {DB_NAME_MAX} characters")
    if not _IDENT.match(value):
        raise ValueError(
            f"database name '{shown(value)}' is invalid: use letters, digits, '_', '$' or '-', "
            "starting with a letter or '_'"
        )
    found = _rules(datastore)
    if found is not None and found[0].database_refused(value):
        rules, title = found
        _reserved("database", value, rules.database_prefixes, title)
    return value


def user_name(value: str, datastore: str | None, *, existing: bool = False) -> str:
    """``value`` if it is a user name tenants may use on ``datastore`` (None: the form only).

    A new name (creating an account, or renaming one to it) may be neither one of the server's
    and Cove's own accounts nor a name the server refuses or reads specially; an ``existing``
    one (the account to show, change or delete) only not one of the own accounts, so an
    account made under a name refused today can still be reached. Raises ValueError.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("user name must be a non-empty string")
    _encodable(value, "user name")
    if len(value) > DB_NAME_MAX:
        raise ValueError(f"user name '{shown(value)}' is longer than {DB_NAME_MAX} characters")
    if not _USER.match(value):
        raise ValueError(
            f"user name '{shown(value)}' is invalid: use letters, digits, '_', '.', '$' or '-', "
            "starting with a letter or '_'"
        )
    found = _rules(datastore)
    if found is not None:
        rules, title = found
        if rules.own_user(value) or (not existing and rules.user_refused(value)):
            _reserved("user", value, rules.own_user_prefixes, title)
    return value


def user_host(value: str | None) -> str:
    if value is None or value == "":
        return "%"
    if not isinstance(value, str):
        raise ValueError("user host must be a string")
    _encodable(value, "user host")
    if len(value) > 255 or not _HOST.match(value):
        raise ValueError(f"user host '{shown(value)}' is invalid")
    return value


def password(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError("password must be a string")
    _encodable(value, "password")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise ValueError(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("password must not contain control characters")
    return value
