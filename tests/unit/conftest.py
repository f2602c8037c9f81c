import os

import pytest


@pytest.fixture(autouse=True)
def _no_cove_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they set (`make` exports COVE_DATA_DIR and others)."""
    for key in list(os.environ):
        if key.startswith("COVE_"):
            monkeypatch.delenv(key)


_CATALOGUES: dict[object, object] = {}


@pytest.fixture(autouse=True)
def _read_each_catalogue_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering versions reads each one's parameter catalogue from its real binaries (a
    second or so for MariaDB); unit tests register afresh in every temporary database, so
    each catalogue is read once per run and remembered."""
    from cove.compute import parameters

    real = parameters.read_parameters

    def remembered(found):  # type: ignore[no-untyped-def]
        if found not in _CATALOGUES:
            _CATALOGUES[found] = real(found)
        return list(_CATALOGUES[found])  # type: ignore[call-overload]

    monkeypatch.setattr(parameters, "read_parameters", remembered)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests make and check many passwords: hash them at the lowest cost Cove accepts
    (the stored hash names its cost, so checking follows). The real cost is tested on its own
    in test_identity.py."""
    from cove.identity import passwords

    monkeypatch.setattr(passwords, "LOG2_N", 10)
