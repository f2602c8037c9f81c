"""Memory and CPU from the flavor, enforced by the kernel: each instance runs in a control
group of its own (``cove.common.cgroups``). A query asking for more memory than the flavor
allows is killed while a neighbour's queries go on; the management view shows the limits and
the kill; a resize changes the limits live; a delete leaves no group behind."""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from datastores import DATASTORES, LOGIN_ERRORS
from harness import ControlPlane, wait_for

from cove.common import cgroups, procfs
from cove.common.service_user import is_instance_user_name

pytestmark = pytest.mark.e2e

PG = DATASTORES["postgresql"]
#: Asks for ~2.5 GB: every row of the series sorted in memory, which work_mem allows.
GREEDY = "SELECT g, random() AS r FROM generate_series(1, 40000000) g ORDER BY r OFFSET 39999999"


def _groups() -> cgroups.Cgroups:
    found, why = cgroups.detect("cove")
    if found is None:
        pytest.skip(f"control groups cannot be made here: {why}")
    return found


def _cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_a_flavor_caps_memory_and_cpu_and_a_greedy_query_hurts_no_neighbour(
    cove_up: ControlPlane,
) -> None:
    groups = _groups()
    plane, api = cove_up, cove_up.http
    admin = plane.account("admin", "isolation-admin", "admin").http
    ids = [
        plane.create(name=f"isolated-{n}", flavorRef="1", datastore={"type": "postgresql"})["id"]
        for n in ("victim", "neighbour")
    ]
    try:
        victim, neighbour = (plane.wait_status(i, "ACTIVE") for i in ids)
        passwords = [api.post(f"/instances/{i}/root").json()["user"]["password"] for i in ids]
        resp = api.post(f"/instances/{ids[0]}/databases", json={"databases": [{"name": "d"}]})
        assert resp.status_code == 202, resp.text

        def isolation(iid: str) -> dict[str, Any]:
            resp = admin.get(f"/mgmt/instances/{iid}")
            assert resp.status_code == 200, resp.text
            return resp.json()["instance"]["isolation"]  # type: ignore[no-any-return]

        # The limits are the flavor's (tiny: 512 MB, 1 vCPU), as the guest finds them.
        wait_for(lambda: isolation(ids[0])["memory_limit_mb"] == 512, 30, 0.2, "the limits")
        seen = isolation(ids[0])
        assert seen["cpus"] == 1.0 and seen["oom_kills"] == 0
        assert 0 < seen["memory_used_mb"] < 512
        # The server and every process it started are in the group, not just the agent.
        data = plane.data_dir / "instances" / ids[0] / "data"
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        for pid in (postmaster, *procfs.descendants(postmaster)):
            assert f"/cove/{ids[0]}" in _cgroup_of(pid), pid

        # Processes found outside the group (a host whose groups were reset, say) are moved
        # back by the monitor, with everything they started.
        lock = plane.data_dir / "instances" / ids[0] / "run" / "guestagent.lock"
        agent = int(lock.read_text().split()[0])
        for root in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/cpu")):
            for pid in (agent, postmaster):
                (root / "cgroup.procs").write_text(str(pid))
        assert not groups.contains(ids[0], agent) and not groups.contains(ids[0], postmaster)
        wait_for(
            lambda: groups.contains(ids[0], agent) and groups.contains(ids[0], postmaster),
            30,
            0.2,
            "the instance's processes back in its group",
        )

        # A neighbour keeps answering while the victim's greedy query runs and is killed.
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def neighbour_load() -> None:
            with PG.login(neighbour, PG.root_user, passwords[1], "postgres") as conn:
                while not stop.is_set():
                    try:
                        conn.execute("SELECT sum(g) FROM generate_series(1, 20000) g").fetchone()
                        answered[0] += 1
                    except psycopg.Error as exc:
                        failures.append(str(exc))
                        return

        worker = threading.Thread(target=neighbour_load)
        worker.start()
        try:
            with PG.login(victim, PG.root_user, passwords[0], "d") as conn:
                PG.write(conn, "kept")
                conn.execute("SET work_mem = '4GB'")
                with pytest.raises(psycopg.OperationalError):
                    conn.execute(GREEDY).fetchall()
        finally:
            stop.set()
            worker.join(60)
        assert failures == [] and answered[0] > 0

        # The kill is counted and shown, and a fault says it for a while; the victim serves
        # again with its data.
        wait_for(lambda: (isolation(ids[0])["oom_kills"] or 0) >= 1, 30, 0.2, "the kill shown")
        wait_for(
            lambda: (
                plane.instance(ids[0])
                .get("fault", {})
                .get("message", "")
                .startswith("The database server ran out of memory: the kernel killed")
            ),
            30,
            0.2,
            "the fault",
        )
        assert "fault" not in plane.instance(ids[1])
        assert isolation(ids[1])["oom_kills"] == 0

        def serves() -> bool:
            try:
                with PG.login(victim, PG.root_user, passwords[0], "d") as conn:
                    return PG.read(conn) == "kept"
            except LOGIN_ERRORS:
                return False

        wait_for(serves, 60, 0.2, "the victim serving again")

        # A resize changes the limits (small: 2 GB), once the guest reports the server healthy
        # again (PostgreSQL restarts every backend after one is killed).
        wait_for(
            lambda: (
                admin.get(f"/mgmt/instances/{ids[0]}").json()["instance"]["guest_status"]
                == {"state_description": "healthy"}
            ),
            60,
            0.2,
            "the victim healthy again",
        )
        resp = api.post(f"/instances/{ids[0]}/action", json={"resize": {"flavorRef": "2"}})
        assert resp.status_code == 202, resp.text
        wait_for(
            lambda: groups.limits(ids[0]).memory_bytes == 2048 << 20, 120, 0.2, "the new limit"
        )
        plane.wait_status(ids[0], "ACTIVE", timeout=120)
        wait_for(lambda: isolation(ids[0])["memory_limit_mb"] == 2048, 30, 0.2, "the new limit")
        # And back down, the instance using less than the smaller limit.
        resp = api.post(f"/instances/{ids[0]}/action", json={"resize": {"flavorRef": "1"}})
        assert resp.status_code == 202, resp.text
        wait_for(
            lambda: groups.limits(ids[0]).memory_bytes == 512 << 20, 120, 0.2, "the lower limit"
        )
        plane.wait_status(ids[0], "ACTIVE", timeout=120)
    finally:
        for iid in ids:
            api.delete(f"/instances/{iid}")
    for iid in ids:
        wait_for(lambda i=iid: api.get(f"/instances/{i}").status_code == 404, 60, 0.1, "deletion")
        assert groups.pids(iid) == []
        with pytest.raises(FileNotFoundError):
            groups.limits(iid)


