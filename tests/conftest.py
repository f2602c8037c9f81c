"""Session-wide private servers for integration tests, started only when a test asks for one."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import (
    PgServer,
    RabbitServer,
    RedisServer,
    S3Server,
    remove_tree,
    start_postgres,
    start_rabbitmq,
    start_redis,
    start_s3,
)


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI timeout, a `kill`) unwinds as Ctrl-C does: the session
    fixtures' finalizers stop every server and control plane the tests started, instead of
    leaving them running."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _base_dir() -> Path:
    # pytest's own temporary directories are mode 0700: the unprivileged service user that
    # runs PostgreSQL could not enter them.
    base = Path(tempfile.mkdtemp(prefix="cove-test-"))
    base.chmod(0o755)
    return base


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    base = _base_dir()
    try:
        server = start_redis(base)
    except BaseException:
        remove_tree(base)
        raise
    try:
        yield server
    finally:
        server.stop()
        remove_tree(base)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A private S3 store (SeaweedFS's ``weed mini``, from the test virtualenv)."""
    base = _base_dir()
    try:
        server = start_s3(base)
    except BaseException:
        remove_tree(base)
        raise
    try:
        yield server
    finally:
        server.stop()
        remove_tree(base)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitServer]:
    base = _base_dir()
    try:
        server = start_rabbitmq(base)
    except BaseException:
        remove_tree(base)
        raise
    try:
        yield server
    finally:
        server.stop()
        remove_tree(base)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    base = _base_dir()
    try:
        server = start_postgres(base)
    except BaseException:
        remove_tree(base)
        raise
    try:
        yield server
    finally:
        server.stop()
        remove_tree(base)
