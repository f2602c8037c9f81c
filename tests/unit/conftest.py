import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

#: What SQLite keeps beside a database file while it is open (WAL mode) or writing (rollback).
SIDE_FILES = ("-wal", "-shm", "-journal")


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
def _no_control_groups_nor_volumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests leave the host's control groups and mounts alone: a local driver made here
    finds neither (the real ones are tested in tests/integration/test_cgroups.py and the e2e
    tests)."""
    from cove.common import cgroups
    from cove.compute import firewall, volumes

    monkeypatch.setattr(cgroups, "detect", lambda parent: (None, "unit tests make no groups"))
    monkeypatch.setattr(volumes, "detect", lambda images: (None, "unit tests mount nothing"))
    monkeypatch.setattr(firewall, "detect", lambda data: (None, "unit tests filter nothing"))


@pytest.fixture(scope="session")
def _probed_versions() -> dict[tuple[str, str, tuple[int, ...]], str | None]:
    return {}


@pytest.fixture(autouse=True)
def _installed_servers_probed_once(
    monkeypatch: pytest.MonkeyPatch, _probed_versions: dict[tuple[str, str, tuple[int, ...]], Any]
) -> None:
    """Registering what is installed (``cove-manage db upgrade``, ``cove up``) runs each
    server binary with ``--version``; a binary's answer does not change while the tests run, so
    each is asked once per session (again if the file changes)."""
    from cove.compute import discovery

    probes = {
        "pg_version": lambda bin_dir: bin_dir / "postgres",
        "redis_version": lambda server: server,
        "mariadb_version": lambda server: server,
    }
    for name, binary in probes.items():
        monkeypatch.setattr(
            discovery, name, _once(name, getattr(discovery, name), binary, _probed_versions)
        )


def _once(
    name: str,
    probe: Callable[[Path], str | None],
    binary: Callable[[Path], Path],
    answers: dict[tuple[str, str, tuple[int, ...]], str | None],
) -> Callable[[Path], str | None]:
    def cached(path: Path) -> str | None:
        try:
            st = binary(path).stat()
            identity: tuple[int, ...] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            identity = ()
        key = (name, str(path), identity)
        if key not in answers:
            answers[key] = probe(path)
        return answers[key]

    return cached


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashes() -> Iterator[None]:
    """Unit tests make and check many passwords: hash them at the lowest cost Cove accepts
    (the stored hash names its cost, so checking follows), from the session's start so that
    module-wide fixtures do too. The hash an unknown user is checked against costs the same,
    as it does in production. The real cost is tested on its own in test_identity.py."""
    from cove.identity import passwords, service

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "LOG2_N", 10)
        patch.setattr(service, "DUMMY_HASH", passwords.hash_password(secrets.token_urlsafe(16)))
        yield


@pytest.fixture(scope="session")
def _control_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite control database migrated to head, built once per session.

    Alembic takes about 50 ms per fresh database and most unit tests want one; tests copy
    this file instead. It holds the schema only: what tests seed differs from module to
    module. The migrations themselves run for real in test_migrations.py.
    """
    from cove.db.migrate import upgrade

    path = tmp_path_factory.mktemp("control-db-template") / "cove.sqlite"
    upgrade(f"sqlite:///{path}")
    _whole_in_one_file(path)
    path.chmod(0o444)
    return path


