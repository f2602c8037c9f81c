import os

import pytest


@pytest.fixture(autouse=True)
def _no_cove_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they set (`make` exports COVE_DATA_DIR and others)."""
    for key in list(os.environ):
        if key.startswith("COVE_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _no_catalogue_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering a version reads its parameter catalogue by starting its server; unit tests
    start no server, so registration there gets a small fixed catalogue (the readers are
    tested on real servers in tests/integration/test_parameters.py)."""
    from cove.compute import parameters
    from cove.domain.parameters import Parameter, ParamType

    def fixed(found):  # type: ignore[no-untyped-def]
        return [Parameter("work_mem", ParamType.INTEGER, False, min=64, max=2147483647)]

    monkeypatch.setattr(parameters, "read_parameters", fixed)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests make and check many passwords: hash them at the lowest cost Cove accepts
    (the stored hash names its cost, so checking follows). The real cost is tested on its own
    in test_identity.py."""
    from cove.identity import passwords

    monkeypatch.setattr(passwords, "LOG2_N", 10)
