"""``cove instance log``: the guest log commands, over a fake Cove whose object-store
endpoint holds a published log (the real routes are tests/unit/test_guestlogs.py)."""

from __future__ import annotations

from typing import Any

import httpx
from fake_cove import FakeCove, reply, run

LOG = {
    "name": "general",
    "type": "USER",
    "status": "Published",
    "published": 60,
    "pending": 0,
    "container": "database-logs",
    "prefix": "i-1/general/",
    "metafile": "i-1/general.metafile",
}


def test_list_shows_each_logs_state(cove: FakeCove) -> None:
    error = {**LOG, "name": "error", "type": "SYS", "status": "Ready", "published": 0}
    cove.on("GET", "instances/i-1/log", reply(200, {"logs": [LOG, error]}))
    result = run("instance", "log", "list", "i-1")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert rows[1] == ["general", "USER", "Published", "60", "0"]
    assert rows[2] == ["error", "SYS", "Ready", "0", "0"]


def test_actions_send_troves_flags(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/log", reply(200, {"log": LOG}))
    for action in ("enable", "disable", "publish", "discard"):
        result = run("instance", "log", action, "i-1", "general")
        assert result.exit_code == 0, result.output
        assert "status     Published" in result.output
    assert run("instance", "log", "show", "i-1", "general").exit_code == 0
    assert cove.bodies("POST") == [
        {"name": "general", "enable": 1},
        {"name": "general", "disable": 1},
        {"name": "general", "publish": 1},
        {"name": "general", "discard": 1},
        {"name": "general"},
    ]


def test_tail_reads_the_newest_parts_until_it_has_the_lines(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/log", reply(200, {"log": LOG}))
    listing: list[dict[str, Any]] = [
        {"name": f"i-1/general/log-00000{n}", "bytes": 20} for n in (1, 0, 2)
    ]
    asked: list[str] = []

    def listed(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url.params))
        return reply(200, listing)

    cove.on("GET", "swift:database-logs", listed)
    for n in range(3):
        text = "".join(f"part {n} line {k}\n" for k in range(2))
        cove.on(
            "GET", f"swift:database-logs/i-1/general/log-00000{n}", httpx.Response(200, text=text)
        )
    result = run("instance", "log", "tail", "i-1", "general", "--lines", "3", "--publish")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["part 1 line 1", "part 2 line 0", "part 2 line 1"]
    assert asked == ["format=json&prefix=i-1%2Fgeneral%2F"]
    fetched = [r.url.path.rsplit("/", 1)[1] for r in cove.requests if "swift" in r.url.path]
    assert "log-000000" not in fetched  # enough lines before the oldest part
    assert cove.bodies("POST") == [{"name": "general", "publish": 1}]


def test_tail_of_a_log_never_published_says_how_to_publish(cove: FakeCove) -> None:
    cove.on("POST", "instances/i-1/log", reply(200, {"log": LOG}))
    result = run("instance", "log", "tail", "i-1", "general")
    assert result.exit_code == 1
    assert "cove instance log publish i-1 general" in result.output