def _run_as(uid: int, gid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), user=uid, group=gid, extra_groups=[], capture_output=True, text=True
    )


def test_each_instance_runs_as_a_user_of_its_own(cove_up: ControlPlane) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs instances as users of their own")
    plane, api = cove_up, cove_up.http
    ids = [
        plane.create(name="own-pg", datastore={"type": "postgresql"})["id"],
        plane.create(name="own-redis", datastore={"type": "redis"})["id"],
    ]
    try:
        for iid in ids:
            plane.wait_status(iid, "ACTIVE", timeout=180)
        admin = plane.account("admin", "own-user-admin", "admin").http
        for iid in ids:
            wait_for(
                lambda i=iid: admin.get(f"/mgmt/instances/{i}").json()["instance"]["isolation"][
                    "own_user"
                ],
                30,
                0.2,
                "the management view saying so",
            )
        instances = [plane.data_dir / "instances" / iid for iid in ids]
        # Its own user, made for it or for the spare place it took (``compute/spares.py``).
        users = [pwd.getpwuid(base.stat().st_uid) for base in instances]
        assert all(is_instance_user_name(u.pw_name) for u in users)
        service = pwd.getpwnam("cove")
        assert len({u.pw_uid for u in users} | {service.pw_uid}) == 3
        for iid, user, base in zip(ids, users, instances, strict=True):
            # The agent and the server (and what it started) run as the instance's user.
            agent = int((base / "run" / "guestagent.lock").read_text().split()[0])
            assert procfs.owned_by(agent, user.pw_uid)
            servers = [p for p in procfs.descendants(agent) if procfs.owned_by(p, user.pw_uid)]
            assert servers, f"no server of {iid} runs as {user.pw_name}"
            assert base.stat().st_uid == user.pw_uid
        (pg_user, redis_user), (pg_dir, redis_dir) = users, instances
        # Each reads its own files, not the other's.
        for user, own, other in ((pg_user, pg_dir, redis_dir), (redis_user, redis_dir, pg_dir)):
            mine = _run_as(user.pw_uid, user.pw_gid, "cat", str(own / "conf" / "guest.json"))
            assert mine.returncode == 0, mine.stderr
            assert own.name in mine.stdout  # its instance id
            for argv in (
                ("cat", str(other / "conf" / "guest.json")),
                ("ls", str(other / "data")),
                ("ls", str(other)),
            ):
                theirs = _run_as(user.pw_uid, user.pw_gid, *argv)
                assert theirs.returncode != 0, argv
                assert "Permission denied" in theirs.stderr, theirs.stderr
    finally:
        for iid in ids:
            api.delete(f"/instances/{iid}")
    for iid in ids:
        wait_for(lambda i=iid: api.get(f"/instances/{i}").status_code == 404, 60, 0.1, "deletion")
    # The users go with their instances.
    for user in users:
        with pytest.raises(KeyError):
            pwd.getpwnam(user.pw_name)


