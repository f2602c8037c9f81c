"""How often ``--wait`` asks: soon at first, then every POLL_INTERVAL."""

from __future__ import annotations

import itertools

import pytest

from cove.cli.user import waiting


def test_pauses_are_short_at_first_then_grow_up_to_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waiting, "POLL_INTERVAL", 0.5)
    seen = list(itertools.islice(waiting.pauses(), 30))
    first = seen[: waiting.FIRST_POLLS]
    assert first == [0.02] * 12
    later = seen[len(first) :]
    assert later[0] == pytest.approx(0.03)
    assert all(b == pytest.approx(min(a * 1.5, 0.5)) for a, b in itertools.pairwise(later))
    assert later[-1] == 0.5
