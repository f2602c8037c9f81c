"""The guest's watch over its volume and its memory kills (``guestagent/isolation.py``): what
it reports, and when it has the server refuse writes and keeps its reserve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cove.common import cgroups
from cove.guestagent import isolation
from cove.guestagent.isolation import IsolationWatch


class Manager:
    def __init__(self, root: Path) -> None:
        self.config = type("Config", (), {"instance_id": "i1", "root": root})()
        self.writes_refused = False
        self.calls: list[bool] = []

    def refuse_writes(self, refuse: bool) -> None:
        self.calls.append(refuse)
        self.writes_refused = refuse


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"volume": (1000, 100), "limits": None, "reports": []}
    monkeypatch.setattr(isolation, "volume_of", lambda root: state["volume"])
    monkeypatch.setattr(cgroups, "own_limits", lambda instance_id: state["limits"])
    manager = Manager(tmp_path)
    state["manager"] = manager
    state["watch"] = IsolationWatch(
        manager,  # type: ignore[arg-type]
        lambda op, outcome, details: state["reports"].append((op, outcome)),
    )
    return state


def test_a_volume_with_room_keeps_its_reserve_and_reports_nothing(world: dict[str, Any]) -> None:
    world["watch"].guard()
    seen = world["watch"].look()
    assert seen.volume_mb == 1000 and seen.volume_used_mb == 100 and seen.memory_limit_mb is None
    reserve = world["manager"].config.root / isolation.RESERVE
    assert reserve.stat().st_size == (1000 // isolation.RESERVE_SHARE) << 20
    assert world["reports"] == [] and world["manager"].calls == []


def test_a_full_volume_frees_its_reserve_refuses_writes_until_there_is_room(
    world: dict[str, Any],
) -> None:
    watch, manager = world["watch"], world["manager"]
    watch.guard()
    reserve = manager.config.root / isolation.RESERVE
    assert reserve.exists()
    world["volume"] = (1000, 990)  # under the edge (20 MB)
    watch.guard()
    watch.settle()
    assert not reserve.exists() and manager.calls == [True]
    assert world["reports"] == [("volume", "full")]
    # Just over the edge is not room yet (no flapping): nothing changes.
    world["volume"] = (1000, 975)
    watch.guard()
    assert manager.calls == [True] and not reserve.exists()
    # Grown: writes are taken again and the reserve is made anew.
    world["volume"] = (2000, 990)
    watch.guard()
    watch.settle()
    assert manager.calls == [True, False] and reserve.exists()
    # Room is told only once the server takes writes again (the fault goes with it).
    assert world["reports"] == [("volume", "full")]
    assert watch.look().volume_full is False
    watch.guard()
    assert world["reports"] == [("volume", "full"), ("volume", "ok")]


def test_a_full_volume_is_reported_again_while_it_stays_full(world: dict[str, Any]) -> None:
    world["volume"] = (1000, 999)
    for _ in range(isolation.REPEAT * 2):
        world["watch"].guard()
        world["watch"].settle()
    assert world["reports"].count(("volume", "full")) == 3  # at once, then every REPEAT looks
    assert world["manager"].calls == [True]


def test_memory_kills_are_reported_when_the_count_grows(world: dict[str, Any]) -> None:
    world["volume"] = None
    world["limits"] = cgroups.Limits(512 << 20, 1.0, 100 << 20, oom_kills=2)
    seen = world["watch"].look()
    assert seen.memory_limit_mb == 512 and seen.oom_kills == 2 and seen.volume_mb is None
    assert world["reports"] == []  # kills before the agent started are not news
    world["limits"] = cgroups.Limits(512 << 20, 1.0, 100 << 20, oom_kills=3)
    world["watch"].look()
    assert world["reports"] == [("server", "out_of_memory")]


def test_nothing_enforced_reads_as_none(world: dict[str, Any]) -> None:
    world["volume"] = None
    assert world["watch"].look() is None


def test_refusing_writes_is_asked_again_until_it_holds(world: dict[str, Any]) -> None:
    manager, watch = world["manager"], world["watch"]
    failures = [OSError("no space to write the server's file")]
    refuse = manager.refuse_writes

    def flaky(value: bool) -> None:
        if failures:
            raise failures.pop()
        refuse(value)

    manager.refuse_writes = flaky
    world["volume"] = (1000, 999)
    watch.guard()
    watch.settle()
    assert not manager.writes_refused  # failed: asked again at the next look
    with watch.op_lock:  # an operation under way: not waited for
        watch.guard()
        watch.settle()
    assert not manager.writes_refused
    watch.guard()
    watch.settle()
    assert manager.writes_refused and manager.calls == [True]
    assert world["reports"] == [("volume", "full")]
