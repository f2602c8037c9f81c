"""The failover decisions (cove.domain.failover), through a builder of group facts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cove.domain.failover import AgentLease, Choice, GroupFacts, ReplicaFact, choose

MB = 1 << 20


@dataclass
class Group:
    """A group under construction: a primary at ``primary`` and replicas added one by one."""

    primary: int | None = 100 * MB
    max_lag: int = 16 * MB
    acknowledged: int | None = None
    synchronous: bool = False
    replicas: list[ReplicaFact] = field(default_factory=list)

    def replica(
        self, name: str, position: int | None, weight: int = 100, reporting: bool = True
    ) -> Group:
        self.replicas.append(ReplicaFact(name, reporting, position, weight))
        return self

    def choice(self) -> Choice:
        return choose(
            GroupFacts(
                tuple(self.replicas),
                self.primary,
                self.max_lag,
                self.acknowledged,
                self.synchronous,
            )
        )


def test_the_most_advanced_replica_is_promoted() -> None:
    chosen = Group().replica("a", 90 * MB, weight=900).replica("b", 99 * MB).choice()
    assert (chosen.promote, chosen.behind) == ("b", 1 * MB)


def test_weight_then_id_break_ties() -> None:
    assert Group().replica("a", 99 * MB).replica("b", 99 * MB, weight=200).choice().promote == "b"
    assert Group().replica("b", 99 * MB).replica("a", 99 * MB).choice().promote == "a"


def test_a_replica_that_is_silent_or_lost_its_position_is_never_promoted() -> None:
    group = Group().replica("a", 99 * MB, reporting=False).replica("b", None)
    chosen = group.choice()
    assert chosen.promote is None and "no replica reports" in chosen.reason
    assert group.replica("c", 95 * MB).choice().promote == "c"


def test_a_replica_lagging_beyond_the_bound_is_refused() -> None:
    chosen = Group(max_lag=8 * MB).replica("a", 90 * MB).choice()
    assert chosen.promote is None and "a lags beyond the bound" in chosen.reason
    # Without a known primary position, the lag cannot be told: the replica may go.
    assert Group(primary=None).replica("a", 1).choice() == Choice(
        "a", "the most advanced replica, then the heaviest", None
    )


def test_synchronous_mode_never_loses_an_acknowledged_commit() -> None:
    group = Group(acknowledged=98 * MB).replica("a", 97 * MB, weight=500).replica("b", 98 * MB)
    assert group.choice().promote == "b"
    only_short = Group(acknowledged=98 * MB).replica("a", 97 * MB).choice()
    assert only_short.promote is None and "misses acknowledged commits" in only_short.reason


def test_synchronous_mode_promotes_only_when_every_replica_can_be_asked() -> None:
    # The silent one may be the one that acknowledged the last commit.
    group = Group(primary=None, synchronous=True).replica("a", 99 * MB)
    group.replica("b", None, reporting=False)
    chosen = group.choice()
    assert chosen.promote is None and "b does not report" in chosen.reason
    assert Group(primary=None).replica("a", 99 * MB).replica("b", None).choice().promote == "a"
    everyone = Group(primary=None, synchronous=True).replica("a", 99 * MB).replica("b", 98 * MB)
    assert everyone.choice().promote == "a"


@pytest.mark.parametrize(
    ("sent_at", "now", "fenced"),
    [
        (None, 0.0, True),  # never held the lease
        (10.0, 10.0, False),
        (10.0, 11.19, False),
        (10.0, 11.2, True),  # 1.5 s lease, 0.3 s margin
        (10.0, 50.0, True),
    ],
)
def test_an_agent_fences_itself_before_its_lease_ends(
    sent_at: float | None, now: float, fenced: bool
) -> None:
    assert AgentLease(sent_at).fenced(now) is fenced
