"""How often ``--wait`` asks: soon at first, then every POLL_INTERVAL."""

from __future__ import annotations

import itertools

import pytest

from cove.cli.user import waiting


def test_pauses_start_short_and_double_up_to_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "POLL_INTERVAL", 0.5)
    assert list(itertools.islice(waiting.pauses(), 7)) == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
