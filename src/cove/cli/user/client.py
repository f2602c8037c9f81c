"""The HTTP side of the ``cove`` command: authentication against the identity service, one
client per run, error envelopes turned into one-line messages, pagination, and the :class:`App`
every command shares.

Tests replace :func:`make_http_client` here to plug in a fake transport.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import click
import httpx
import yaml

from cove import __version__
from cove.cli import clouds, output
from cove.cli import userfmt as fmt
from cove.cli.user import tokens
from cove.cli.userfmt import Body
from cove.common.urls import identity_v3

#: Lists stop following ``next`` links after this many items.
MAX_ITEMS = 10_000


def request_headers(token: str | None = None) -> dict[str, str]:
    """Headers sent with every request: with ``token``, the ``X-Auth-Token``."""
    headers = {"Accept": "application/json", "User-Agent": f"cove-cli/{__version__}"}
    if token:
        headers["X-Auth-Token"] = token
    return headers


def make_http_client(
    base_url: str, timeout: float, headers: Mapping[str, str], verify: bool | str = True
) -> httpx.Client:
    """The HTTP client of a run, for requests below ``base_url``; tests replace this factory
    to plug in a fake transport.

    A client of a plain ``http://`` address loads no CA certificates (a third of a short
    command's time): nothing it asks for goes over TLS, as it follows no redirect.
    """
    if base_url.startswith("http://"):
        verify = False
    return httpx.Client(base_url=base_url, timeout=timeout, headers=dict(headers), verify=verify)


class ApiError(click.ClickException):
    """A non-2xx answer of the API, shown as ``Error (<code> <faultName>): <message>``."""

    def __init__(self, code: int, fault: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.fault = fault

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error ({self.code} {self.fault}): {self.message}", file=file, err=True)


def api_error(resp: httpx.Response) -> ApiError:
    """Read Trove's ``{"<fault>": {"code", "message"}}`` envelope (Keystone's ``{"error":
    {"code", "title", "message"}}`` too), tolerating other shapes."""
    fault, message = resp.reason_phrase or "error", resp.text.strip()[:500]
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        first = next(iter(body.items()), None)
        if len(body) == 1 and first and isinstance(first[1], dict):
            fault, message = first[0], str(first[1].get("message") or message)
            if fault == "error" and first[1].get("title"):
                fault = str(first[1]["title"])
        elif "message" in body:
            fault, message = str(body.get("title") or fault), str(body["message"])
    return ApiError(resp.status_code, fault, message or "(no message)")


def send(
    http: httpx.Client,
    method: str,
    path: str,
    *,
    what: str,
    timeout: float,
    body: Any = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One request; ``what`` names the server in messages (``Cove at <url>``).

    Raises click.ClickException when the server cannot be reached or does not answer in time.
    """
    try:
        return http.request(method, path, json=body, params=params)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise click.ClickException(
            f"cannot reach {what}: is it running? (start it with 'make run')"
        ) from exc
    except httpx.TimeoutException as exc:
        raise click.ClickException(
            f"{what} did not answer within {timeout:g} s (see --timeout)"
        ) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"request to {what} failed: {exc}") from exc


