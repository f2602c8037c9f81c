"""The web console's files as cove-api serves them (its behaviour in a real browser is
tests/e2e/test_console_flow.py)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from cove.api.routers.console import FILES


def test_the_console_is_served_without_a_token(member_api: Any) -> None:
    client, _, _ = member_api
    del client.headers["X-Auth-Token"]
    for name, kind in FILES.items():
        path = "/console" if name == "index.html" else f"/console/{name}"
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"] == kind
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert client.head(path).status_code == 200
    slash = client.get("/console/", follow_redirects=False)
    assert slash.status_code == 308 and slash.headers["location"] == "/console"


def test_only_the_consoles_files_are_served(member_api: Any) -> None:
    client, _, _ = member_api
    for path in ("/console/__init__.py", "/console/..%2fapp.py", "/console/clouds.yaml"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert list(resp.json()) == ["itemNotFound"]


def test_the_page_loads_only_its_own_files() -> None:
    """Everything the page loads is in FILES (a file it names but the API does not serve would
    break the console), and its script never turns text into markup."""
    page = resources.files("cove.console").joinpath("index.html").read_text()
    loaded = re.findall(r'(?:src|href)="/console/([^"]+)"', page)
    assert sorted(loaded) == ["app.js", "console.css"]
    script = resources.files("cove.console").joinpath("app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
