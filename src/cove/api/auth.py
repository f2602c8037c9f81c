"""Who is calling: the token in ``X-Auth-Token`` turned into :class:`Credentials`.

Two authenticators, chosen by ``auth_strategy``:

- ``embedded``: tokens of Cove's own identity service, checked with the token key and the
  revocation table of the control database;
- ``keystone``: tokens of an external Keystone, validated with ``GET /v3/auth/tokens`` under a
  service token, the answers cached for ``keystone_cache_seconds`` (at most until the token
  expires).

``authenticate`` raises Unauthorized for a missing, malformed, expired or revoked token, and
ServiceUnavailable when an external Keystone cannot be asked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from cove.api.policy import effective_roles
from cove.common.errors import ConfigurationError, ServiceUnavailable, Unauthorized
from cove.common.ids import parse_iso, utcnow
from cove.common.settings import Settings
from cove.common.urls import identity_v3
from cove.identity.service import IdentityService

LOG = logging.getLogger(__name__)

MISSING_TOKEN = "The request you have made requires authentication."


@dataclass(frozen=True)
class Credentials:
    """The caller. ``roles`` are the roles that count (see cove.api.policy.effective_roles)."""

    user_id: str
    project_id: str | None
    roles: frozenset[str]
    expires_at: datetime


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Credentials: ...


class EmbeddedAuthenticator:
    def __init__(self, identity: IdentityService) -> None:
        self.identity = identity

    def authenticate(self, token: str) -> Credentials:
        claims = self.identity.check(token)
        return Credentials(
            user_id=claims.user_id,
            project_id=claims.project_id,
            roles=effective_roles(claims.roles, claims.admin_project),
            expires_at=claims.expires_at,
        )


class KeystoneAuthenticator:
    """Validates tokens against an external Keystone v3, as keystonemiddleware does."""

    MAX_CACHE = 10_000

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.url = identity_v3(settings.keystone_url)
        self.http = http or httpx.Client(timeout=10.0)
        self._lock = threading.Lock()
        self._service_token: tuple[str, float] | None = None
        self._cache: dict[str, tuple[Credentials, float]] = {}

    def _service(self, renew: bool = False) -> str:
        with self._lock:
            if self._service_token and not renew and self._service_token[1] > time.time() + 120:
                return self._service_token[0]
        st = self.settings
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": st.keystone_username,
                            "password": st.keystone_password.get_secret_value(),
                            "domain": {"name": st.keystone_user_domain},
                        }
                    },
                },
                "scope": {
                    "project": {
                        "name": st.keystone_project,
                        "domain": {"name": st.keystone_project_domain},
                    }
                },
            }
        }
        resp = self._send("POST", "/auth/tokens", json=body, params={"nocatalog": "1"})
        if resp.status_code != 201 or "X-Subject-Token" not in resp.headers:
            LOG.error("Keystone refused Cove's service credentials (HTTP %s)", resp.status_code)
            raise ServiceUnavailable("The identity service refused Cove's service credentials.")
        token = resp.headers["X-Subject-Token"]
        expires = _credentials(_json(resp)).expires_at.timestamp()
        with self._lock:
            self._service_token = (token, expires)
        return token

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            LOG.error("Keystone at %s cannot be reached: %s", self.url, type(exc).__name__)
            raise ServiceUnavailable("The identity service cannot be reached.") from exc

    def authenticate(self, token: str) -> Credentials:
        """Raises Unauthorized for a token Keystone does not know (or an expired one),
        ServiceUnavailable when Keystone cannot be asked or answers nonsense."""
        if not token or len(token) > 8192 or not token.isascii():
            raise Unauthorized(MISSING_TOKEN)
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[1] > now:
            return hit[0]
        resp = self._validate(token, self._service())
        if resp.status_code == 401:  # the service token expired: once more with a new one
            resp = self._validate(token, self._service(renew=True))
        if resp.status_code == 404:
            raise Unauthorized("The token is not valid.")
        if resp.status_code != 200:
            LOG.error("Keystone answered a token validation with HTTP %s", resp.status_code)
            raise ServiceUnavailable("The identity service could not validate the token.")
        creds = _credentials(_json(resp))
        if creds.expires_at <= utcnow():
            raise Unauthorized("The token has expired.")
        ttl = min(self.settings.keystone_cache_seconds, creds.expires_at.timestamp() - now)
        if ttl > 0:
            with self._lock:
                if len(self._cache) >= self.MAX_CACHE:
                    self._cache.clear()
                self._cache[key] = (creds, now + ttl)
        return creds

    def _validate(self, token: str, service_token: str) -> httpx.Response:
        return self._send(
            "GET",
            "/auth/tokens",
            headers={"X-Auth-Token": service_token, "X-Subject-Token": token},
            params={"nocatalog": "1"},
        )


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise ServiceUnavailable(
            "The identity service answered something that is not JSON."
        ) from exc


def _credentials(body: Any) -> Credentials:
    """Credentials from a Keystone token document. Raises ServiceUnavailable if unreadable."""
    try:
        token = body["token"]
        project = token.get("project") or {}
        roles = frozenset(str(r["name"]) for r in token.get("roles") or [])
        # Keystone leaves is_admin_project out when no admin project is configured: then
        # every project is one, as in Keystone's own policy.
        admin_project = token.get("is_admin_project", True) is True
        return Credentials(
            user_id=str(token["user"]["id"]),
            project_id=str(project["id"]) if project.get("id") else None,
            roles=effective_roles(roles, admin_project),
            expires_at=parse_iso(str(token["expires_at"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServiceUnavailable("The identity service answered an unreadable token.") from exc


def make_authenticator(settings: Settings, identity: IdentityService | None) -> Authenticator:
    """Raises ConfigurationError when the embedded strategy has no identity service."""
    if settings.auth_strategy == "keystone":
        return KeystoneAuthenticator(settings)
    if identity is None:
        raise ConfigurationError("auth_strategy 'embedded' needs the identity service")
    return EmbeddedAuthenticator(identity)
