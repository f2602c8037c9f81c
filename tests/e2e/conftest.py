from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clients import ClientInstallError, ClientVenv, ensure_client_venv
from harness import ControlPlane, log_marks, warnings_since

from receivers import EVENT_SECRET, Receiver

_MARKS = pytest.StashKey[dict[Path, int]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.stash[_MARKS] = log_marks()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed test's report carries what the control planes warned of while it ran: the
    only account of a flaky failure in a run whose data directories are gone."""
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "call" and report.failed and _MARKS in item.stash:
        noted = warnings_since(item.stash[_MARKS])
        if noted:
            report.sections.append(("control plane warnings", noted))


@pytest.fixture(scope="session")
def cove_up() -> Iterator[ControlPlane]:
    """Cove started as a user starts it: `cove up`, embedded bus and database."""
    plane = ControlPlane().start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def event_receiver() -> Iterator[Receiver]:
    """The webhook ``cove_rabbit`` POSTs its notification events to."""
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(scope="session")
def cove_rabbit(rabbitmq_server, event_receiver: Receiver) -> Iterator[ControlPlane]:  # type: ignore[no-untyped-def]
    """The services as separate processes over a private RabbitMQ; its notification events
    go to the bus's ``notifications.info`` queue and to ``event_receiver``."""
    plane = ControlPlane(
        transport_url=rabbitmq_server.vhost("e2e"),
        separate=True,
        extra_env={
            "COVE_EVENT_TOPIC": "notifications",
            "COVE_EVENT_WEBHOOK": event_receiver.url,
            "COVE_EVENT_WEBHOOK_SECRET": EVENT_SECRET,
        },
    ).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(params=["cove_up", "cove_rabbit"])
def plane(request: pytest.FixtureRequest) -> ControlPlane:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def s3_plane(s3_server: Any) -> Iterator[tuple[ControlPlane, Any]]:
    """Cove storing its backups in an S3 bucket of a private S3 server (the bucket is made on
    the first backup)."""
    plane = ControlPlane(
        extra_env={
            "COVE_BACKUP_STORE": "s3",
            "COVE_BACKUP_LOCATION": s3_server.endpoint,
            "COVE_BACKUP_CONTAINER": "cove-e2e",
            "COVE_BACKUP_ACCESS_KEY": s3_server.access_key,
            "COVE_BACKUP_SECRET_KEY": s3_server.secret_key,
        }
    ).start()
    try:
        yield plane, s3_server
    finally:
        plane.stop()


@pytest.fixture(params=["filesystem", "s3"])
def store_plane(request: pytest.FixtureRequest) -> tuple[ControlPlane, Any]:
    """A running Cove storing its backups in a directory (the session's ``cove up``, with no
    S3 server) or in S3 (with the S3 server, to look into the bucket)."""
    if request.param == "s3":
        return request.getfixturevalue("s3_plane")  # type: ignore[no-any-return]
    return request.getfixturevalue("cove_up"), None


@pytest.fixture(scope="session")
def openstack_clients() -> ClientVenv:
    """python-troveclient and python-openstackclient from PyPI, in a cached virtualenv of
    their own (see clients.py); fails with pip's reason when they cannot be installed."""
    try:
        return ensure_client_venv()
    except ClientInstallError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)
