from __future__ import annotations

from collections.abc import Iterator

import pytest
from clients import ClientInstallError, ClientVenv, ensure_client_venv
from harness import ControlPlane


@pytest.fixture(scope="session")
def cove_up() -> Iterator[ControlPlane]:
    """Cove started as a user starts it: `cove up`, embedded bus and database."""
    plane = ControlPlane().start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def cove_rabbit(rabbitmq_server) -> Iterator[ControlPlane]:  # type: ignore[no-untyped-def]
    """The services as separate processes over a private RabbitMQ."""
    plane = ControlPlane(transport_url=rabbitmq_server.vhost("e2e"), separate=True).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(params=["cove_up", "cove_rabbit"])
def plane(request: pytest.FixtureRequest) -> ControlPlane:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def openstack_clients() -> ClientVenv:
    """python-troveclient and python-openstackclient from PyPI, in a cached virtualenv of
    their own (see clients.py); fails with pip's reason when they cannot be installed."""
    try:
        return ensure_client_venv()
    except ClientInstallError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)
