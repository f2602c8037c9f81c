"""docs/architecture.md describes each service's RPC table: its tables name exactly the methods
and arguments the servers have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cove.conductor.service import Conductor
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.service import GuestService
from cove.rpc import codec
from cove.taskmanager.service import TaskManager

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def documented(topic: str) -> dict[str, list[str]]:
    """The methods of the table under the heading for ``topic``, with the arguments it names
    (the first backticked word of each comma-separated item of the Arguments column)."""
    text = DOC.read_text()
    start = text.index(f"**`{topic}`**")
    rows: dict[str, list[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \|([^|]*)\|", line)
        if match is None:
            continue
        args = [
            found.group(1)
            for item in re.split(r",(?![^(]*\))", match.group(2))
            if (found := re.match(r"\s*`(\w+)`", item))
        ]
        rows[match.group(1)] = args
    return rows


@pytest.mark.parametrize(
    ("topic", "server"),
    [
        ("taskmanager", TaskManager),
        ("conductor", Conductor),
        ("guestagent.<instance_id>", GuestService),
    ],
)
def test_the_rpc_tables_match_the_servers(topic: str, server: type) -> None:
    instance = object.__new__(server)
    if isinstance(instance, GuestService):
        # The guest's table also binds the methods of its admin endpoints.
        instance.admin_endpoints = object.__new__(GuestAdminEndpoints)
    table = instance.endpoints()
    in_code = {name: list(codec.parameters(fn.__wrapped__)) for name, fn in table.items()}
    assert documented(topic) == in_code
