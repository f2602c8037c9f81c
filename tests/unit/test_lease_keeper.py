"""The primary's lease in the guest agent (cove.guestagent.lease.LeaseKeeper), with a fake
manager, a fake conductor and a fake monotonic clock: when it renews, what it sends, when it
fences the server and when it lets the server start."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cove.common.errors import CoveError, GuestError, RpcTimeout, ServiceUnavailable
from cove.domain.failover import FENCE_MARGIN, LEASE_TTL, LeaseAnswer, LeaseGrant
from cove.domain.replication import ReplicationState, Role
from cove.guestagent import lease
from cove.guestagent.lease import GROUP_MARKER, LeaseKeeper

IID = "inst-1"
#: How long after sending its last granted renewal the agent still holds the lease.
HOLD = LEASE_TTL - FENCE_MARGIN
#: Just past that (clear of floating-point rounding at the boundary).
PAST = HOLD + 1e-9
GRANTED = LeaseGrant(LeaseAnswer.GRANTED, 3)
REPLICA = LeaseGrant(LeaseAnswer.REPLICA, 4)
STANDALONE = LeaseGrant(LeaseAnswer.STANDALONE)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Config:
    conf_dir: Path


class Engine:
    """The replication engine's ``state``: a primary that has written up to ``position``
    (None: the server does not answer, raising GuestError)."""

    def __init__(self) -> None:
        self.position: int | None = 4096

    def state(self) -> ReplicationState:
        if self.position is None:
            raise GuestError("the server does not answer")
        return ReplicationState(Role.PRIMARY, self.position)


@dataclass
class Manager:
    """What LeaseKeeper reads of a DatastoreManager; ``fence`` counts its calls and marks the
    server fenced (unless ``fence_error`` is set: then it raises it)."""

    config: Config
    prepared: bool = True
    fenced: bool = False
    is_replica: bool = False
    replication: Any = field(default_factory=Engine)
    fences: int = 0
    fence_error: CoveError | None = None

    def fence(self) -> int | None:
        self.fences += 1
        if self.fence_error is not None:
            raise self.fence_error
        self.fenced = True
        return 42


class Conductor:
    """``renew_lease`` answered from a script (the last answer repeats); an exception in it is
    raised, as the real client raises RpcTimeout or ServiceUnavailable. ``latency`` moves the
    clock while the call is under way; ``asked`` records the (instance, epoch) sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.script: list[LeaseGrant | CoveError] = [GRANTED]
        self.asked: list[tuple[str, int | None]] = []
        #: The positions the renewals carried.
        self.positions: list[int | None] = []
        self.latency = 0.0

    def answer(self, *answers: LeaseGrant | CoveError) -> None:
        self.script = list(answers)

    def renew_lease(
        self, ctx: Any, instance_id: str, epoch: int | None, position: int | None
    ) -> LeaseGrant:
        self.asked.append((instance_id, epoch))
        self.positions.append(position)
        self.clock.now += self.latency
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, CoveError):
            raise answer
        return answer


@dataclass
class World:
    keeper: LeaseKeeper
    manager: Manager
    conductor: Conductor
    clock: Clock
    marker: Path

    def at(self, offset: float) -> None:
        """Tick with the clock at ``offset`` seconds after the start."""
        self.clock.now = 100.0 + offset
        self.keeper.tick()


@pytest.fixture
def world(tmp_path: Path) -> World:
    clock = Clock()
    manager = Manager(Config(tmp_path))
    conductor = Conductor(clock)
    keeper = LeaseKeeper(manager, conductor, IID, clock=clock)  # type: ignore[arg-type]
    return World(keeper, manager, conductor, clock, tmp_path / GROUP_MARKER)


def grouped(w: World) -> World:
    """The instance was its group's primary when its agent last asked."""
    w.marker.write_text("primary\n")
    return w


# -- renewing ---------------------------------------------------------------------------------


def test_granted_renewals_keep_the_lease_and_carry_the_granted_epoch(world: World) -> None:
    assert not world.keeper.holds() and not world.keeper.needs_lease()
    for step in range(12):  # 3.6 s: more than two whole leases
        world.at(step * 0.3)
        assert world.keeper.holds(), step
    assert world.manager.fences == 0
    assert world.marker.read_text() == "primary\n"
    assert world.conductor.asked[0] == (IID, None)
    assert set(world.conductor.asked[1:]) == {(IID, 3)}


