"""A running Cove (``cove up``: embedded Redis bus, SQLite) tells the ``openstack`` command
which Trove feature it lacks, and answers its health checks and documentation pages itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from clients import ClientVenv, Cloud, OpenStackCli
from harness import ControlPlane

pytestmark = pytest.mark.e2e

PROJECT = "unsupported"


def test_openstack_names_the_feature_cove_lacks(
    openstack_clients: ClientVenv, cove_up: ControlPlane, tmp_path: Path
) -> None:
    acct = cove_up.account(PROJECT, "unsupported-user", "member")
    cloud = Cloud(
        auth_url=f"{cove_up.url}/identity/v3",
        username=acct.user,
        password=acct.password,
        project_name=PROJECT,
    )
    cli = OpenStackCli.with_cloud(openstack_clients, cloud, tmp_path)
    result = cli.run("database", "backup", "strategy", "list")
    assert result.returncode != 0, result.stdout
    assert "Backup strategies are not supported by Cove yet." in result.stderr, result.stderr
    assert "HTTP 501" in result.stderr, result.stderr


def test_health_and_documentation_are_served_locally(cove_up: ControlPlane) -> None:
    with httpx.Client(base_url=cove_up.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "bus": "ok"}
        page = http.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
        script = http.get("/docs/static/swagger-ui-bundle.js")
        assert script.status_code == 200 and "SwaggerUIBundle" in script.text
        assert "keystoneToken" in http.get("/openapi.json").text
