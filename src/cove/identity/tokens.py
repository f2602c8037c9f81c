"""Signed, expiring tokens.

A token is ``cv1.<payload>.<signature>``: the payload is base64url JSON of the claims, the
signature an HMAC-SHA256 over ``cv1.<payload>`` with the deployment's token key. Tokens are
not stored anywhere: any API process holding the key checks one without a database read; only
revocation needs the control database. The key lives in ``<data>/identity/token.key`` (mode
0600) and survives restarts, so tokens do too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cove.common.errors import ConfigurationError, Unauthorized
from cove.common.keys import KEY_BYTES

PREFIX = "cv1"
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class TokenClaims:
    """What a token asserts. ``project_id`` is None for an unscoped token. ``admin_project``
    says the project is the deployment's administrative project, where the ``admin`` role
    means administrator of the whole cloud (Keystone's ``is_admin_project``). ``parent_audit_id``
    is the audit id of the token this one was obtained with, if any."""

    user_id: str
    project_id: str | None
    roles: tuple[str, ...]
    methods: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    audit_id: str
    admin_project: bool = False
    parent_audit_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "u": self.user_id,
            "p": self.project_id,
            "r": list(self.roles),
            "m": list(self.methods),
            "i": self.issued_at.timestamp(),
            "e": self.expires_at.timestamp(),
            "a": self.audit_id,
            "x": self.admin_project,
            "pa": self.parent_audit_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenClaims:
        project = data["p"]
        if not isinstance(data["u"], str) or not (project is None or isinstance(project, str)):
            raise ValueError("bad ids")
        return cls(
            user_id=data["u"],
            project_id=project,
            roles=tuple(str(r) for r in data["r"]),
            methods=tuple(str(m) for m in data["m"]),
            issued_at=datetime.fromtimestamp(float(data["i"]), UTC),
            expires_at=datetime.fromtimestamp(float(data["e"]), UTC),
            audit_id=str(data["a"]),
            admin_project=bool(data.get("x", False)),
            parent_audit_id=str(data["pa"]) if data.get("pa") else None,
        )


def new_audit_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks tokens with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ConfigurationError("the token key is too short")
        self._key = key

    def _sign(self, message: bytes) -> str:
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, claims: TokenClaims) -> str:
        payload = _b64(json.dumps(claims.to_json(), separators=(",", ":")).encode())
        head = f"{PREFIX}.{payload}"
        return f"{head}.{self._sign(head.encode())}"

    def verify(self, token: str, now: datetime) -> TokenClaims:
        """The claims of ``token``.

        Raises Unauthorized when the token is malformed, not signed with this key, or expired.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The request you have made requires authentication.")
        if not token.isascii():  # headers arrive as latin-1; a token never has such bytes
            raise Unauthorized("The token is not valid.")
        prefix, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        head = f"{prefix}.{payload}"
        if prefix != PREFIX or not payload or not signature:
            raise Unauthorized("The token is not valid.")
        if not hmac.compare_digest(self._sign(head.encode()), signature):
            raise Unauthorized("The token is not valid.")
        try:
            claims = TokenClaims.from_json(json.loads(_unb64(payload)))
        except (ValueError, KeyError, TypeError) as exc:
            raise Unauthorized("The token is not valid.") from exc
        if claims.expires_at <= now:
            raise Unauthorized("The token has expired.")
        return claims
