"""Cloud administrators: reaching any project's instance through their own project's path,
``reset_status`` on stuck instances, and the management views, against a real SQLite control
database. The task manager is the real one, served on the fake bus (tests/fakes.py) with the
fake compute driver once a test starts it; no guest agent answers unless a test says so."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from accounts import add_account, password_auth
from cove.api.context import ApiContext, build_context
from cove.api.views import trove_time
from cove.common.errors import RpcTimeout
from cove.common.ids import utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.conductor.service import Conductor
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.instances import end_task, reset_task
from cove.db.models import GuestState, Instance
from cove.db.networks import sync_default_network
from cove.domain.guest import (
    SERVER_REPORT,
    VOLUME_REPORT,
    HeartbeatPayload,
    Isolation,
    ServerOutcome,
    VolumeOutcome,
)
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.service import TaskManager
from fakes import FakeBus, FakeDriver

#: Who acts in these tests: (project, user, role). ``cloud`` holds ``admin`` on the
#: administrative project (setting ``admin_project``, "admin" by default).
PEOPLE = {
    "member": ("shop", "sam", "member"),
    "owner": ("shop", "olga", "admin"),
    "stranger": ("other", "otto", "admin"),
    "cloud": ("admin", "ada", "admin"),
}
DEADLINE = 30.0


def seed(db: Database, settings: Settings) -> dict[str, tuple[str, str]]:
    """The catalogue, the default network and the people; returns {who: (project id,
    password)}."""
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    return {who: add_account(db, *person) for who, person in PEOPLE.items()}


@dataclass
class Cloud:
    client: TestClient
    context: ApiContext
    bus: FakeBus
    driver: FakeDriver
    tm: TaskManager
    projects: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return self.context.db

    def serve_taskmanager(self) -> None:
        """The task manager takes casts from now on; until then they are lost, as when it is
        down."""
        self.bus.serve("taskmanager", self.tm.endpoints())

    def request(
        self, who: str, method: str, path: str, json: Any = None, project: str | None = None
    ) -> Any:
        """``method`` on ``/v1.0/<project>/<path>``, the project being ``who``'s own unless
        given, with ``who``'s token."""
        url = f"/v1.0/{project or self.projects[who]}/{path}"
        return self.client.request(
            method, url, json=json, headers={"X-Auth-Token": self.tokens[who]}
        )

    def create(self) -> str:
        """A new instance of the shop, made by its member."""
        spec = {"name": "orders", "flavorRef": "1", "volume": {"size": 1}}
        resp = self.request("member", "POST", "instances", {"instance": spec})
        assert resp.status_code == 200, resp.text
        iid: str = resp.json()["instance"]["id"]
        return iid

    def show(self, who: str, iid: str) -> dict[str, Any]:
        resp = self.request(who, "GET", f"instances/{iid}")
        assert resp.status_code == 200, resp.text
        shown: dict[str, Any] = resp.json()["instance"]
        return shown

    def row(self, iid: str) -> Instance:
        with self.db.session() as s:
            inst = s.get(Instance, iid)
            assert inst is not None
            return inst

    def set_row(self, iid: str, **values: Any) -> None:
        with self.db.session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(**values))

    def heartbeat(self, iid: str, status: GuestStatus, sent_at: datetime | None = None) -> None:
        """The instance's guest reports ``status``, through the real conductor."""
        sent = sent_at or utcnow()
        Conductor(self.db).heartbeat(RequestContext(), iid, status, HeartbeatPayload(), sent)

    def ready(self, iid: str) -> None:
        """The instance as a finished build leaves it: placed, no task, its guest healthy."""
        self.set_row(
            iid, task=Task.NONE.value, compute_state=ComputeState.ACTIVE.value, address="127.42.0.9"
        )
        self.heartbeat(iid, GuestStatus.HEALTHY)

    def gone(self, iid: str) -> None:
        """Wait until the instance's owner no longer finds it."""
        deadline = time.monotonic() + DEADLINE
        while self.request("member", "GET", f"instances/{iid}").status_code != 404:
            assert time.monotonic() < deadline, f"instance {iid} was not deleted"
            time.sleep(0.05)
        assert self.row(iid).deleted


@pytest.fixture
def cloud(
    tmp_path: Any, seeded_db: Callable[..., Any], api_app: Callable[[Any], Any]
) -> Iterator[Cloud]:
    yield from make_cloud(tmp_path, seeded_db, api_app, seed)


