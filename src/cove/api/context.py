"""What every API request handler reaches through ``request.app.state.cove``, and
:func:`authorize`, the one gate every project-scoped handler passes first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from cove.api.auth import MISSING_TOKEN, Authenticator, Credentials, make_authenticator
from cove.api.policy import Policy, load_policy
from cove.api.ratelimit import RateLimiter
from cove.common.errors import Forbidden, Unauthorized
from cove.common.settings import Settings
from cove.common.urls import identity_v3, public_base
from cove.db.engine import Database
from cove.identity.service import IdentityService
from cove.identity.tokens import TokenSigner, ensure_key
from cove.rpc import RequestContext, RpcClient
from cove.rpc.guest import GuestClient
from cove.rpc.taskmanager import TaskManagerClient


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    bus: RpcClient
    auth: Authenticator
    identity: IdentityService | None = None
    policy: Policy = field(default_factory=Policy)
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0))
    login_slots: Any = None  # an anyio.CapacityLimiter once the first login arrives

    @property
    def taskmanager(self) -> TaskManagerClient:
        return TaskManagerClient(self.bus)

    def guest(self, instance_id: str) -> GuestClient:
        """The guest agent of ``instance_id``, answering reads within ``rpc_timeout``."""
        return GuestClient(self.bus, instance_id, self.settings.rpc_timeout)

    def base_url(self, request: Request) -> str:
        """Where clients reach this API (``public_url``, else the request's own address)."""
        return public_base(self.settings.public_url, str(request.base_url))

    def identity_url(self, request: Request) -> str:
        """The Keystone v3 URL clients authenticate at."""
        if self.settings.auth_strategy == "keystone":
            return identity_v3(self.settings.keystone_url)
        return f"{self.base_url(request)}/identity/v3"


def build_context(settings: Settings, db: Database, bus: RpcClient) -> ApiContext:
    """The context of a serving API: identity (when embedded), authenticator, policy, limits.

    Raises ConfigurationError for an unreadable policy file or token key.
    """
    identity = None
    if settings.auth_strategy == "embedded":
        identity = IdentityService(settings, db, TokenSigner(ensure_key(settings.token_key_file)))
    policy_path = settings.policy_file or str(settings.data_dir / "policy.toml")
    return ApiContext(
        settings=settings,
        db=db,
        bus=bus,
        auth=make_authenticator(settings, identity),
        identity=identity,
        policy=load_policy(Path(policy_path)),
        limiter=RateLimiter(settings.rate_limit_per_minute),
    )


def cove(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.cove
    return ctx


def credentials(request: Request) -> Credentials:
    """The caller's credentials from ``X-Auth-Token``. Raises Unauthorized."""
    creds: Credentials | None = getattr(request.state, "credentials", None)
    if creds is None:
        token = request.headers.get("x-auth-token", "").strip()
        if not token:
            raise Unauthorized(MISSING_TOKEN)
        creds = cove(request).auth.authenticate(token)
        request.state.credentials = creds
    return creds


def gate(request: Request, project_id: str) -> Credentials:
    """Check that the caller's token is valid and scoped to ``project_id``, and count the
    request against the project's rate limit (once per request).

    Raises Unauthorized (no valid token), Forbidden (another project) or RateLimited.
    """
    creds = credentials(request)
    if creds.project_id != project_id:
        raise Forbidden(
            f"User with project id {creds.project_id or '(none)'} cannot access this resource."
        )
    if not getattr(request.state, "counted", False):
        request.state.counted = True
        cove(request).limiter.hit(project_id, request.method)
    return creds


def authorize(request: Request, project_id: str, rule: str) -> RequestContext:
    """:func:`gate`, then the policy ``rule``. Raises what gate raises, and Forbidden."""
    creds = gate(request, project_id)
    cove(request).policy.enforce(rule, creds.roles)
    return RequestContext(
        request_id=request.state.request_id, project_id=project_id, user_id=creds.user_id
    )
