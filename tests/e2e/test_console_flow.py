"""The web console in a real headless Chromium against a running Cove (``cove_up``): a user
signs in through the identity service (a wrong password refused in its words), is refused an
instance too large with the API's own message, then creates a PostgreSQL instance, restarts
it, backs it up, restores the backup into a new instance (the data comes along) and deletes
both, each step through the page's own controls, found by their accessible names. The
screenshots are checked for what they must show (the refusal's colours, the status's) and
kept in ``COVE_TEST_ARTIFACTS`` for people to look at."""

from __future__ import annotations

import re
from typing import Any

import httpx
import psycopg
import pytest
from browser import VIEWPORT, artifacts, chromium_page, share_of, size_of
from harness import ControlPlane, wait_for
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

APP_PASSWORD = "console-Pass-42"
#: The console's colours (console.css): the refusal's background and text, a good status.
ALERT_PAPER = (0xFB, 0xE9, 0xEA)
DANGER = (0xA3, 0x21, 0x2A)
OK = (0x1D, 0x6B, 0x3A)
LONG = 300_000  # ms: a build, a backup or a restore on a loaded machine


def shot(page: Page, name: str) -> bytes:
    png = page.screenshot(full_page=True)
    (artifacts() / f"console-{name}.png").write_bytes(png)
    width, height = size_of(png)
    assert width == VIEWPORT["width"] and height >= VIEWPORT["height"] // 2
    return png


def sign_in(page: Page, plane: ControlPlane, user: str, password: str, project: str) -> None:
    page.goto(f"{plane.url}/console")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Project").fill(project)
    page.get_by_role("button", name="Sign in").click()


