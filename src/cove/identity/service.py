"""Token flows of the embedded identity service: password (and token) authentication,
validation with revocation, and the Keystone v3 token document.

``IdentityService`` is shared by the ``/identity/v3`` endpoints and by the API's embedded
authenticator. Errors: BadRequest for a request Keystone would refuse as malformed,
Unauthorized for anything about credentials (the message never says which part was wrong).
"""

from __future__ import annotations

import os
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
from cove.common.ids import utcnow
from cove.common.settings import Settings
from cove.db.engine import Database
from cove.db.models import Project, TokenRevocation, User
from cove.domain import names
from cove.identity import store
from cove.identity.passwords import DUMMY_HASH, MAX_PASSWORD_LENGTH, verify_password
from cove.identity.throttle import LoginThrottle
from cove.identity.tokens import TokenClaims, TokenSigner, new_audit_id

AUTH_FAILED = "The request you have made requires authentication."
HASH_WAIT_SECONDS = 5.0


def hash_slots() -> int:
    """How many password checks may run at once: the cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(2, len(os.sched_getaffinity(0)))
    return max(2, os.cpu_count() or 2)


_DOMAIN_REFS = ({"id": "default"}, {"name": "Default"}, {"name": "default"})


def keystone_time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"Expecting to find an object in {where}.")
    return value


def _text(value: Any, where: str) -> str:
    """A string field of the request. Raises BadRequest for another type or bad Unicode."""
    try:
        return names.unicode_text(value, where)
    except ValueError as exc:
        raise BadRequest(f"Invalid {where}: {exc}.") from exc


def _check_domain(ref: Any) -> None:
    """Cove has one domain, ``Default`` (id ``default``)."""
    if ref is None:
        return
    ref = _obj(ref, "domain")
    if not any(all(ref.get(k) == v for k, v in d.items()) for d in _DOMAIN_REFS):
        raise Unauthorized(AUTH_FAILED)


class IdentityService:
    def __init__(self, settings: Settings, db: Database, signer: TokenSigner) -> None:
        self.settings = settings
        self.db = db
        self.signer = signer
        self.throttle = LoginThrottle(settings.login_failure_limit)
        # Password checks are slow and take 32 MB each: as many at once as there are cores.
        self._hashing = threading.BoundedSemaphore(hash_slots())

    # -- authentication ------------------------------------------------------------------------

    def authenticate(self, body: Any, client: str = "") -> tuple[str, TokenClaims]:
        """Check the credentials of a ``POST /v3/auth/tokens`` body and issue a token.
        ``client`` (the caller's address) counts failed passwords against it.

        Raises BadRequest for a malformed body, Unauthorized for wrong credentials, a disabled
        user or project, a project the user has no role on, or too many failures of late;
        ServiceUnavailable when too many password checks are already running.
        """
        auth = _obj(_obj(body, "the request body").get("auth"), "auth")
        identity = _obj(auth.get("identity"), "auth.identity")
        methods = identity.get("methods")
        if not isinstance(methods, list) or not methods:
            raise BadRequest("Expecting to find methods in auth.identity.")
        now = utcnow()
        parent: str | None = None
        if "password" in methods:
            user_id = self._check_password(identity.get("password"), client)
            expires = now + timedelta(seconds=self.settings.token_ttl)
        elif "token" in methods:
            token = _obj(identity.get("token"), "auth.identity.token").get("id")
            previous = self.check(_text(token or "", "token id"))
            # A new token of its own (revoking it leaves the first alone), expiring with the
            # first, and traceable to the token the chain started with.
            user_id, expires = previous.user_id, previous.expires_at
            parent = previous.parent_audit_id or previous.audit_id
        else:
            raise Unauthorized("Cove accepts the 'password' and 'token' methods only.")
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None or not user.enabled:
                raise Unauthorized(AUTH_FAILED)
            project, roles = self._scope(s, user, auth.get("scope", None))
            claims = TokenClaims(
                user_id=user.id,
                project_id=project.id if project else None,
                roles=roles,
                methods=tuple(m for m in ("password", "token") if m in methods)[:1],
                issued_at=now,
                expires_at=expires,
                audit_id=new_audit_id(),
                admin_project=project is not None and project.name == self.settings.admin_project,
                parent_audit_id=parent,
            )
        return self.signer.issue(claims), claims

    def _check_password(self, password_block: Any, client: str) -> str:
        """The id of the user whose password the block holds.

        The user is read in a short session of its own: the slow hash runs with no database
        connection held, and at most one per core at a time. Raises BadRequest, Unauthorized,
        ServiceUnavailable.
        """
        ref = _obj(_obj(password_block, "auth.identity.password").get("user"), "password.user")
        if "password" not in ref:
            raise BadRequest("Expecting to find password in auth.identity.password.user.")
        password = _text(ref["password"], "password")
        if "id" in ref:
            key = _text(ref["id"], "user id")
            query = select(User).where(User.id == key)
        elif "name" in ref:
            key = _text(ref["name"], "user name")
            _check_domain(ref.get("domain"))
            query = select(User).where(User.name == key)
        else:
            raise BadRequest("Expecting to find a user id or name in password.user.")
        with self.db.session() as s:
            user = s.scalar(query)
            found = (user.id, user.password_hash, user.enabled) if user else None
        # One count per account however it is named (an unknown name: as the database
        # would compare it).
        keys = self.throttle.keys(found[0] if found else key.casefold().rstrip(), client)
        self.throttle.begin(keys)
        # Hash even for an unknown user, so timing does not tell names apart.
        if not self._hashing.acquire(timeout=HASH_WAIT_SECONDS):
            raise ServiceUnavailable("The identity service is busy; try again.")
        try:
            ok = len(password) <= MAX_PASSWORD_LENGTH and verify_password(
                password, found[1] if found else DUMMY_HASH
            )
        finally:
            self._hashing.release()
        if found is None or not ok or not found[2]:
            raise Unauthorized(AUTH_FAILED)
        self.throttle.succeeded(keys)
        return found[0]

    def _scope(self, s: Session, user: User, scope: Any) -> tuple[Project | None, tuple[str, ...]]:
        """The project a token is for and the user's roles on it.

        Raises BadRequest, or Unauthorized for a project that is unknown, disabled or holds no
        role of the user.
        """
        if scope is None or scope == "unscoped":
            # As Keystone does: the default project if the user may use it, else unscoped.
            project = s.get(Project, user.default_project_id) if user.default_project_id else None
            if project is None or not project.enabled:
                return None, ()
            roles = tuple(r.name for r in store.roles_on(s, user.id, project.id))
            return (project, roles) if roles else (None, ())
        scope = _obj(scope, "auth.scope")
        if "project" not in scope:
            raise Unauthorized(
                "Cove issues project-scoped tokens only (no domain or system scope)."
            )
        ref = _obj(scope["project"], "scope.project")
        found: Project | None = None
        if "id" in ref:
            found = s.get(Project, _text(ref["id"], "project id"))
        elif "name" in ref:
            name = _text(ref["name"], "project name")
            _check_domain(ref.get("domain"))
            found = s.scalar(select(Project).where(Project.name == name))
        else:
            raise BadRequest("Expecting to find a project id or name in scope.project.")
        if found is None or not found.enabled:
            raise Unauthorized(AUTH_FAILED)
        roles = tuple(r.name for r in store.roles_on(s, user.id, found.id))
        if not roles:
            raise Unauthorized(AUTH_FAILED)
        return found, roles

    # -- validation ----------------------------------------------------------------------------

    def check(self, token: str, s: Session | None = None) -> TokenClaims:
        """The claims of a valid token. Raises Unauthorized for a bad, expired or revoked one."""
        claims = self.signer.verify(token, utcnow())
        if s is None:
            with self.db.session() as session:
                revoked = self._revoked(session, claims)
        else:
            revoked = self._revoked(s, claims)
        if revoked:
            raise Unauthorized("The token has been revoked.")
        return claims

    @staticmethod
    def _revoked(s: Session, claims: TokenClaims) -> bool:
        matches = [TokenRevocation.audit_id == claims.audit_id]
        matches.append(
            (TokenRevocation.user_id == claims.user_id)
            & (TokenRevocation.issued_before >= claims.issued_at)
        )
        if claims.project_id:
            matches.append(
                (TokenRevocation.project_id == claims.project_id)
                & (TokenRevocation.issued_before >= claims.issued_at)
            )
        return s.scalar(select(TokenRevocation.id).where(or_(*matches)).limit(1)) is not None

    def revoke(self, claims: TokenClaims) -> None:
        with self.db.session() as s:
            store.revoke_audit_id(s, claims.audit_id)

    # -- documents -----------------------------------------------------------------------------

    def token_document(
        self, claims: TokenClaims, base_url: str, catalog: bool = True
    ) -> dict[str, Any]:
        """The ``{"token": {...}}`` body Keystone sends for these claims.

        Raises NotFound when the user or project has gone since the token was issued.
        """
        with self.db.session() as s:
            user = s.get(User, claims.user_id)
            if user is None:
                raise NotFound("The token's user no longer exists.")
            token: dict[str, Any] = {
                "methods": list(claims.methods),
                "user": {
                    "id": user.id,
                    "name": user.name,
                    "domain": dict(store.DOMAIN),
                    "password_expires_at": None,
                },
                "audit_ids": [claims.audit_id]
                + ([claims.parent_audit_id] if claims.parent_audit_id else []),
                "issued_at": keystone_time(claims.issued_at),
                "expires_at": keystone_time(claims.expires_at),
            }
            if claims.project_id:
                project = s.get(Project, claims.project_id)
                if project is None:
                    raise NotFound("The token's project no longer exists.")
                roles = {r.name: r.id for r in store.roles_on(s, user.id, project.id)}
                token["project"] = {
                    "id": project.id,
                    "name": project.name,
                    "domain": dict(store.DOMAIN),
                }
                token["is_domain"] = False
                token["is_admin_project"] = claims.admin_project
                token["roles"] = [{"id": roles.get(n, n), "name": n} for n in claims.roles]
                if catalog:
                    token["catalog"] = self.catalog(project.id, base_url)
        return {"token": token}

    def catalog(self, project_id: str, base: str) -> list[dict[str, Any]]:
        """The service catalogue of a token; ``base`` is where clients reach Cove."""
        region = self.settings.region

        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            return {
                "id": f"{kind}-service",
                "type": kind,
                "name": name,
                "endpoints": [
                    {
                        "id": f"{kind}-{interface}",
                        "interface": interface,
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }

        return [
            service("database", "trove", f"{base}/v1.0/{project_id}"),
            service("identity", "keystone", f"{base}/identity/v3"),
            # Published guest logs, read-only (cove.api.routers.objects).
            service("object-store", "swift", f"{base}/swift/v1/AUTH_{project_id}"),
        ]

    # -- set-up --------------------------------------------------------------------------------

    def bootstrap(
        self, password: str | None = None, project: str = "admin", user: str = "admin"
    ) -> str | None:
        """Create the roles, an ``admin`` project and an ``admin`` user holding the admin role
        on it. Idempotent. Returns the new user's password, or None when the user existed."""
        with self.db.session() as s:
            store.ensure_roles(s)
            try:
                proj = store.find_project(s, project)
            except NotFound:
                proj = store.create_project(s, project, "Administrators of this Cove")
            try:
                store.find_user(s, user)
                created = None
            except NotFound:
                created = password or secrets.token_urlsafe(18)
                store.create_user(s, user, created, default_project=proj.id)
            store.grant_role(s, user, proj.id, "admin")
        return created
