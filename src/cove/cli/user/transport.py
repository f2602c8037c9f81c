"""The ``cove`` command's HTTP client: the few requests a command makes, over the standard
library's ``http.client``, one kept-alive connection per server.

A command is a short process, and its own start is most of what a user waits for: a general
client (httpx, with its transports, cookie jar and certificate store) took a third of
``cove instance list``. This one does what the command needs and no more: requests below a
base URL (or to an absolute one), JSON bodies and query parameters, TLS with the system's or a
given CA bundle (loaded only for ``https``), and no redirects. Its failures are the three
:class:`TransportError` subclasses, which :func:`cove.cli.user.client.send` words for a user.

:class:`HttpClient` and :class:`Response` are what the rest of the command relies on; tests
give it an httpx client on a fake transport behind the same shape.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit


class TransportError(Exception):
    """A request that got no answer."""


class Unreachable(TransportError):
    """The connection could not be made (refused, no route, or not within the timeout)."""


class TimedOut(TransportError):
    """Connected, but no answer within the timeout."""


class Failed(TransportError):
    """Connected, but the exchange broke (the server closed it, or answered nonsense)."""


class Response(Protocol):
    """What a command reads of an answer."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def headers(self) -> Any: ...  # read by name, whatever the case: ``headers.get(name)``

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    @property
    def is_error(self) -> bool: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What a command asks of its client: requests, headers sent with each, and closing."""

    @property
    def headers(self) -> Any: ...

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response: ...

    def close(self) -> None: ...


class LightResponse:
    """An answer read whole."""

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, body: bytes):
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers  # case-insensitive, as HTTP header names are
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    def json(self) -> Any:
        """The body as JSON. Raises ValueError when it is not."""
        return json.loads(self.content)


class LightClient:
    """Requests below ``base_url`` (a path without a scheme is joined to it), with
    ``headers`` on each; ``verify`` is True (the system's CA bundle), False, or a bundle's
    path, used for ``https`` only."""

    def __init__(
        self, base_url: str, timeout: float, headers: Mapping[str, str], verify: bool | str
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.headers: dict[str, str] = dict(headers)
        self._verify = verify
        self._connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> LightResponse:
        """Send one request and read its answer. Raises TransportError."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url.rstrip('/')}/{url.lstrip('/')}" if url else self.base_url
        parts = urlsplit(url)
        target = parts.path or "/"
        query = "&".join(q for q in (parts.query, urlencode(params or {})) if q)
        if query:
            target += f"?{query}"
        headers = dict(self.headers)
        body = None
        if json is not None:
            body = _json_bytes(json)
            headers["Content-Type"] = "application/json"
        key = (parts.scheme, parts.hostname or "", parts.port)
        for attempt in (1, 2):
            fresh = key not in self._connections
            conn = self._connections.get(key) or self._connect(key)
            self._connections[key] = conn
            try:
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
                content = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(key)
                # A kept-alive connection the server let go meanwhile: asked again on a new one,
                # but only what may be asked twice (a POST may have been acted on).
                if fresh or attempt == 2 or method == "POST":
                    raise Failed(f"the connection was closed: {exc}") from exc
                continue
            except TimeoutError as exc:
                connected = conn.sock is not None
                self._drop(key)
                if not connected:
                    raise Unreachable(f"no connection within {self.timeout:g} s") from exc
                raise TimedOut(f"no answer within {self.timeout:g} s") from exc
            except http.client.HTTPException as exc:
                self._drop(key)
                raise Failed(str(exc)) from exc
            except OSError as exc:
                self._drop(key)
                raise Unreachable(str(exc)) from exc
            if answer.will_close:
                self._drop(key)
            return LightResponse(answer.status, answer.reason, answer.headers, content)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _connect(self, key: tuple[str, str, int | None]) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            import ssl  # only a TLS connection pays for it

            context = ssl.create_default_context(
                cafile=self._verify if isinstance(self._verify, str) else None
            )
            if self._verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _drop(self, key: tuple[str, str, int | None]) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