def create(page: Page, name: str, size: int, flavor: str, *, backup: str | None = None) -> None:
    """Fill the create form (opened already) for a tiny PostgreSQL instance and submit it."""
    expect(page.get_by_role("heading", name="Create an instance")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Datastore").select_option("postgresql")
    page.get_by_label("Flavor").select_option(flavor)
    page.get_by_label("Volume size (GB)").fill(str(size))
    if backup is None:
        page.get_by_label("Databases").fill("shop")
        page.get_by_label("User name").fill("app")
        page.get_by_label("Password").fill(APP_PASSWORD)
    else:
        expect(page.get_by_label("Restore from backup")).to_have_value(backup)
    page.get_by_role("button", name="Create instance").click()


def wait_active(page: Page, name: str) -> str:
    """Wait on the instance's page until it is ACTIVE; its id (from the address)."""
    expect(page.get_by_role("heading", name=f"Instance {name}")).to_be_visible(timeout=LONG)
    overview = page.get_by_role("region", name="Overview")
    expect(overview.locator(".status-ACTIVE")).to_be_visible(timeout=LONG)
    return page.url.rsplit("/", 1)[1]


def address(page: Page) -> str:
    text = page.locator("code.conn").inner_text()
    match = re.fullmatch(r"postgresql://USER:PASSWORD@([\d.]+):5432/DATABASE", text)
    assert match, text
    return match.group(1)


def test_the_console_runs_an_instances_life(cove_up: ControlPlane) -> None:
    account = cove_up.account("console", "webuser", "member")
    flavors = account.http.get("/flavors").json()["flavors"]
    (tiny,) = [f["str_id"] for f in flavors if f["name"] == "tiny"]
    with chromium_page() as page:
        # A wrong password: the identity service's own words, in the alert.
        sign_in(page, cove_up, "webuser", "not-the-password", "console")
        alert = page.get_by_role("alert")
        expect(alert).to_have_text("The request you have made requires authentication.")
        sign_in(page, cove_up, "webuser", account.password, "console")
        expect(page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()
        expect(page.get_by_text("No instances yet.")).to_be_visible()
        expect(alert).to_be_hidden()

        # A refused create: the API's message, word for word, shown as a refusal.
        body: dict[str, Any] = {
            "instance": {
                "name": "console-big",
                "flavorRef": tiny,
                "volume": {"size": 11},
                "datastore": {"type": "postgresql"},
            }
        }
        refused = account.http.post("/instances", json=body)
        assert refused.status_code == 413, refused.text
        (fault,) = refused.json().values()
        page.get_by_role("link", name="Create instance").click()
        create(page, "console-big", 11, tiny)
        expect(alert).to_have_text(fault["message"])
        framed = page.locator("#alert").screenshot()
        assert share_of(framed, ALERT_PAPER) > 0.5 and share_of(framed, DANGER, 40) > 0.003
        shot(page, "refused")

        # Create.
        create(page, "console-pg", 1, tiny)
        iid = wait_active(page, "console-pg")
        assert share_of(page.get_by_role("region", name="Overview").screenshot(), OK, 40) > 0
        shot(page, "active")
        host = address(page)
        with psycopg.connect(host=host, user="app", password=APP_PASSWORD, dbname="shop") as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute("INSERT INTO items VALUES (42)")
        # The charts sample the heartbeats while the page is open.
        expect(page.get_by_role("img", name=re.compile(r"^Connections: \d"))).to_be_visible(
            timeout=60_000
        )

        # Restart.
        page.get_by_role("button", name="Restart").click()
        expect(page.get_by_role("status")).to_have_text("Instance console-pg is restarting.")

        def restarted() -> bool:
            events = account.http.get(f"/instances/{iid}/events").json()["events"]
            return any(e["event_type"] == "dbaas.instance_restart.end" for e in events)

        wait_for(restarted, LONG / 1000, 0.5, "the restart to end")
        expect(page.get_by_role("region", name="Overview").locator(".status-ACTIVE")).to_be_visible(
            timeout=LONG
        )

        # Back up.
        page.get_by_label("Backup name").fill("console-bk")
        page.get_by_role("button", name="Back up").click()
        expect(page.get_by_role("status")).to_have_text("Backup console-bk started.")
        page.get_by_role("link", name="Backups", exact=True).click()
        expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible()
        row = page.get_by_role("row").filter(has_text="console-bk")
        expect(row.locator(".status-COMPLETED")).to_be_visible(timeout=LONG)
        shot(page, "backups")
        (backup,) = account.http.get("/backups").json()["backups"]

        # Restore into a new instance: the data comes along.
        page.get_by_role("button", name="Restore backup console-bk").click()
        create(page, "console-restored", 1, tiny, backup=backup["id"])
        restored = wait_active(page, "console-restored")
        assert restored != iid
        with psycopg.connect(
            host=address(page), user="app", password=APP_PASSWORD, dbname="shop"
        ) as conn:
            assert conn.execute("SELECT id FROM items").fetchall() == [(42,)]
        shot(page, "restored")

        # Delete both, from their pages.
        for instance_id, name in ((restored, "console-restored"), (iid, "console-pg")):
            page.goto(f"{cove_up.url}/console#/instances/{instance_id}")
            expect(page.get_by_role("heading", name=f"Instance {name}")).to_be_visible()
            page.get_by_role("button", name="Delete", exact=True).click()
            expect(page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()

        def gone() -> bool:
            answers = [account.http.get(f"/instances/{i}") for i in (iid, restored)]
            return all(a.status_code == 404 for a in answers)

        wait_for(gone, LONG / 1000, 0.5, "both instances deleted")
        expect(page.get_by_text("No instances yet.")).to_be_visible(timeout=30_000)


def test_the_console_is_served_without_a_token_and_locked_down(cove_up: ControlPlane) -> None:
    page = httpx.get(f"{cove_up.url}/console", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{cove_up.url}/console/app.js", timeout=30)
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{cove_up.url}/console/clouds.yaml", timeout=30).status_code == 404


def test_the_console_makes_a_weighted_cluster(cove_up: ControlPlane) -> None:
    """A PostgreSQL cluster of two from the console, the first member weighted 200: the
    members get the weights asked, the page shows them, and the cluster goes with its
    members."""
    account = cove_up.account("console-clusters", "clusteruser", "member")
    with chromium_page() as page:
        sign_in(page, cove_up, "clusteruser", account.password, "console-clusters")
        expect(page.get_by_role("heading", name="Instances", exact=True)).to_be_visible()
        page.get_by_role("link", name="Clusters", exact=True).click()
        page.get_by_role("link", name="Create cluster").click()
        page.get_by_label("Name", exact=True).fill("weighted")
        datastore = page.get_by_label("Datastore")
        (postgresql,) = [
            v
            for v in datastore.locator("option").evaluate_all("os => os.map(o => o.value)")
            if v.startswith("postgresql:")
        ]
        datastore.select_option(postgresql)
        page.get_by_role("button", name="Remove the last member").click()
        weights = page.get_by_label("Weight")
        expect(weights).to_have_count(2)
        weights.first.fill("200")
        page.get_by_role("button", name="Create cluster").click()
        expect(page.get_by_role("heading", name="Cluster weighted")).to_be_visible()
        members = page.get_by_role("table").get_by_role("row")
        expect(members.filter(has_text="ACTIVE")).to_have_count(2, timeout=LONG)
        expect(members.filter(has_text="primary").filter(has_text="200")).to_have_count(1)
        shot(page, "cluster")
        (cluster,) = account.http.get("/clusters").json()["clusters"]
        assert sorted(m["weight"] for m in cluster["instances"]) == [100, 200]
        page.get_by_role("button", name="Delete cluster").click()
        expect(page.get_by_role("heading", name="Clusters", exact=True)).to_be_visible()
        path = f"/clusters/{cluster['id']}"
        wait_for(lambda: account.http.get(path).status_code == 404, LONG / 1000, 0.5, "deleted")
