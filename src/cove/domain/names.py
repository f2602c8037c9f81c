"""Validation rules for names and secrets that users send.

Each function returns the value it accepted or raises ValueError with a message fit for a user.
"""

from __future__ import annotations

import re

INSTANCE_NAME_MAX = 255
DB_NAME_MAX = 63
PASSWORD_MIN = 1
PASSWORD_MAX = 128

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.$-]*$")
_HOST = re.compile(r"^%?[\w().-]*%?$")
#: Character set and collation names: letters, digits and a little punctuation, no quoting.
ENCODING = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

#: Names Cove keeps for itself; users may not create or drop them.
RESERVED_DATABASES = frozenset(
    {
        "postgres",
        "template0",
        "template1",
        "mysql",
        "sys",
        "information_schema",
        "performance_schema",
    }
)
RESERVED_USERS = frozenset(
    {
        "os_admin",
        "root",
        "postgres",
        "cove",
        "cove_orphans",
        "mysql.sys",
        "mysql.session",
        "mariadb.sys",
        "pg_monitor",
        "default",  # Redis: the root user
        "cove_admin",  # Redis: the guest agent's own user
    }
)


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


def database_name(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("database name must be a non-empty string")
    _encodable(value, "database name")
    if len(value) > DB_NAME_MAX:
        raise ValueError(f"database name '{value[:70]}' is longer than {DB_NAME_MAX} characters")
    if not _IDENT.match(value):
        raise ValueError(
            f"database name '{value}' is invalid: use letters, digits, '_', '$' or '-', "
            "starting with a letter or '_'"
        )
    if value.lower() in RESERVED_DATABASES or value.lower().startswith("pg_"):
        raise ValueError(f"database name '{value}' is reserved")
    return value


def user_name(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("user name must be a non-empty string")
    _encodable(value, "user name")
    if len(value) > DB_NAME_MAX:
        raise ValueError(f"user name '{value[:70]}' is longer than {DB_NAME_MAX} characters")
    if not _USER.match(value):
        raise ValueError(
            f"user name '{value}' is invalid: use letters, digits, '_', '.', '$' or '-', "
            "starting with a letter or '_'"
        )
    if value.lower() in RESERVED_USERS or value.lower().startswith("pg_"):
        raise ValueError(f"user name '{value}' is reserved")
    return value


def user_host(value: str | None) -> str:
    if value is None or value == "":
        return "%"
    if not isinstance(value, str):
        raise ValueError("user host must be a string")
    _encodable(value, "user host")
    if len(value) > 255 or not _HOST.match(value):
        raise ValueError(f"user host '{value}' is invalid")
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