def make_cloud(
    tmp_path: Any,
    seeded_db: Callable[..., Any],
    api_app: Callable[[Any], Any],
    seed: Callable[[Database, Settings], dict[str, tuple[str, str]]],
) -> Iterator[Cloud]:
    """The world of these tests on the catalogue, networks and people ``seed`` makes."""
    settings = load_settings(data_dir=tmp_path, rate_limit_per_minute=0)
    people = seeded_db(settings, seed)
    db = Database(settings.database_url)
    bus = FakeBus()
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    driver = FakeDriver()
    tm = TaskManager(TaskContext(settings, db, bus, driver))  # type: ignore[arg-type]
    world = Cloud(TestClient(api_app(context)), context, bus, driver, tm)
    assert context.identity is not None
    for who, (project_id, password) in people.items():
        user = PEOPLE[who][1]
        token, _ = context.identity.authenticate(password_auth(user, password, project_id))
        world.projects[who], world.tokens[who] = project_id, token
    yield world
    tm.stop()
    db.dispose()


def forbidden(resp: Any) -> str:
    assert resp.status_code == 403, resp.text
    message: str = resp.json()["forbidden"]["message"]
    return message


# -- reaching other projects' instances -----------------------------------------------------------


def test_a_cloud_administrator_reaches_any_projects_instance(cloud: Cloud) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    shop = cloud.projects["member"]
    admin_view = cloud.show("cloud", iid)
    assert admin_view["id"] == iid
    # Trove shows administrators whose instance it is and what it runs on.
    assert admin_view["tenant_id"] == shop and admin_view["server_id"] == iid
    assert admin_view["volume_id"] is None and admin_view["encrypted_rpc_messaging"] is False
    owner_view = cloud.show("member", iid)
    assert not {"tenant_id", "server_id", "volume_id"} & owner_view.keys()
    # Lists stay per project: the administrator's own project holds nothing.
    listed = cloud.request("cloud", "GET", "instances").json()["instances"]
    assert iid not in [i["id"] for i in listed]
    # A sub-resource, through the administrator's path.
    cloud.bus.answer("is_root_enabled", True)
    root = cloud.request("cloud", "GET", f"instances/{iid}/root")
    assert root.status_code == 200 and root.json() == {"rootEnabled": True}
    renamed = cloud.request("cloud", "PUT", f"instances/{iid}", {"instance": {"name": "audited"}})
    assert renamed.status_code == 202, renamed.text
    assert cloud.show("member", iid)["name"] == "audited"
    cloud.serve_taskmanager()
    assert cloud.request("cloud", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)
    assert iid in cloud.driver.destroyed


def test_project_administrators_reach_only_their_project(cloud: Cloud) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    assert cloud.show("owner", iid)["id"] == iid
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/root"), ("GET", "/databases")):
        resp = cloud.request("stranger", method, f"instances/{iid}{path}")
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["itemNotFound"]["message"] == f"Instance {iid} could not be found."
    # Nor does anyone reach it through its project's path with a token of another project.
    forbidden(cloud.request("cloud", "GET", f"instances/{iid}", project=cloud.projects["member"]))
    assert not cloud.row(iid).deleted


# -- reset_status -------------------------------------------------------------------------------


def reset(cloud: Cloud, who: str, iid: str, body: Any = None) -> Any:
    action = {"reset_status": {} if body is None else body}
    return cloud.request(who, "POST", f"instances/{iid}/action", action)


def test_reset_status_is_for_cloud_administrators_only(cloud: Cloud) -> None:
    iid = cloud.create()
    for who in ("member", "owner", "stranger"):
        message = forbidden(reset(cloud, who, iid))
        assert message == "Policy doesn't allow instance:reset_status to be performed."
    assert cloud.row(iid).task == Task.BUILDING.value
    bad = reset(cloud, "cloud", iid, body=[])
    assert bad.status_code == 400, bad.text
    assert reset(cloud, "cloud", "no-such-instance").status_code == 404
    assert reset(cloud, "cloud", iid, body={"force_delete": True}).status_code == 202
    assert cloud.row(iid).task == Task.NONE.value


def test_a_build_that_never_started_is_reset_then_deleted(cloud: Cloud) -> None:
    # The task manager is down: the build's cast is lost, the instance stays BUILD.
    iid = cloud.create()
    before = cloud.row(iid)
    assert (before.task, before.compute_state) == (Task.BUILDING.value, ComputeState.BUILD.value)
    refused = cloud.request("member", "DELETE", f"instances/{iid}")
    assert refused.status_code == 422, refused.text

    assert reset(cloud, "cloud", iid).status_code == 202
    row = cloud.row(iid)
    assert (row.task, row.compute_state) == (Task.NONE.value, ComputeState.ERROR.value)
    assert (row.task_owner, row.task_lease_until, row.task_args) == (None, None, None)
    shown = cloud.show("member", iid)
    assert shown["status"] == "ERROR"
    assert shown["fault"]["message"] == (
        "The status was reset by an administrator; the instance was BUILD (task BUILDING)."
    )
    assert shown["fault"]["created"] == shown["updated"]
    # What the old build would still do afterwards changes nothing.
    with cloud.db.session() as s:
        assert not end_task(s, iid, Task.BUILDING, Task.BUILD_ERROR, "too late", utcnow())
    Conductor(cloud.db).report(RequestContext(), iid, "prepare", "success", "", utcnow())
    cloud.heartbeat(iid, GuestStatus.HEALTHY)
    row = cloud.row(iid)
    assert (row.task, row.compute_state) == (Task.NONE.value, ComputeState.ERROR.value)
    assert "reset by an administrator" in (row.fault_message or "")

    cloud.serve_taskmanager()
    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)
    assert iid in cloud.driver.destroyed


