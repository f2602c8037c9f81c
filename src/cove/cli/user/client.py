"""The HTTP side of the ``cove`` command: one client per run, error envelopes turned into
one-line messages, pagination, and the :class:`App` every command shares.

Tests replace :func:`make_http_client` here to plug in a fake transport.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

import click
import httpx

from cove import __version__
from cove.cli import userfmt as fmt
from cove.cli.userfmt import Body

#: Lists stop following ``next`` links after this many items.
MAX_ITEMS = 10_000


def request_headers() -> dict[str, str]:
    """Headers sent with every request; the one place an ``X-Auth-Token`` will be added."""
    return {"Accept": "application/json", "User-Agent": f"cove-cli/{__version__}"}


def make_http_client(base_url: str, timeout: float, headers: Mapping[str, str]) -> httpx.Client:
    """The HTTP client of a run; tests replace this factory to plug in a fake transport."""
    return httpx.Client(base_url=base_url, timeout=timeout, headers=dict(headers))


class ApiError(click.ClickException):
    """A non-2xx answer of the API, shown as ``Error (<code> <faultName>): <message>``."""

    def __init__(self, code: int, fault: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.fault = fault

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error ({self.code} {self.fault}): {self.message}", file=file, err=True)


def api_error(resp: httpx.Response) -> ApiError:
    """Read Trove's ``{"<fault>": {"code", "message"}}`` envelope, tolerating other shapes."""
    fault, message = resp.reason_phrase or "error", resp.text.strip()[:500]
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        first = next(iter(body.items()), None)
        if len(body) == 1 and first and isinstance(first[1], dict):
            fault, message = first[0], str(first[1].get("message") or message)
        elif "message" in body:
            fault, message = str(body.get("title") or fault), str(body["message"])
    return ApiError(resp.status_code, fault, message or "(no message)")


class Api:
    """Thin typed access to the API under ``<url>/v1.0/<project>``.

    Every method raises ApiError for a non-2xx answer and click.ClickException when Cove cannot
    be reached or answers something that is not JSON.
    """

    def __init__(self, http: httpx.Client, url: str, timeout: float) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Body | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Body:
        try:
            resp = self._http.request(method, path, json=body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise click.ClickException(
                f"cannot reach Cove at {self._url}: is it running? (start it with 'make run')"
            ) from exc
        except httpx.TimeoutException as exc:
            raise click.ClickException(
                f"Cove at {self._url} did not answer within {self._timeout:g} s (see --timeout)"
            ) from exc
        except httpx.HTTPError as exc:
            raise click.ClickException(f"request to Cove at {self._url} failed: {exc}") from exc
        if resp.is_error:
            raise api_error(resp)
        if not resp.content.strip():
            return {}
        try:
            data = resp.json()
        except ValueError as exc:
            raise click.ClickException(
                f"Cove answered {method} {path} with a body that is not JSON"
            ) from exc
        if not isinstance(data, dict):
            raise click.ClickException(f"Cove answered {method} {path} with an unexpected body")
        return data

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        return self.request("GET", path, params=params)

    def paginate(self, path: str, key: str) -> list[Body]:
        """Every item of a list, following ``next`` links up to MAX_ITEMS.

        The next page is asked of ``path`` with the query of the link's href: Trove writes
        ``https://`` into its links whatever the scheme, so the href itself is not trusted.
        """
        items: list[Body] = []
        params: dict[str, str] = {}
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
    """What every command shares: the options of ``cove`` and the API client, made on first use."""

    url: str
    project: str
    json_output: bool
    timeout: float
    _api: Api | None = field(default=None, repr=False)

    @property
    def api(self) -> Api:
        if self._api is None:
            base = f"{self.url}/v1.0/{quote(self.project, safe='')}"
            http = make_http_client(base, self.timeout, request_headers())
            self._api = Api(http, self.url, self.timeout)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def output(self, body: Any, render: Callable[[], str], *, secret: bool = False) -> None:
        """Print ``body`` as JSON with ``--json``, else ``render()``; passwords are dropped
        unless ``secret`` says showing one is the point."""
        if self.json_output:
            click.echo(json.dumps(body if secret else fmt.redact(body), indent=2))
        else:
            click.echo(render())

    def done(self, message: str) -> None:
        """Confirm a change whose answer has no body (nothing to print with ``--json``)."""
        if not self.json_output:
            click.echo(message)


def inst_path(instance_id: str) -> str:
    return f"instances/{quote(instance_id, safe='')}"


def user_path(instance_id: str, user: str) -> str:
    """The path of ``NAME`` or ``NAME@HOST``, encoded as one segment."""
    return f"{inst_path(instance_id)}/users/{quote(user, safe='')}"
