"""URLs that the server and the clients build the same way."""

from __future__ import annotations

import re


def identity_v3(auth_url: str) -> str:
    """The v3 root of an identity service: ``auth_url`` with ``/v3`` appended when missing."""
    url = auth_url.rstrip("/")
    return url if re.search(r"/v3(\.\d+)?$", url) else f"{url}/v3"


def public_base(public_url: str, request_base: str) -> str:
    """Where clients reach the API: the configured ``public_url``, else the address the request
    came to (``scheme://host[:port]``)."""
    return public_url or request_base.rstrip("/")
