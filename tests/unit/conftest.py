import os

import pytest


@pytest.fixture(autouse=True)
def _no_cove_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they set (`make` exports COVE_DATA_DIR and others)."""
    for key in list(os.environ):
        if key.startswith("COVE_"):
            monkeypatch.delenv(key)