def json_body(resp: httpx.Response, what: str) -> Body:
    """The JSON object of an answer ({} for an empty one).

    Raises click.ClickException when it is not a JSON object.
    """
    if not resp.content.strip():
        return {}
    try:
        data = resp.json()
    except ValueError as exc:
        raise click.ClickException(f"{what} answered with a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise click.ClickException(f"{what} answered with an unexpected body")
    return data


# -- authentication ----------------------------------------------------------------------------

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


def _refusal(resp: httpx.Response) -> str:
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
    http = make_http_client(cfg.auth_url, timeout, request_headers(), cfg.verify)
    try:
        resp = send(
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
        raise api_error(resp)
    doc = json_body(resp, what).get("token")
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


def server_of(endpoint: str) -> str:
    """The root of an endpoint ``<root>/v1.0/<project>``, for messages."""
    return endpoint.split("/v1.0/", 1)[0] if "/v1.0/" in endpoint else endpoint


# -- the API -----------------------------------------------------------------------------------


class Api:
    """Thin typed access to the API under ``<url>/v1.0/<project>``.

    ``token`` gives the token to send with each request (renewing it when it is about to
    expire). Every method raises ApiError for a non-2xx answer and click.ClickException when
    Cove cannot be reached or answers something that is not JSON.
    """

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        timeout: float,
        token: Callable[[], str] | None = None,
        refused: Callable[[], bool] | None = None,
    ) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout
        self._token = token
        # Asked when the API refuses the token with a 401: True when a new one is to be tried.
        self._refused = refused

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Body | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Body:
        what = f"Cove at {self._url}"
        for _attempt in range(2):
            if self._token is not None:
                self._http.headers["X-Auth-Token"] = self._token()
            resp = send(
                self._http, method, path, what=what, timeout=self._timeout, body=body, params=params
            )
            if resp.status_code != 401 or self._refused is None or not self._refused():
                break
        if resp.is_error:
            raise api_error(resp)
        return json_body(resp, f"Cove ({method} {path})")

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        return self.request("GET", path, params=params)

    def paginate(self, path: str, key: str, params: Mapping[str, str] | None = None) -> list[Body]:
        """Every item of a list (``params`` filter it), following ``next`` links up to
        MAX_ITEMS.

        The next page is asked of ``path`` with the query of the link's href (which keeps the
        filters): Trove writes ``https://`` into its links whatever the scheme, so the href
        itself is not trusted.
        """
        items: list[Body] = []
        params = dict(params or {})
        seen: set[tuple[tuple[str, str], ...]] = set()
        while True:
            body = self.get(path, params or None)
            items.extend(body.get(key) or [])
            params = _next_params(body)
            marker = tuple(sorted(params.items()))
            if not params or marker in seen:
                return items
            if len(items) >= MAX_ITEMS:
                click.echo(f"Warning: showing only the first {MAX_ITEMS} items", err=True)
                return items[:MAX_ITEMS]
            seen.add(marker)


def _next_params(body: Body) -> dict[str, str]:
    for link in body.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return dict(httpx.URL(str(link["href"])).params)
    return {}


def need(body: Body, key: str) -> Any:
    """``body[key]``, or a clear error when Cove's answer lacks it."""
    if key not in body:
        raise click.ClickException(f"Cove's answer lacks the '{key}' field")
    return body[key]


@dataclass
class App:
    """What every command shares: the options of ``cove``, the scoped token and the API client,
    made on first use (so ``--help`` and ``cove up`` need no credentials)."""

    url: str | None
    cloud: str | None
    timeout: float
    _config: clouds.CloudConfig | None = field(default=None, repr=False)
    _scoped: ScopedToken | None = field(default=None, repr=False)
    _api: Api | None = field(default=None, repr=False)

    @property
    def config(self) -> clouds.CloudConfig:
        if self._config is None:
            try:
                self._config = clouds.load(dict(os.environ), self.cloud, Path.cwd(), Path.home())
            except clouds.CloudConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._config

    @property
    def scoped(self) -> ScopedToken:
        """The current scoped token: the cached one on first use when it is still good, and
        renewed (and cached) when it is about to expire."""
        scoped = self._scoped
        if scoped is None and tokens.enabled(dict(os.environ)):
            found = tokens.load(self._cache_dir, self.config, RENEW_BEFORE)
            if found is not None:
                scoped = self._scoped = from_cache(self.config, self.url, found)
        if scoped is None or (
            scoped.expires_at is not None and scoped.expires_at - time.time() < RENEW_BEFORE
        ):
            scoped = self._scoped = self._login()
        return scoped

    @property
    def _cache_dir(self) -> Path:
        return tokens.cache_dir(dict(os.environ), Path.home())

    def _login(self) -> ScopedToken:
        """A new token for the cloud, kept in the token cache."""
        scoped = authenticate(self.config, self.url, self.timeout)
        if scoped.expires_at is not None and tokens.enabled(dict(os.environ)):
            kept = tokens.CachedToken(
                token=scoped.token,
                expires_at=scoped.expires_at,
                project_id=scoped.project_id,
                project_name=scoped.project_name,
                identity=scoped.identity,
                catalog_endpoint=scoped.catalog_endpoint,
            )
            tokens.save(self._cache_dir, self.config, kept)
        return scoped

    def _refused(self) -> bool:
        """The API refused the token: one from the cache (revoked, or its user's password
        changed) is forgotten and a new one got; True when there is a new one to try."""
        if self._scoped is None or not self._scoped.cached:
            return False
        tokens.forget(self._cache_dir, self.config)
        self._scoped = self._login()
        return True

    def token(self) -> str:
        return self.scoped.token

    @property
    def api(self) -> Api:
        if self._api is None:
            scoped = self.scoped
            http = make_http_client(
                scoped.endpoint, self.timeout, request_headers(scoped.token), self.config.verify
            )
            self._api = Api(
                http,
                server_of(scoped.endpoint),
                self.timeout,
                token=self.token,
                refused=self._refused,
            )
        return self._api

    def identity_get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        """GET ``<identity v3>/<path>`` with the token. Raises ApiError, click.ClickException."""
        scoped = self.scoped
        what = f"the identity service at {scoped.identity}"
        http = make_http_client(
            scoped.identity, self.timeout, request_headers(scoped.token), self.config.verify
        )
        try:
            resp = send(http, "GET", path, what=what, timeout=self.timeout, params=params)
        finally:
            http.close()
        if resp.is_error:
            raise api_error(resp)
        return json_body(resp, what)

    def project_id(self, ref: str | None) -> str:
        """The id of project ``ref``, an id or a name (None: the token's own project).

        A name other than the token's is looked up in the identity service, as the openstack
        command does. Raises click.ClickException when no such project is visible.
        """
        scoped = self.scoped
        if ref is None or ref in (scoped.project_id, scoped.project_name):
            return scoped.project_id
        if clouds.looks_like_id(ref):
            return ref
        found = self.identity_get("projects", {"name": ref}).get("projects") or []
        ids = [str(p["id"]) for p in found if isinstance(p, dict) and p.get("name") == ref]
        if not ids:
            raise click.ClickException(f"no project named '{ref}' is visible to you")
        return ids[0]

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    @property
    def json_output(self) -> bool:
        """Whether ``--json`` asked for the API's own bodies."""
        return bool(output.chosen(output.RAW_JSON_KEY, False))

    @property
    def machine_output(self) -> bool:
        """Whether the output is for a program (``--json``, or a ``-f`` other than table)."""
        return self.json_output or output.form() != "table"

    def output(
        self,
        body: Any,
        render: Callable[[], str | fmt.Table | fmt.Pairs],
        *,
        secret: bool = False,
    ) -> None:
        """Print ``body`` as JSON with ``--json``, else ``render()`` in the ``-f`` format with
        the ``-c`` columns; passwords are dropped unless ``secret`` says showing one is the
        point. An output that is text alone (not a table nor fields) gives ``body`` for
        ``-f json`` and ``yaml``.

        Raises click.UsageError for a ``-c`` that names no column, or a ``-f`` or ``-c`` the
        output cannot take.
        """
        shown_body = body if secret else fmt.redact(body)
        if self.json_output:
            click.echo(json.dumps(shown_body, indent=2))
            return
        form = output.form()
        shown = render()
        if isinstance(shown, str):
            if output.columns() or form in ("value", "csv"):
                raise click.UsageError(
                    "this command's output has no columns: use -f table, json or yaml"
                )
            if form == "json":
                shown = json.dumps(shown_body, indent=2)
            elif form == "yaml":
                shown = yaml.safe_dump(shown_body, sort_keys=False, allow_unicode=True).rstrip()
            click.echo(shown)
            return
        output.emit(shown)

    def done(self, message: str) -> None:
        """Confirm a change whose answer has no body (nothing to print for a program)."""
        if not self.machine_output:
            click.echo(message)


def inst_path(instance_id: str) -> str:
    return f"instances/{quote(instance_id, safe='')}"


def user_path(instance_id: str, user: str) -> str:
    """The path of ``NAME`` or ``NAME@HOST``, encoded as one segment."""
    return f"{inst_path(instance_id)}/users/{quote(user, safe='')}"
