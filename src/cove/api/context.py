"""What every API request handler reaches through ``request.app.state.cove``, and
:func:`authorize`, the one gate every project-scoped handler passes first (with
:func:`authorize_instance` for the routes of one instance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fastapi import Request

from cove.api.auth import MISSING_TOKEN, Authenticator, Credentials, make_authenticator
from cove.api.health import ReadinessProbe
from cove.api.policy import ANY_PROJECT, Policy, load_policy
from cove.api.ratelimit import RateLimiter
from cove.common.errors import Forbidden, Unauthorized
from cove.common.keys import ensure_key
from cove.common.metrics import Metrics
from cove.common.settings import Settings
from cove.common.urls import identity_v3, public_base
from cove.db.engine import Database
from cove.db.instances import instance_project
from cove.db.sealed import Sealer
from cove.identity.service import IdentityService
from cove.identity.tokens import TokenSigner
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
    readiness: ReadinessProbe = field(default_factory=ReadinessProbe)
    #: The control plane's metrics (``GET /metrics``); None when the operator turned them off.
    metrics: Metrics | None = None

    @property
    def taskmanager(self) -> TaskManagerClient:
        return TaskManagerClient(self.bus)

    @cached_property
    def sealer(self) -> Sealer:
        """Seals what a task needs to be resumed. Raises ConfigurationError (no task key)."""
        return Sealer.for_settings(self.settings)

    def guest(self, instance_id: str) -> GuestClient:
        """The guest agent of ``instance_id``, answering within ``rpc_timeout`` (new settings
        too: the API applies them within the request)."""
        timeout = self.settings.rpc_timeout
        return GuestClient(self.bus, instance_id, timeout, apply_timeout=timeout)

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


def reaches_any_project(request: Request) -> bool:
    """Whether the caller reaches every project's instances (rule ``instance:any_project``: a
    cloud administrator, as Trove's admin context). Raises Unauthorized."""
    return cove(request).policy.allows(ANY_PROJECT, credentials(request).roles)


def authorize_instance(
    request: Request, project_id: str, instance_id: str, rule: str
) -> tuple[RequestContext, str]:
    """:func:`authorize`, then the project the request acts in on instance ``instance_id``:
    the path's, or for a caller who reaches any project the one holding the live instance (its
    quotas and configuration groups are then the ones that count). Anyone else, and an unknown
    instance, get the path's project, where the instance is then not found.

    Raises what authorize raises.
    """
    ctx = authorize(request, project_id, rule)
    if not reaches_any_project(request):
        return ctx, project_id
    with cove(request).db.session() as s:
        return ctx, instance_project(s, instance_id) or project_id