def test_a_reset_during_the_build_outlasts_the_task_manager(cloud: Cloud) -> None:
    """The task manager has placed the instance and waits for the guest's ``prepare`` when the
    reset lands; the guest then does not answer. The build does not come back."""
    cloud.serve_taskmanager()
    shop = cloud.projects["member"]

    def reset_meanwhile(ctx: RequestContext, **_args: Any) -> None:
        (iid,) = [i.instance_id for i in cloud.driver.created]
        assert cloud.row(iid).task == Task.BUILDING.value
        assert reset(cloud, "cloud", iid).status_code == 202
        raise RpcTimeout("no answer from the guest")

    cloud.bus.answer("prepare", reset_meanwhile)
    iid = cloud.create()
    row = cloud.row(iid)
    assert (row.task, row.task_owner, row.task_lease_until) == (Task.NONE.value, None, None)
    assert row.compute_state == ComputeState.ACTIVE.value and row.address is not None
    shown = cloud.show("member", iid)
    assert "was BUILD (task BUILDING)" in shown["fault"]["message"]
    assert shown["status"] == "ERROR" and shown["ip"] == [row.address]
    assert cloud.row(iid).project_id == shop

    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)
    assert iid in cloud.driver.destroyed


@pytest.mark.parametrize(
    ("task", "status"), [(Task.REBOOTING, "REBOOT"), (Task.RESIZING, "RESIZE")]
)
def test_a_stuck_restart_or_resize_is_reset(cloud: Cloud, task: Task, status: str) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    cloud.serve_taskmanager()
    # The task manager that took the task holds its lease still, and hangs.
    held = utcnow() + timedelta(hours=1)
    cloud.set_row(iid, task=task.value, task_owner="tm-that-hangs", task_lease_until=held)
    assert cloud.show("member", iid)["status"] == status
    blocked = cloud.request("member", "POST", f"instances/{iid}/action", {"restart": {}})
    assert blocked.status_code == 422, blocked.text

    reset_at = utcnow()
    assert reset(cloud, "cloud", iid).status_code == 202
    row = cloud.row(iid)
    assert (row.task, row.task_owner, row.task_lease_until) == (Task.NONE.value, None, None)
    assert row.compute_state == ComputeState.ACTIVE.value
    shown = cloud.show("member", iid)
    # As in Trove, the service status is ERROR until the guest reports again.
    assert (shown["status"], shown["operating_status"]) == ("ERROR", "ERROR")
    assert shown["service_status_updated"] >= trove_time(reset_at)  # type: ignore[operator]
    assert f"was {status} (task {task.value})" in shown["fault"]["message"]
    # The hung task manager ends its task late: nothing changes.
    with cloud.db.session() as s:
        assert not end_task(s, iid, task, Task.NONE, "Restart failed: timed out", utcnow())
    assert "reset by an administrator" in cloud.show("member", iid)["fault"]["message"]
    cloud.heartbeat(iid, GuestStatus.HEALTHY)
    back = cloud.show("member", iid)
    assert (back["status"], back["operating_status"]) == ("ACTIVE", "HEALTHY")

    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)


def test_an_instance_with_a_dead_guest_is_reset_then_deleted(cloud: Cloud) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    long_ago = utcnow() - timedelta(hours=1)
    with cloud.db.session() as s:
        s.execute(
            update(GuestState).where(GuestState.instance_id == iid).values(heartbeat_at=long_ago)
        )
    assert cloud.show("member", iid)["status"] == "ERROR"
    assert reset(cloud, "cloud", iid).status_code == 202
    shown = cloud.show("member", iid)
    assert shown["status"] == "ERROR"
    assert "was ERROR (task NONE)" in shown["fault"]["message"]
    cloud.serve_taskmanager()
    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)


def test_a_reset_whose_task_moved_meanwhile_changes_nothing(cloud: Cloud) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    with cloud.db.session() as s:
        # Read while restarting; the restart has ended since.
        assert not reset_task(s, iid, Task.REBOOTING, "reset", utcnow())
    row = cloud.row(iid)
    assert (row.task, row.fault_message) == (Task.NONE.value, None)
    assert cloud.show("member", iid)["operating_status"] == "HEALTHY"


# -- management views ---------------------------------------------------------------------------


