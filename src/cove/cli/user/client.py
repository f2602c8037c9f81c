"""The HTTP side of the ``cove`` command: one client per run, error envelopes turned into
one-line messages, pagination, and the paths of the API. Logging in is :mod:`.login`; what every
command shares, :class:`cove.cli.user.app.App`.

Tests replace :func:`make_http_client` here to plug in a fake transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import IO, Any
from urllib.parse import parse_qsl, quote, urlsplit

import click

from cove import __version__
from cove.cli.user.transport import (
    Failed,
    HttpClient,
    LightClient,
    Response,
    TimedOut,
    Unreachable,
)
from cove.cli.userfmt import Body

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
) -> HttpClient:
    """The HTTP client of a run, for requests below ``base_url`` (see :mod:`.transport`);
    tests replace this factory to plug in a fake transport."""
    return LightClient(base_url, timeout, headers, verify)


class ApiError(click.ClickException):
    """A non-2xx answer of the API, shown as ``Error (<code> <faultName>): <message>``."""

    def __init__(self, code: int, fault: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.fault = fault

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error ({self.code} {self.fault}): {self.message}", file=file, err=True)


def api_error(resp: Response) -> ApiError:
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
    http: HttpClient,
    method: str,
    path: str,
    *,
    what: str,
    timeout: float,
    body: Any = None,
    params: Mapping[str, str] | None = None,
) -> Response:
    """One request; ``what`` names the server in messages (``Cove at <url>``).

    Raises click.ClickException when the server cannot be reached or does not answer in time.
    """
    try:
        return http.request(method, path, json=body, params=params)
    except Unreachable as exc:
        raise click.ClickException(
            f"cannot reach {what}: is it running? (start it with 'make run')"
        ) from exc
    except TimedOut as exc:
        raise click.ClickException(
            f"{what} did not answer within {timeout:g} s (see --timeout)"
        ) from exc
    except Failed as exc:
        raise click.ClickException(f"request to {what} failed: {exc}") from exc


def json_body(resp: Response, what: str) -> Body:
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
        http: HttpClient,
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

    def text(self, url: str, params: Mapping[str, str] | None = None) -> str | None:
        """The body of a ``GET`` of ``url`` as text; None when it is not found. Raises ApiError
        for another refusal, click.ClickException when Cove cannot be reached."""
        if self._token is not None:
            self._http.headers["X-Auth-Token"] = self._token()
        what = f"Cove at {self._url}"
        resp = send(self._http, "GET", url, what=what, timeout=self._timeout, params=params)
        if resp.status_code == 404:
            return None
        if resp.is_error:
            raise api_error(resp)
        return resp.text

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
            return dict(parse_qsl(urlsplit(str(link["href"])).query, keep_blank_values=True))
    return {}


def need(body: Body, key: str) -> Any:
    """``body[key]``, or a clear error when Cove's answer lacks it."""
    if key not in body:
        raise click.ClickException(f"Cove's answer lacks the '{key}' field")
    return body[key]


def inst_path(instance_id: str) -> str:
    return f"instances/{quote(instance_id, safe='')}"


def user_path(instance_id: str, user: str) -> str:
    """The path of ``NAME`` or ``NAME@HOST``, encoded as one segment."""
    return f"{inst_path(instance_id)}/users/{quote(user, safe='')}"
