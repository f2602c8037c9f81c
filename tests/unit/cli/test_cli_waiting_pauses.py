"""How often ``--wait`` asks: soon at first, then every POLL_INTERVAL."""

from __future__ import annotations

import itertools

import pytest

from cove.cli.user import waiting


def test_pauses_are_short_for_a_second_then_double_up_to_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waiting, "POLL_INTERVAL", 0.5)
    seen = list(itertools.islice(waiting.pauses(), 56))
    assert seen[:50] == [0.02] * 50 and sum(seen[:50]) == pytest.approx(1.0)
    assert seen[50:] == [0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