def test_management_views_carry_trove_fields_from_the_rows(cloud: Cloud) -> None:
    building = cloud.create()
    iid = cloud.create()
    cloud.ready(iid)
    beat = utcnow().replace(microsecond=0)
    cloud.heartbeat(iid, GuestStatus.HEALTHY, sent_at=beat)
    shop = cloud.projects["member"]
    owner_view = cloud.show("member", iid)
    listed = cloud.request("cloud", "GET", "mgmt/instances").json()["instances"]
    item = next(i for i in listed if i["id"] == iid)
    assert item["created"] == owner_view["created"] and item["updated"] == owner_view["updated"]
    assert item["service_status_updated"] == trove_time(beat)
    assert item["datastore"] == {"type": "postgresql", "version": "15", "version_number": "15.4"}
    assert (item["tenant_id"], item["server_id"], item["volume_id"]) == (shop, iid, None)
    assert item["server"] == {
        "id": iid,
        "name": "orders",
        "status": "ACTIVE",
        "tenant_id": shop,
        "host": "local",
        "deleted": False,
        "deleted_at": None,
        "address": "127.42.0.9",
        "port": 5432,
    }
    assert (item["deleted"], item["deleted_at"]) == (False, None)
    assert item["task_description"] == "No task is running."
    assert item["service_status"] == "HEALTHY"
    assert item["ip"] == ["127.42.0.9"]
    assert item["access"] == {"is_public": False, "allowed_cidrs": ["0.0.0.0/0"]}
    assert not {"replicas", "replica_of", "hostname", "fault", "configuration"} & item.keys()
    unplaced = next(i for i in listed if i["id"] == building)
    assert unplaced["server"]["status"] == "BUILD" and unplaced["service_status"] is None
    assert not {"ip", "addresses"} & unplaced.keys()

    one = cloud.request("cloud", "GET", f"mgmt/instances/{iid}").json()["instance"]
    network = owner_view["addresses"][0]["network"]
    assert one["server"]["addresses"] == {network: [{"addr": "127.42.0.9", "version": 4}]}
    assert one["guest_status"] == {"state_description": "healthy"}

    cloud.serve_taskmanager()
    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)
    deleted = cloud.request("cloud", "GET", f"mgmt/instances/{iid}").json()["instance"]
    assert deleted["deleted"] is True and deleted["server"]["status"] == "DELETED"
    assert deleted["deleted_at"] is not None
    assert deleted["server"]["deleted_at"] == deleted["deleted_at"]


def test_the_isolation_a_guest_reports_is_shown_and_its_faults_come_and_go(cloud: Cloud) -> None:
    iid = cloud.create()
    cloud.ready(iid)
    conductor = Conductor(cloud.db)
    started = utcnow()

    def beat(seconds: float, **isolation: Any) -> None:
        payload = HeartbeatPayload(isolation=Isolation(512, 1.0, **isolation))
        sent = started + timedelta(seconds=seconds)
        conductor.heartbeat(RequestContext(), iid, GuestStatus.HEALTHY, payload, sent)

    def report(seconds: float, operation: str, outcome: str, details: str) -> None:
        sent = started + timedelta(seconds=seconds)
        conductor.report(RequestContext(), iid, operation, outcome, details, sent)

    def fault() -> str | None:
        return cloud.row(iid).fault_message

    beat(1, memory_used_mb=100, volume_mb=960, volume_used_mb=900, own_user=True)
    one = cloud.request("cloud", "GET", f"mgmt/instances/{iid}").json()["instance"]
    assert one["isolation"] == {
        "memory_limit_mb": 512,
        "memory_used_mb": 100,
        "oom_kills": 0,
        "cpus": 1.0,
        "volume_mb": 960,
        "volume_used_mb": 900,
        "own_user": True,
    }
    # A kill at the memory limit shows for a minute, whatever the heartbeats say meanwhile.
    report(2, SERVER_REPORT, ServerOutcome.OUT_OF_MEMORY, "the kernel killed 1 of its processes")
    beat(3, oom_kills=1)
    assert (fault() or "").startswith("The database server ran out of memory: the kernel")
    beat(2 + 61, oom_kills=1)
    assert fault() is None
    # A full volume: the fault stays while the heartbeats say full, and goes with the first
    # one that says there is room, even when the report saying so was lost.
    report(70, VOLUME_REPORT, VolumeOutcome.FULL, "950 of 960 MB used; writes fail")
    assert fault() == "The volume is full: 950 of 960 MB used; writes fail"
    beat(69, volume_mb=960, volume_used_mb=900)  # older than the report: changes nothing
    assert (fault() or "").startswith("The volume is full")
    beat(71, volume_mb=960, volume_used_mb=950, volume_full=True)
    assert (fault() or "").startswith("The volume is full")
    beat(72, volume_mb=1984, volume_used_mb=950)
    assert fault() is None
