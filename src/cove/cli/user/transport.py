"""The ``cove`` command's HTTP client: the few requests a command makes, over the standard
library's ``http.client``, one kept-alive connection per server.

A command is a short process, and its own start is most of what a user waits for: a general
client (httpx, with its transports, cookie jar and certificate store) took a third of
``cove instance list``. This one does what the command needs and no more: requests below a
base URL (or to an absolute one), JSON bodies and query parameters, TLS with the system's CA
store or a given CA bundle (loaded only for ``https``), the environment's proxies, and no
redirects. Its failures are the three :class:`TransportError` subclasses, which
:func:`cove.cli.user.client.send` words for a user.

:class:`HttpClient` and :class:`Response` are what the rest of the command relies on; tests
give it an httpx client on a fake transport behind the same shape.
"""

from __future__ import annotations

import http.client
import json
import os
import select
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


#: Methods asked again on a new connection when a kept-alive one turns out closed: what may be
#: asked twice (a POST or PATCH may have been acted on).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

Key = tuple[str, str, int]


class LightClient:
    """Requests below ``base_url`` (a path without a scheme is joined to it), with
    ``headers`` on each; ``verify`` is True (the system's CA store), False, or a CA bundle's
    path, used for ``https`` only. The proxies of ``http_proxy``, ``https_proxy`` and
    ``all_proxy`` are used, but for the hosts ``no_proxy`` names, as other HTTP clients do."""

    def __init__(
        self, base_url: str, timeout: float, headers: Mapping[str, str], verify: bool | str
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.headers: dict[str, str] = dict(headers)
        self._verify = verify
        self._connections: dict[Key, http.client.HTTPConnection] = {}

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
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key: Key = (parts.scheme, parts.hostname or "", port)
        proxy = _proxy_for(parts.scheme, key[1])
        if proxy is not None and parts.scheme == "http":
            target = url.split("#", 1)[0] if not query else f"{url.split('?', 1)[0]}?{query}"
        for attempt in (1, 2):
            conn = self._reusable(key)
            fresh = conn is None
            if conn is None:
                conn = self._connections[key] = self._connect(key, proxy)
            try:
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
                content = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(key)
                # A kept-alive connection the server let go just now: asked again on a new one
                # when that is safe.
                if fresh or attempt == 2 or method not in IDEMPOTENT:
                    raise Failed(f"the connection was closed: {exc}") from exc
                continue
            except Exception as exc:
                raise self._failure(key, conn, exc) from exc
            if answer.will_close:
                self._drop(key)
            return LightResponse(answer.status, answer.reason, answer.headers, content)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _reusable(self, key: Key) -> http.client.HTTPConnection | None:
        """The kept-alive connection to ``key``, unless the server closed it while it was
        idle (its socket then reads as ready: the end of the stream)."""
        conn = self._connections.get(key)
        if conn is None or conn.sock is None:
            return None
        readable, _, _ = select.select([conn.sock], [], [], 0)
        if readable:
            self._drop(key)
            return None
        return conn

    def _failure(self, key: Key, conn: http.client.HTTPConnection, exc: Exception) -> Exception:
        """The TransportError an exception of a request stands for (the exception itself
        when it is none of the transport's)."""
        connected = conn.sock is not None
        self._drop(key)
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, TimeoutError):
            if not connected:
                return Unreachable(f"no connection within {self.timeout:g} s")
            return TimedOut(f"no answer within {self.timeout:g} s")
        if isinstance(exc, http.client.HTTPException):
            return Failed(str(exc))
        if type(exc).__module__ == "ssl":  # a refused certificate, say: not "unreachable"
            return Failed(f"TLS: {exc}")
        if isinstance(exc, OSError):
            return Unreachable(str(exc))
        return exc

    def _connect(self, key: Key, proxy: tuple[str, int] | None) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            context = _tls_context(self._verify)
            if proxy is None:
                return http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=context
                )
            conn = http.client.HTTPSConnection(*proxy, timeout=self.timeout, context=context)
            conn.set_tunnel(host, port)
            return conn
        return http.client.HTTPConnection(*(proxy or (host, port)), timeout=self.timeout)

    def _drop(self, key: Key) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)


def _tls_context(verify: bool | str) -> Any:
    """A TLS context checking servers against the system's CA store, the CA bundle (file or
    directory) ``verify`` names, or nothing (False). Raises Failed for a bundle that cannot
    be read."""
    import ssl  # only a TLS connection pays for it

    try:
        if isinstance(verify, str) and os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        else:
            context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    except (OSError, ssl.SSLError) as exc:
        raise Failed(f"cannot read the CA bundle {verify}: {exc}") from exc
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


#: The environment variables that may name a proxy; read only when one of them is set.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """The proxy (host, port) a request to ``host`` goes through, from the environment."""
    if not any(os.environ.get(n) or os.environ.get(n.upper()) for n in PROXY_VARIABLES):
        return None
    import urllib.request  # a tenth of a command's start: only with a proxy set

    if urllib.request.proxy_bypass(host):
        return None
    found = urllib.request.getproxies()
    url = found.get(scheme) or found.get("all")
    if not url:
        return None
    proxy = urlsplit(url if "://" in url else f"http://{url}")
    return proxy.hostname or "", proxy.port or 80


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
