"""How the ``cove`` command logs in: a password authentication against the identity service
(Cove's own or a Keystone) for a project-scoped token, the database endpoint of the token's
catalog, and the token read back from the cache of :mod:`.tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click

from cove.cli import clouds
from cove.cli.user import client, tokens
from cove.cli.user.transport import Response
from cove.cli.userfmt import Body
from cove.common.urls import identity_v3

#: A token is renewed when it has less than this many seconds left, as keystoneauth does.
RENEW_BEFORE = 120.0


@dataclass(frozen=True)
class ScopedToken:
    """A project-scoped token and where to use it."""

    token: str = field(repr=False)
    project_id: str
    project_name: str
    expires_at: float | None
    endpoint: str  # <Cove API>/v1.0/<project id>
    identity: str  # the identity service's v3 URL
    catalog_endpoint: str | None = None  # the catalog's database endpoint
    cached: bool = False  # read from the token cache, not got in this run


def _expiry(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def _refusal(resp: Response) -> str:
    """The identity service's reason for a 401 (Keystone's ``{"error": {"message"}}``; it may
    say to wait, not to fix the credentials), followed by the usual hint."""
    hint = "check the user name, password and project"
    try:
        body = resp.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return hint
    # One line of printable text: it goes to a terminal.
    message = " ".join("".join(c if c.isprintable() else " " for c in message).split())[:300]
    if not message:
        return hint
    if not message.endswith((".", "!", "?")):
        message += "."
    return f"{message} {hint.capitalize()}."


def _request_token(cfg: clouds.CloudConfig, timeout: float) -> tuple[str, Body]:
    """Post ``cfg``'s password to the identity service; returns (token, token document).

    Raises click.ClickException when the service cannot be reached, refuses the credentials
    or answers without a token; ApiError for another error answer.
    """
    what = f"the identity service at {cfg.auth_url}"
    # The token URL is absolute: the base only tells whether the client needs TLS.
    http = client.make_http_client(cfg.auth_url, timeout, client.request_headers(), cfg.verify)
    try:
        resp = client.send(
            http,
            "POST",
            clouds.token_url(cfg.auth_url),
            what=what,
            timeout=timeout,
            body=clouds.token_request(cfg),
        )
    finally:
        http.close()
    if resp.status_code == 401:
        raise click.ClickException(
            f"authentication refused by {cfg.auth_url} for {cfg.who} ({cfg.source}): "
            + _refusal(resp)
        )
    if resp.is_error:
        raise client.api_error(resp)
    doc = client.json_body(resp, what).get("token")
    token = resp.headers.get("X-Subject-Token", "")
    if not token or not isinstance(doc, dict):
        raise click.ClickException(f"{what} answered without a token: is it a Keystone v3 URL?")
    return token, doc


def _database_endpoint(
    cfg: clouds.CloudConfig, found: str | None, url: str | None, project_id: str
) -> str:
    """``<url>/v1.0/<project>`` when ``url`` is given, else ``found``, the ``database``
    endpoint of the token's catalog for ``cfg``'s interface and region.

    Raises click.ClickException when the catalog has no such endpoint.
    """
    if url:
        return f"{url}/v1.0/{quote(project_id, safe='')}"
    if found is None:
        region = f", region {cfg.region_name}" if cfg.region_name else ""
        raise click.ClickException(
            f"the catalog of {cfg.auth_url} has no database endpoint (interface "
            f"{cfg.interface}{region}): give Cove's address with --url or COVE_URL"
        )
    return found


def authenticate(cfg: clouds.CloudConfig, url: str | None, timeout: float) -> ScopedToken:
    """Get a token with ``cfg``'s password, and the database endpoint: ``<url>/v1.0/<project>``
    when ``url`` is given, else the one of the token's catalog.

    Raises click.ClickException when the identity service cannot be reached, refuses the
    credentials, or gives no project-scoped token or no database endpoint.
    """
    token, doc = _request_token(cfg, timeout)
    project = doc.get("project") or {}
    if not isinstance(project, dict) or not project.get("id"):
        raise click.ClickException(
            f"the token of {cfg.who} is not scoped to a project: name one with project_name "
            f"in {cfg.source}, or OS_PROJECT_NAME"
        )
    project_id = str(project["id"])
    found = clouds.find_endpoint(
        doc.get("catalog") or [], "database", cfg.interface, cfg.region_name
    )
    return ScopedToken(
        token=token,
        project_id=project_id,
        project_name=str(project.get("name") or project_id),
        expires_at=_expiry(doc.get("expires_at")),
        endpoint=_database_endpoint(cfg, found, url, project_id),
        identity=identity_v3(cfg.auth_url),
        catalog_endpoint=found,
    )


def to_cache(scoped: ScopedToken) -> tokens.CachedToken | None:
    """What the token cache keeps of ``scoped`` (the reverse of :func:`from_cache`); None for
    a token without an expiry, which is not kept."""
    if scoped.expires_at is None:
        return None
    return tokens.CachedToken(
        token=scoped.token,
        expires_at=scoped.expires_at,
        project_id=scoped.project_id,
        project_name=scoped.project_name,
        identity=scoped.identity,
        catalog_endpoint=scoped.catalog_endpoint,
    )


def from_cache(cfg: clouds.CloudConfig, url: str | None, found: tokens.CachedToken) -> ScopedToken:
    """A scoped token read from the token cache. Raises click.ClickException as
    :func:`authenticate` does when there is no database endpoint."""
    return ScopedToken(
        token=found.token,
        project_id=found.project_id,
        project_name=found.project_name,
        expires_at=found.expires_at,
        endpoint=_database_endpoint(cfg, found.catalog_endpoint, url, found.project_id),
        identity=found.identity,
        catalog_endpoint=found.catalog_endpoint,
        cached=True,
    )
