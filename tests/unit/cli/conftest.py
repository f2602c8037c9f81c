"""The ``cove`` fixture: the command talks to a :class:`fake_cove.FakeCove`, with credentials
from a clouds.yaml in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fake_cove import FakeCove, HttpxClient, isolate, write_clouds

from cove.cli.user import client as cli_client
from cove.cli.user import passwords as cli_passwords
from cove.cli.user import waiting as cli_waiting


@pytest.fixture
def cove(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCove:
    fake = FakeCove()

    def factory(
        base_url: str, timeout: float, headers: dict[str, str], verify: bool | str = True
    ) -> HttpxClient:
        transport = httpx.MockTransport(fake.handle)
        return HttpxClient(
            httpx.Client(base_url=base_url, timeout=timeout, headers=headers, transport=transport)
        )

    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds(tmp_path / "conf.yaml")))
    monkeypatch.setattr(cli_client, "make_http_client", factory)
    monkeypatch.setattr(cli_waiting, "POLL_INTERVAL", 0.0)
    return fake


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input is a terminal: a missing password is asked for."""
    monkeypatch.setattr(cli_passwords, "interactive", lambda: True)