def _mount_source(path: Path) -> str | None:
    done = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def test_a_volume_holds_no_more_than_its_size_and_grows_online(cove_up: ControlPlane) -> None:
    plane, api = cove_up, cove_up.http
    admin = plane.account("admin", "volume-admin", "admin").http
    iid = plane.create(name="filling", flavorRef="1", volume={"size": 1})["id"]
    home = plane.data_dir / "instances" / iid
    image = plane.data_dir / "volumes" / f"{iid}.img"
    try:
        inst = plane.wait_status(iid, "ACTIVE")
        device = _mount_source(home)
        if device is None:
            pytest.skip("volumes cannot be mounted here (Cove says why in its log)")
        assert device.startswith("/dev/loop") and image.is_file()

        def isolation() -> dict[str, Any]:
            resp = admin.get(f"/mgmt/instances/{iid}")
            assert resp.status_code == 200, resp.text
            return resp.json()["instance"]["isolation"]  # type: ignore[no-any-return]

        wait_for(lambda: isolation()["volume_mb"] is not None, 30, 0.2, "the volume shown")
        assert 900 < isolation()["volume_mb"] <= 1024

        password = api.post(f"/instances/{iid}/root").json()["user"]["password"]
        resp = api.post(f"/instances/{iid}/databases", json={"databases": [{"name": "d"}]})
        assert resp.status_code == 202, resp.text
        chunk = (
            "INSERT INTO big SELECT n, repeat('x', 1000000) "
            "FROM generate_series(%s::int, %s::int) n"
        )
        written = 0
        with PG.login(inst, PG.root_user, password, "d") as conn:
            conn.execute("CREATE TABLE big (n int, v text)")
            conn.execute("ALTER TABLE big ALTER COLUMN v SET STORAGE EXTERNAL")  # uncompressed
            # Writing past the volume's size fails cleanly: the disk is full, or, once the
            # agent found it full, the server refuses writes; either way it keeps serving.
            with pytest.raises((psycopg.errors.DiskFull, psycopg.errors.ReadOnlySqlTransaction)):
                for _ in range(100):  # 2 GB at most, twice the volume
                    conn.execute(chunk, (written + 1, written + 20))
                    written += 20
        assert written > 0

        def rows() -> int | None:
            try:
                with PG.login(inst, PG.root_user, password, "d") as conn:
                    return int(conn.execute("SELECT count(*) FROM big").fetchone()[0])
            except LOGIN_ERRORS:
                return None

        # What was committed is still there and readable; new writes are refused.
        assert rows() == written

        def fault() -> str:
            return str(plane.instance(iid).get("fault", {}).get("message", ""))

        wait_for(lambda: fault().startswith("The volume is full: "), 30, 0.2, "the fault")
        with (
            PG.login(inst, PG.root_user, password, "d") as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            conn.execute(chunk, (written + 1, written + 1))

        # Growing the volume (online: the server keeps running) lets writes continue.
        resp = api.post(f"/instances/{iid}/action", json={"resize": {"volume": {"size": 2}}})
        assert resp.status_code == 202, resp.text
        wait_for(
            lambda: (
                plane.instance(iid)["volume"]["size"] == 2
                and plane.instance(iid)["status"] == "ACTIVE"
            ),
            120,
            0.2,
            "the grown volume",
        )
        assert 1900 < isolation()["volume_mb"] <= 2048
        wait_for(lambda: fault() == "", 30, 0.2, "the fault cleared")
        with PG.login(inst, PG.root_user, password, "d") as conn:
            conn.execute(chunk, (written + 1, written + 20))
            assert conn.execute("SELECT count(*) FROM big").fetchone() == (written + 20,)
    finally:
        api.delete(f"/instances/{iid}")
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "deletion")
    # Nothing left behind: no mount, no image, no loop device holding it.
    assert _mount_source(home) is None and not home.exists() and not image.exists()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    assert str(image) not in loops.stdout


