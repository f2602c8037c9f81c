"""Configuration groups on each datastore, read back from the running server: a dynamic value
is in effect when the request that attached, changed or detached its group is answered (read
at once, without waiting), a static one leaves the instance RESTART_REQUIRED until it is
restarted; detaching puts the flavor's defaults back."""

from __future__ import annotations

from typing import Any

import pytest
from datastores import DATASTORES, Datastore
from harness import ControlPlane, wait_for

pytestmark = pytest.mark.e2e

#: Per datastore: a dynamic parameter, the value set and how the server reports it; then the
#: same for a static one (the server takes it only at start).
CASES: dict[str, tuple[str, Any, str, str, Any, str]] = {
    "postgresql": ("random_page_cost", 1.5, "1.5", "max_prepared_transactions", 7, "7"),
    "mariadb": ("max_connect_errors", 4321, "4321", "innodb_log_buffer_size", 33554432, "33554432"),
    "redis": ("maxmemory-policy", "allkeys-lru", "allkeys-lru", "databases", 4, "4"),
}
#: Per datastore: another value of the dynamic parameter and how the server reports it.
CHANGED: dict[str, tuple[Any, str]] = {
    "postgresql": (2.5, "2.5"),
    "mariadb": (5432, "5432"),
    "redis": ("volatile-lru", "volatile-lru"),
}


@pytest.fixture(params=sorted(DATASTORES))
def datastore(request: pytest.FixtureRequest) -> Datastore:
    return DATASTORES[request.param]


def test_configuration_group(cove_up: ControlPlane, datastore: Datastore) -> None:
    plane, ds, api = cove_up, datastore, cove_up.http
    dynamic, dyn_value, dyn_shown, static, st_value, st_shown = CASES[ds.name]
    version = api.get(f"/datastores/{ds.name}/versions").json()["versions"][0]["name"]

    # The catalogue was read from the server: it knows which parameter needs a restart.
    params_url = f"/datastores/{ds.name}/versions/{version}/parameters"
    params = {p["name"]: p for p in api.get(params_url).json()["configuration-parameters"]}
    assert params[dynamic]["restart_required"] is False
    assert params[static]["restart_required"] is True
    assert api.get(f"{params_url}/{static}").json()["name"] == static
    for forbidden in ("port", "bind", "datadir", "data_directory", "dir"):
        assert forbidden not in params

    where = {"type": ds.name, "version": version}
    bad = {"name": "bad", "values": {"port": 1}, "datastore": where}
    resp = api.post("/configurations", json={"configuration": bad})
    assert resp.status_code == 422, resp.text
    assert "not supported" in resp.json()["unprocessableEntity"]["message"]

    iid = plane.create(name=f"tuned-{ds.name}", datastore={"type": ds.name})["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    instance_dir = plane.data_dir / "instances" / iid
    root = api.post(f"/instances/{iid}/root").json()["user"]["password"]

    def shown(name: str) -> str:
        conn = ds.settings_session(instance_dir, inst, root)
        try:
            return ds.setting(conn, name)
        finally:
            conn.close()

    before_dynamic, before_static = shown(dynamic), shown(static)
    assert (before_dynamic, before_static) != (dyn_shown, st_shown)

    values = {dynamic: dyn_value, static: st_value}
    group = {"name": f"{ds.name}-tuning", "values": values, "datastore": where}
    resp = api.post("/configurations", json={"configuration": group})
    assert resp.status_code == 200, resp.text
    gid = resp.json()["configuration"]["id"]

    resp = api.put(f"/instances/{iid}", json={"instance": {"configuration": gid}})
    assert resp.status_code == 202, resp.text
    # The dynamic value is in effect when the answer comes; the static one waits for the
    # restart.
    assert shown(dynamic) == dyn_shown
    assert shown(static) == before_static
    plane.wait_status(iid, "RESTART_REQUIRED", timeout=60)
    assert plane.instance(iid)["configuration"]["id"] == gid
    assert [i["id"] for i in api.get(f"/configurations/{gid}/instances").json()["instances"]] == [
        iid
    ]
    effective = api.get(f"/instances/{iid}/configuration").json()["instance"]["configuration"]
    assert str(effective[dynamic]) == dyn_shown and str(effective[static]) == st_shown

    assert api.post(f"/instances/{iid}/action", json={"restart": {}}).status_code == 202
    wait_for(
        lambda: plane.instance(iid)["status"] == "ACTIVE" and shown(static) == st_shown,
        90,
        0.2,
        "the static value in effect after the restart",
    )
    assert shown(dynamic) == dyn_shown

    # A change of the group reaches the server before its answer, as Trove's does.
    new_value, new_shown = CHANGED[ds.name]
    resp = api.patch(
        f"/configurations/{gid}", json={"configuration": {"values": {dynamic: new_value}}}
    )
    assert resp.status_code == 200, resp.text
    assert shown(dynamic) == new_shown
    assert shown(static) == st_shown

    # A group in use cannot be deleted; detached, the flavor's defaults come back.
    assert api.delete(f"/configurations/{gid}").status_code == 400
    resp = api.put(f"/instances/{iid}", json={"instance": {"configuration": None}})
    assert resp.status_code == 202, resp.text
    assert shown(dynamic) == before_dynamic
    plane.wait_status(iid, "RESTART_REQUIRED", timeout=60)
    assert "configuration" not in plane.instance(iid)
    assert api.delete(f"/configurations/{gid}").status_code == 202

    assert api.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