def _whole_in_one_file(path: Path) -> None:
    """Cove opens SQLite in WAL mode: fold the log into the main file and go back to a
    rollback journal, so that the one file is the whole database and a copy of it complete."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    sides = [p.name for p in path.parent.iterdir() if p != path]
    assert not sides, f"{path} left side files: {sides}"


def _copy_fresh(source: Path, url: str) -> None:
    """Copy the database file ``source`` to where the SQLite ``url`` points, which must be new."""
    prefix = "sqlite:///"
    assert url.startswith(prefix), f"not a SQLite file URL: {url}"
    target = Path(url.removeprefix(prefix).split("?", 1)[0])
    leftovers = [
        p for p in (target, *(target.with_name(target.name + s) for s in SIDE_FILES)) if p.exists()
    ]
    assert not leftovers, f"a fresh control database must not overwrite {leftovers}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


@pytest.fixture(scope="session")
def migrated_db(_control_db_template: Path) -> Callable[[str], None]:
    """``migrated_db(url)`` makes the SQLite database at ``url`` a fresh copy of the migrated
    template, as ``cove.db.migrate.upgrade(url)`` on a new file would: each test its own file,
    so nothing one test writes is seen by another."""

    def copy_to(url: str) -> None:
        _copy_fresh(_control_db_template, url)

    return copy_to


@pytest.fixture(scope="session")
def seeded_db(
    _control_db_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Any, Callable[[Any, Any], Any]], Any]:
    """``seeded_db(settings, seed)`` does ``migrated_db(settings.database_url)`` and adds the
    rows ``seed(db, settings)`` adds, returning what it returned; but the seed runs once per
    session, on a copy of the template, and every test asking for it gets a copy of the result
    (and the same return value: keep that to plain values, such as ids and passwords).

    For modules whose tests all start from the same rows (catalogue, networks, accounts), which
    take tens of milliseconds to make and well under one to copy. A seed must make the same
    rows for every test that asks: it may read from ``settings`` only ``address_pool``, which
    is part of the snapshot's key with the seed itself.
    """
    from cove.db.engine import Database

    snapshots: dict[tuple[Any, str], tuple[Path, Any]] = {}

    def copy_to(settings: Any, seed: Callable[[Any, Any], Any]) -> Any:
        key = (seed, settings.address_pool)
        if key not in snapshots:
            path = tmp_path_factory.mktemp("seeded-db") / "cove.sqlite"
            shutil.copyfile(_control_db_template, path)
            db = Database(f"sqlite:///{path}")
            try:
                made = seed(db, settings)
            finally:
                db.dispose()
            _whole_in_one_file(path)
            snapshots[key] = (path, made)
        path, made = snapshots[key]
        _copy_fresh(path, settings.database_url)
        return made

    return copy_to


@pytest.fixture(scope="session")
def _idle_apps() -> list[Any]:
    return []


@pytest.fixture
def api_app(_idle_apps: list[Any]) -> Iterator[Callable[[Any], Any]]:
    """``api_app(context)`` is ``cove.api.app.create_app(context)``, reusing an application
    another test has finished with.

    FastAPI builds an application's routes on its first requests (some 40 ms for Cove's), and
    what ``create_app`` builds depends on nothing but the code: the context is read from
    ``app.state.cove`` on every request. So each test binds its own context to an application
    of its own (several at once if it asks), and gives it back unbound when it ends; one that
    was changed (routes, middleware, dependency overrides) is not reused.
    """
    from cove.api.app import create_app

    taken: list[tuple[Any, tuple[int, int]]] = []

    def bind(context: Any) -> Any:
        if _idle_apps:
            app = _idle_apps.pop()
            app.state.cove = context
        else:
            app = create_app(context)
        taken.append((app, _shape(app)))
        return app

    yield bind
    for app, shape in taken:
        app.state.cove = None
        if _shape(app) == shape and not app.dependency_overrides:
            _idle_apps.append(app)


def _shape(app: Any) -> tuple[int, int]:
    return len(app.router.routes), len(app.user_middleware)


@pytest.fixture
def member_api(
    tmp_path: Path, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[tuple[Any, Any, str]]:
    """A TestClient of an API that counts its metrics, with a member's token of project p1;
    its context; the project."""
    from fastapi.testclient import TestClient

    from accounts import add_account, password_auth
    from cove.api.context import build_context
    from cove.common.metrics import Metrics
    from cove.common.settings import load_settings
    from cove.db.catalog import seed_flavors
    from cove.db.engine import Database
    from cove.db.networks import sync_default_network
    from fakes import FakeBus

    settings = load_settings(data_dir=tmp_path)

    def seed(db: Database, settings: Any) -> tuple[str, str]:
        with db.session() as s:
            seed_flavors(s)
            sync_default_network(s, settings)
        return add_account(db, "p1", "u1", "member", project_id="p1")

    project_id, password = seeded_db(settings, seed)
    db = Database(settings.database_url)
    context = build_context(settings, db, FakeBus())
    context.metrics = Metrics.start(None)
    client = TestClient(api_app(context))
    assert context.identity is not None
    token, _ = context.identity.authenticate(password_auth("u1", password, project_id))
    client.headers["X-Auth-Token"] = token
    yield client, context, project_id
    db.dispose()
