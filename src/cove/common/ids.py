"""Identifiers and time stamps used across Cove."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now, timezone-aware in UTC."""
    return datetime.now(UTC)


def isoformat(ts: datetime) -> str:
    """ISO-8601 with a Z suffix, as the RPC envelope carries it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def generate_password(length: int = 36) -> str:
    """A random password from letters and digits (no characters that need quoting)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))