def test_a_replica_answer_fences_once_and_renewals_stop(world: World) -> None:
    world.at(0.0)
    world.conductor.answer(REPLICA)
    world.at(0.3)
    assert world.manager.fences == 1 and not world.keeper.holds()
    asked = len(world.conductor.asked)
    for offset in (0.6, 0.9, 5.0):
        world.at(offset)
    assert world.manager.fences == 1
    assert len(world.conductor.asked) == asked  # a fenced server asks nothing more


def test_a_replica_answer_fences_a_primary_that_never_held_the_lease(world: World) -> None:
    grouped(world)
    world.conductor.answer(REPLICA)
    world.at(0.0)
    assert world.manager.fences == 1


@pytest.mark.parametrize("away", [RpcTimeout("no answer"), ServiceUnavailable("bus down")])
def test_no_answer_fences_only_once_the_deadline_from_the_sent_renewal_passed(
    world: World, away: CoveError
) -> None:
    # The granted renewal was sent at 0 and answered at 0.5: the deadline counts from 0.
    world.conductor.latency = 0.5
    world.at(0.0)
    world.conductor.latency = 0.0
    world.conductor.answer(away)
    for offset in (0.6, 0.9, HOLD - 0.01):
        world.at(offset)
        assert world.manager.fences == 0, offset
        assert world.keeper.holds()
    world.at(PAST)
    assert world.manager.fences == 1
    assert not world.keeper.holds()


def test_a_renewal_that_failed_does_not_move_the_deadline(world: World) -> None:
    world.at(0.0)
    world.conductor.answer(RpcTimeout("no answer"))
    world.at(1.0)  # sent after the granted one, but never granted
    world.clock.now = 100.0 + PAST
    assert not world.keeper.holds()
    world.at(PAST)
    assert world.manager.fences == 1


def test_a_fence_that_fails_is_tried_again(world: World) -> None:
    world.at(0.0)
    world.manager.fence_error = GuestError("the server does not answer")
    world.conductor.answer(RpcTimeout("no answer"))
    world.at(PAST)  # the error is logged, not raised
    world.manager.fence_error = None
    world.at(PAST + 0.3)
    assert world.manager.fences == 2 and world.manager.fenced


def test_standalone_removes_the_group_marker_and_never_fences(world: World) -> None:
    grouped(world)
    world.conductor.answer(STANDALONE)
    world.at(0.0)
    assert not world.marker.exists()
    assert not world.keeper.needs_lease() and not world.keeper.holds()
    world.conductor.answer(RpcTimeout("no answer"))
    for offset in (0.3, PAST, 10 * LEASE_TTL):
        world.at(offset)
    assert world.manager.fences == 0


def test_standalone_after_a_grant_forgets_the_epoch(world: World) -> None:
    world.conductor.answer(GRANTED, STANDALONE, GRANTED)
    world.at(0.0)
    world.at(0.3)
    world.at(0.6)
    assert [epoch for _, epoch in world.conductor.asked] == [None, 3, None]
    assert world.marker.exists()  # granted again: the primary of a new group


@pytest.mark.parametrize(
    "state",
    [
        {"is_replica": True},
        {"prepared": False},
        {"fenced": True},
        {"replication": None},
    ],
)
def test_replicas_and_unprepared_or_fenced_servers_never_renew(
    world: World, state: dict[str, Any]
) -> None:
    grouped(world)
    for key, value in state.items():
        setattr(world.manager, key, value)
    for offset in (0.0, 0.3, PAST, 10 * LEASE_TTL):
        world.at(offset)
    assert world.conductor.asked == []
    assert world.manager.fences == 0
    assert not world.keeper.needs_lease() and not world.keeper.holds()


def test_forget_sends_no_epoch_and_drops_the_lease(world: World) -> None:
    world.at(0.0)
    world.at(0.3)
    world.keeper.forget()
    assert not world.keeper.holds()  # grouped, but nothing granted in the new role
    world.at(0.6)
    assert [epoch for _, epoch in world.conductor.asked] == [None, 3, None]
    assert world.keeper.holds()


def test_fence_after_crash_fences_once(world: World) -> None:
    world.at(0.0)
    world.keeper.fence_after_crash("exit code 9")
    world.keeper.fence_after_crash("exit code 9")
    assert world.manager.fences == 1
    assert not world.keeper.holds()


# -- starting the server ------------------------------------------------------------------------


class Starts:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the keeper never asked"
        time.sleep(0.001)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease, "LEASE_RENEW", 0.001)


def test_a_server_that_needs_no_lease_starts_at_once(world: World) -> None:
    start = Starts()
    world.keeper.start_when_allowed(start)
    assert start.count == 1 and world.conductor.asked == []