def test_a_full_mariadb_volume_refuses_writes_until_it_grows(cove_up: ControlPlane) -> None:
    plane, api = cove_up, cove_up.http
    maria = DATASTORES["mariadb"]
    spec = {
        "name": "filling-maria",
        "flavorRef": "1",
        "volume": {"size": 1},
        "datastore": {"type": "mariadb"},
        "databases": [{"name": "d"}],
        "users": [{"name": "app", "password": "app-Secret-1", "databases": [{"name": "d"}]}],
    }
    iid = plane.create(**spec)["id"]
    try:
        inst = plane.wait_status(iid, "ACTIVE", timeout=180)
        if _mount_source(plane.data_dir / "instances" / iid) is None:
            pytest.skip("volumes cannot be mounted here (Cove says why in its log)")
        chunk = "INSERT INTO big (v) SELECT REPEAT('x', 4000000) FROM seq_1_to_5"
        written = 0
        with maria.login(inst, "app", "app-Secret-1", "d") as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE big (n INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT)")
            # Past the volume's size: the table is full, or the server refuses writes.
            with pytest.raises(pymysql.MySQLError) as refused:
                for _ in range(100):  # 2 GB at most, twice the volume
                    cur.execute(chunk)
                    conn.commit()
                    written += 5
            # The table is full (1114), the server refuses writes (1290, 1021), or the binary
            # log's cache of the statement cannot spill into the instance's tmpdir (3).
            assert refused.value.args[0] in (1114, 1290, 1021, 3), refused.value
            conn.rollback()
        assert written > 0

        def rows() -> int:
            with maria.login(inst, "app", "app-Secret-1", "d") as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM big")
                return int(cur.fetchone()[0])

        assert rows() == written  # what was committed is there
        wait_for(
            lambda: str(plane.instance(iid).get("fault", {}).get("message", "")).startswith(
                "The volume is full: "
            ),
            60,
            0.2,
            "the fault",
        )
        resp = api.post(f"/instances/{iid}/action", json={"resize": {"volume": {"size": 2}}})
        assert resp.status_code == 202, resp.text
        wait_for(lambda: "fault" not in plane.instance(iid), 120, 0.2, "the fault cleared")
        with maria.login(inst, "app", "app-Secret-1", "d") as conn, conn.cursor() as cur:
            cur.execute(chunk)
            conn.commit()
        assert rows() == written + 5
    finally:
        api.delete(f"/instances/{iid}")
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "deletion")
