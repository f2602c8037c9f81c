"""Resizing an instance of each datastore: a new flavor gives the server new memory settings
and a restart (RESIZE, then ACTIVE); a volume only grows; data is kept throughout."""

from __future__ import annotations

import pytest
from datastores import DATASTORES, LOGIN_ERRORS, Datastore
from harness import ControlPlane, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(params=sorted(DATASTORES))
def datastore(request: pytest.FixtureRequest) -> Datastore:
    return DATASTORES[request.param]


def test_resize_flavor_and_volume(cove_up: ControlPlane, datastore: Datastore) -> None:
    plane, ds, api = cove_up, datastore, cove_up.http
    flavors = {f["name"]: f for f in api.get("/flavors").json()["flavors"]}
    tiny, small = flavors["tiny"], flavors["small"]
    iid = plane.create(
        name=f"growing-{ds.name}", datastore={"type": ds.name}, flavorRef=tiny["str_id"]
    )["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    instance_dir = plane.data_dir / "instances" / iid
    root = api.post(f"/instances/{iid}/root").json()["user"]["password"]
    if ds.has_databases:
        resp = api.post(f"/instances/{iid}/databases", json={"databases": [{"name": "d"}]})
        assert resp.status_code == 202, resp.text
    db = "d" if ds.has_databases else ""
    with ds.login(inst, ds.root_user, root, db) as conn:
        ds.write(conn, "kept")
        run_id = ds.server_run_id(conn)

    def memory() -> str:
        conn = ds.settings_session(instance_dir, inst, root)
        try:
            return ds.setting(conn, ds.memory_setting)
        finally:
            conn.close()

    assert memory() == ds.memory_value(tiny["ram"])

    # The same flavor is refused with a clear message.
    resp = api.post(f"/instances/{iid}/action", json={"resize": {"flavorRef": tiny["str_id"]}})
    assert resp.status_code == 400 and "differ" in resp.text

    resp = api.post(f"/instances/{iid}/action", json={"resize": {"flavorRef": small["str_id"]}})
    assert resp.status_code == 202, resp.text
    # RESIZE from the moment the request is accepted (a quick resize may be over already).
    assert plane.instance(iid)["status"] in ("RESIZE", "ACTIVE")
    inst = plane.wait_status(iid, "ACTIVE", timeout=120)
    assert inst["flavor"]["id"] == small["str_id"]
    assert inst.get("fault") is None
    assert memory() == ds.memory_value(small["ram"])

    def restarted_with_data() -> bool:
        try:
            with ds.login(inst, ds.root_user, root, db) as conn:
                return ds.server_run_id(conn) != run_id and ds.read(conn) == "kept"
        except LOGIN_ERRORS:
            return False

    wait_for(restarted_with_data, 30, 0.1, "the resized server with its data")

    # A volume only grows.
    resp = api.post(f"/instances/{iid}/action", json={"resize": {"volume": {"size": 1}}})
    assert resp.status_code == 400 and "larger" in resp.text
    resp = api.post(f"/instances/{iid}/action", json={"resize": {"volume": {"size": 2}}})
    assert resp.status_code == 202, resp.text
    inst = plane.wait_status(iid, "ACTIVE", timeout=60)
    assert inst["volume"]["size"] == 2

    assert api.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
