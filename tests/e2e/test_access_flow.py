"""Who may connect to an instance (Trove's ``access``), enforced by the host: a client bound to
a source address inside ``allowed_cidrs`` logs in, one outside has its connection refused
before the server sees it; ``is_public`` publishes the instance on the host's public address,
on the port its view shows, and unpublishing takes the port away; every change is made by
``PUT /instances/{id}`` on a running instance, and the filter goes with the instance."""

from __future__ import annotations

import random
import subprocess
from typing import Any

import pymysql
import pytest
from harness import ControlPlane, wait_for

from cove.compute import firewall

pytestmark = pytest.mark.e2e

PASSWORD = "app-Secret-1"


def login(host: str, port: int, source: str) -> str:
    """``ok`` when the app user logs in from ``source``, ``refused`` when the host refuses the
    connection (MariaDB's 2003 with the kernel's ECONNREFUSED), the error otherwise."""
    try:
        conn = pymysql.connect(
            host=host,
            port=port,
            user="app",
            password=PASSWORD,
            database="d",
            bind_address=source,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as exc:
        code, message = exc.args[0], str(exc.args[1])
        return "refused" if code == 2003 and "Connection refused" in message else str(exc)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    return "ok"


def published(inst: dict[str, Any]) -> tuple[str, int] | None:
    """Where the view says the instance is published."""
    for entry in inst.get("addresses", []):
        if entry["type"] == "public":
            return str(entry["address"]), int(entry["port"])
    return None


def test_allowed_cidrs_and_is_public_are_enforced_by_the_host(cove_up: ControlPlane) -> None:
    found, why = firewall.detect(cove_up.data_dir)
    if found is None:
        pytest.skip(f"the host cannot filter here: {why}")
    plane, api = cove_up, cove_up.http
    net = random.randint(0, 255)
    inside, outside = f"127.77.{net}.5", f"127.78.{net}.5"
    spec = {
        "name": "guarded",
        "datastore": {"type": "mariadb"},
        "databases": [{"name": "d"}],
        "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "d"}]}],
        "access": {"is_public": False, "allowed_cidrs": [f"127.77.{net}.0/24"]},
    }
    iid = plane.create(**spec)["id"]
    try:
        inst = plane.wait_status(iid, "ACTIVE", timeout=180)
        assert inst["access"] == {"is_public": False, "allowed_cidrs": [f"127.77.{net}.0/24"]}
        host, port = inst["ip"][0], 3306
        wait_for(lambda: login(host, port, outside) == "refused", 30, 0.1, "the filter")
        assert login(host, port, inside) == "ok"

        def put(access: dict[str, Any]) -> None:
            resp = api.put(f"/instances/{iid}", json={"instance": {"access": access}})
            assert resp.status_code == 202, resp.text

        # Published: the view shows the port on the public address, under the same rule.
        put({"is_public": True})
        public, shown = wait_for(lambda: published(plane.instance(iid)), 30, 0.1, "a port")
        assert public == "127.0.0.1"  # the default public_address
        assert plane.instance(iid)["access"]["is_public"] is True
        wait_for(lambda: login(public, shown, inside) == "ok", 30, 0.1, "the published port")
        assert login(public, shown, outside) == "refused"
        assert login(host, port, outside) == "refused"

        # Every address let in, through the instance's own address and the public one.
        put({"allowed_cidrs": ["0.0.0.0/0"]})
        wait_for(lambda: login(host, port, outside) == "ok", 30, 0.1, "the filter lifted")
        assert login(public, shown, outside) == "ok"

        # Unpublished: the port is gone from the view and from the host.
        put({"is_public": False})
        wait_for(lambda: published(plane.instance(iid)) is None, 30, 0.1, "unpublished")
        wait_for(lambda: login(public, shown, inside) == "refused", 30, 0.1, "the port closed")
        assert login(host, port, outside) == "ok"

        # Narrowed again, then deleted: the host's filter goes with the instance.
        put({"allowed_cidrs": [f"127.77.{net}.0/24"]})
        wait_for(lambda: login(host, port, outside) == "refused", 30, 0.1, "the filter again")
        assert table_exists(found.table)
    finally:
        api.delete(f"/instances/{iid}")
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "deletion")
    wait_for(lambda: not table_exists(found.table), 30, 0.1, "the filter removed")


def table_exists(name: str) -> bool:
    done = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, check=False)
    return done.returncode == 0
