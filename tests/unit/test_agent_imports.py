"""What a new guest agent imports before it starts its database server."""

from __future__ import annotations

import subprocess
import sys

#: What a new agent has imported when it starts its server: its main and its managers.
AGENT = (
    "import cove.guestagent.main, cove.rpc.codec;"
    "from cove.guestagent.datastores.redis import manager;"
    "from cove.guestagent.datastores.postgresql import manager;"
    "from cove.guestagent.datastores.mariadb import manager;"
)


def loaded(code: str, *names: str) -> list[str]:
    """The modules of ``names`` (packages and modules) that running ``code`` imported."""
    probe = (
        f"import sys; {code.rstrip(';')}; print(sorted(m for m in sys.modules"
        f" if m in {names!r} or m.split('.')[0] in {names!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return list(eval(done.stdout))  # noqa: S307 (a list of names this test printed)


def test_the_bus_library_loads_only_after_the_server_start_began() -> None:
    # main() reads its settings and starts the warm-up (the server's start) before it imports
    # the bus client: kombu, the largest import, must not come with the settings' codec.
    assert loaded(AGENT, "kombu", "amqp", "yaml") == []


def test_an_agent_does_not_load_the_control_planes_settings() -> None:
    # pydantic costs a new agent a fifth of a second before its server starts; only the
    # control plane reads Settings.
    assert loaded(AGENT, "pydantic", "cove.common.settings") == []


def test_the_bus_names_still_load_from_the_package() -> None:
    code = (
        "from cove.rpc import RpcClient, RpcServer, RequestContext, redact_url;"
        "import cove.rpc;"
        "print(RpcClient.__module__, RpcServer.__module__, redact_url('redis://u:p@h/0'));"
        "cove.rpc.nothing"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[:2] == ["cove.rpc.client", "cove.rpc.server"]
    assert "p@" not in done.stdout
    assert "has no attribute 'nothing'" in done.stderr
