"""Quotas hold under concurrent creates, on SQLite and on a real PostgreSQL server.

Ten creates start together through the API against a quota of three instances: exactly three
may succeed. The quota check is slowed down so that, were creates not serialised by the
project's lock, every one of them would count the same usage and all would pass.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import cove.api.instances as instance_workflows
from accounts import add_account, password_auth
from cove.api.app import create_app
from cove.api.context import build_context
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import Instance, ProjectLock
from cove.db.networks import sync_default_network
from cove.db.quotas import check_instance_quota, lock_project
from fakes import FakeBus

pytestmark = pytest.mark.integration

CREATES = 10
QUOTA = 3


def _api(tmp_path: Any, db: Database) -> tuple[Any, str]:
    settings = load_settings(
        data_dir=tmp_path, database_url=db.url, max_instances_per_project=QUOTA
    )
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    context = build_context(settings, db, FakeBus())  # type: ignore[arg-type]
    project_id, password = add_account(db, "race", "racer", "member", project_id="race")
    assert context.identity is not None
    token, _claims = context.identity.authenticate(password_auth("racer", password, project_id))
    return create_app(context), token


def test_concurrent_creates_never_overshoot_the_quota(tmp_path, db, monkeypatch) -> None:
    app, token = _api(tmp_path, db)

    def slow_check(*args: Any, **kwargs: Any) -> None:
        check_instance_quota(*args, **kwargs)
        time.sleep(0.05)  # between the count and the insert: the window a race would use

    monkeypatch.setattr(instance_workflows, "check_instance_quota", slow_check)
    barrier = threading.Barrier(CREATES)
    statuses: list[int] = []
    messages: list[str] = []

    def create(i: int) -> None:
        client = TestClient(app, raise_server_exceptions=False)
        body = {
            "instance": {
                "name": f"db{i}",
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "postgresql", "version": "15"},
            }
        }
        barrier.wait()
        resp = client.post("/v1.0/race/instances", json=body, headers={"X-Auth-Token": token})
        statuses.append(resp.status_code)
        if resp.status_code == 413:
            messages.append(resp.json()["overLimit"]["message"])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(CREATES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses) == [200] * QUOTA + [413] * (CREATES - QUOTA), statuses
    assert all("['instances']" in m and f"3 in use of {QUOTA}" in m for m in messages)
    with db.session() as s:
        rows = s.scalar(select(func.count(Instance.id)).where(Instance.project_id == "race"))
    assert rows == QUOTA


def test_first_lock_of_a_project_waits_instead_of_failing(db) -> None:
    """Two transactions lock a project that has no lock row yet: the second waits for the
    first to commit, then takes the row, rather than failing on the duplicate key."""
    first_holds = threading.Event()
    release = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.session() as s:
                lock_project(s, "fresh")
                first_holds.set()
                release.wait(30)
        except BaseException as exc:
            errors.append(exc)
            first_holds.set()

    def second() -> None:
        try:
            first_holds.wait(30)
            with db.session() as s:
                lock_project(s, "fresh")
            second_done.set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert not second_done.wait(0.5), "the second lock did not wait for the first"
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert second_done.is_set()
    with db.session() as s:
        lock = s.get(ProjectLock, "fresh")
        assert lock is not None and lock.serial == 2