def test_a_grouped_replica_starts_at_once(world: World) -> None:
    grouped(world).manager.is_replica = True
    start = Starts()
    world.keeper.start_when_allowed(start)
    assert start.count == 1 and world.conductor.asked == []


@pytest.mark.parametrize("answer", [GRANTED, STANDALONE])
def test_a_grouped_primary_starts_once_the_conductor_allows(
    world: World, answer: LeaseGrant
) -> None:
    grouped(world)
    world.conductor.answer(answer)
    start = Starts()
    world.keeper.start_when_allowed(start)
    assert start.count == 1 and len(world.conductor.asked) == 1
    assert world.manager.fences == 0
    assert world.keeper.holds() is (answer is GRANTED)


def test_a_primary_whose_place_was_taken_never_starts(world: World) -> None:
    grouped(world)
    world.conductor.answer(REPLICA)
    start = Starts()
    world.keeper.start_when_allowed(start)
    assert start.count == 0
    assert world.manager.fences == 1


@pytest.mark.usefixtures("quick_retries")
def test_a_grouped_primary_asks_again_while_the_conductor_is_away(world: World) -> None:
    grouped(world)
    world.conductor.answer(RpcTimeout("no answer"), ServiceUnavailable("bus down"), GRANTED)
    start = Starts()
    world.keeper.start_when_allowed(start)
    assert start.count == 1 and len(world.conductor.asked) == 3
    assert world.manager.fences == 0 and world.keeper.holds()


@pytest.mark.usefixtures("quick_retries")
def test_a_stopped_keeper_gives_up_waiting_to_start(world: World) -> None:
    grouped(world)
    world.conductor.answer(RpcTimeout("no answer"))
    start = Starts()
    waiting = threading.Thread(target=world.keeper.start_when_allowed, args=(start,))
    waiting.start()
    until(lambda: len(world.conductor.asked) >= 2)
    world.keeper.stop()
    waiting.join(5)
    assert not waiting.is_alive()
    assert start.count == 0 and world.manager.fences == 0


@pytest.mark.usefixtures("quick_retries")
def test_the_renewal_loop_does_not_fence_a_primary_still_waiting_to_start(world: World) -> None:
    grouped(world)
    world.conductor.answer(RpcTimeout("no answer"))
    start = Starts()
    waiting = threading.Thread(target=world.keeper.start_when_allowed, args=(start,))
    waiting.start()
    until(lambda: bool(world.conductor.asked))
    world.keeper.tick()  # the lease thread's first tick, the conductor still away
    world.conductor.answer(GRANTED)
    waiting.join(5)
    world.keeper.stop()
    assert world.manager.fences == 0 and start.count == 1


def test_a_primary_s_renewals_carry_how_far_it_has_written(world: World) -> None:
    grouped(world)
    world.keeper.tick()
    world.manager.replication.position = 8192
    world.keeper.tick()
    world.manager.replication.position = None  # it does not answer: the renewal goes anyway
    world.keeper.tick()
    assert world.conductor.positions == [4096, 8192, None]
    assert world.manager.fences == 0


def test_the_watchdog_fences_at_the_deadline_while_a_renewal_still_waits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "WATCHDOG", 0.001)
    grouped(world)
    world.at(0.0)
    watchdog = threading.Thread(target=world.keeper.run_watchdog, daemon=True)
    watchdog.start()
    try:
        world.clock.now = 100.0 + HOLD - 0.01  # a renewal is under way, not answered yet
        time.sleep(0.05)
        assert world.manager.fences == 0
        world.clock.now = 100.0 + PAST
        until(lambda: world.manager.fences == 1)
    finally:
        world.keeper.stop()
        watchdog.join(5)


def test_an_adopted_primary_is_fenced_unless_a_renewal_is_granted_in_time(world: World) -> None:
    grouped(world)
    world.clock.now = 100.0
    world.keeper.assume_held()  # a new agent found the server running
    world.conductor.answer(RpcTimeout("no answer"))
    world.at(HOLD - 0.01)
    assert world.manager.fences == 0
    world.at(PAST)
    assert world.manager.fences == 1


def test_a_grant_says_whether_a_crashed_primary_waits_for_a_failover(world: World) -> None:
    grouped(world)
    world.conductor.answer(LeaseGrant(LeaseAnswer.GRANTED, 4, auto_failover=False))
    world.at(0.0)
    assert world.keeper.holds() and world.keeper.auto_failover is False
