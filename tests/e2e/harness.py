"""Running Cove as a user would, for end-to-end tests: `cove up`, or the services as separate
processes, in a private data directory and on a free port."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from accounts import add_account, password_auth
from cove.common.metrics import place, remove_directory
from cove.common.settings import load_settings
from cove.compute.firewall import table_name
from servers import free_port, remove_tree

BIN = Path(sys.executable).parent
PROJECT = "e2e"


#: The control planes started and not yet stopped, for :func:`log_marks`.
RUNNING: list[ControlPlane] = []


def log_marks() -> dict[Path, int]:
    """How far each running plane's service logs go now."""
    marks = {}
    for plane in RUNNING:
        for path in plane.log_files():
            with contextlib.suppress(OSError):  # a log rotated or removed since the listing
                marks[path] = path.stat().st_size
    return marks


def warnings_since(marks: dict[Path, int], limit: int = 80) -> str:
    """The WARNING, ERROR and CRITICAL records (with any traceback after them) the running
    planes' services and agents logged since ``marks``, oldest first: the last ``limit``
    lines, for a failed test's report."""
    records: list[tuple[str, str]] = []
    for plane in RUNNING:
        for path in plane.log_files():
            try:
                with path.open("rb") as f:
                    f.seek(marks.get(path, 0))
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            where = path.parent.parent.name if path.name == "guestagent.log" else path.stem
            for line in text.splitlines():
                if line[:4].isdigit():  # a record's first line, "<date> <time> <LEVEL> ..."
                    if line.split(" ", 3)[2:3] in (["WARNING"], ["ERROR"], ["CRITICAL"]):
                        records.append((line[:23], f"[{where}] {line}"))
                    else:
                        records.append((line[:23], ""))
                elif records and records[-1][1]:
                    records[-1] = (records[-1][0], f"{records[-1][1]}\n    {line}")
    lines = "\n".join(text for _when, text in sorted(records) if text).splitlines()
    return "\n".join(lines[-limit:])


class Account:
    """A user holding a role on a project, with an HTTP client whose base is the project's
    API endpoint and which sends the user's token."""

    def __init__(self, plane: ControlPlane, project: str, user: str, role: str) -> None:
        from cove.db.engine import Database

        issuer = plane.identity or plane
        db = Database(issuer.database_url)
        try:
            self.project_id, self.password = add_account(db, project, user, role)
        finally:
            db.dispose()
        self.user = user
        self.token, self.catalog = issuer.authenticate(user, self.password, self.project_id)
        self.http = httpx.Client(
            base_url=f"{plane.url}/v1.0/{self.project_id}",
            timeout=60,
            headers={"X-Auth-Token": self.token},
        )


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ControlPlane:
    """A running Cove control plane and an HTTP client for its API."""

    def __init__(
        self,
        transport_url: str | None = None,
        separate: bool = False,
        fast_heartbeats: bool = True,
        identity: ControlPlane | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """``identity``: another plane whose identity service this one trusts (the
        external-Keystone mode); accounts are then made there."""
        self.base = Path(tempfile.mkdtemp(prefix="cove-e2e-"))
        self.base.chmod(0o755)
        self.data_dir = self.base / "d"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COVE_DATA_DIR": str(self.data_dir),
            "COVE_API_PORT": str(self.port),
            "COVE_MONITOR_INTERVAL": "0.5",
            # Tests poll statuses many times a minute; rate limits have tests of their own.
            "COVE_RATE_LIMIT_PER_MINUTE": "0",
            # A pool of its own, so a Cove running beside the tests is never in the way.
            "COVE_ADDRESS_POOL": f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24",
        }
        if fast_heartbeats:
            # Tests of lost guests wait three heartbeat intervals: keep them short.
            self.env["COVE_HEARTBEAT_INTERVAL"] = "1"
        if transport_url:
            self.env["COVE_TRANSPORT_URL"] = transport_url
        self.identity = identity
        self.env.update(extra_env or {})
        self.separate = separate
        self.procs: list[subprocess.Popen[bytes]] = []
        self.accounts: list[Account] = []
        self.database_url = f"sqlite:///{self.data_dir / 'cove.sqlite'}"

    @property
    def http(self) -> httpx.Client:
        """The client of the first account: a member of project ``e2e``."""
        return self.accounts[0].http

    def account(self, project: str, user: str, role: str = "member") -> Account:
        acct = Account(self, project, user, role)
        self.accounts.append(acct)
        return acct

    def authenticate(self, user: str, password: str, project_id: str) -> tuple[str, Any]:
        resp = httpx.post(
            f"{self.url}/identity/v3/auth/tokens",
            json=password_auth(user, password, project_id),
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        return resp.headers["X-Subject-Token"], resp.json()["token"].get("catalog")

    def _spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.base / f"{Path(argv[0]).name}.log").open("ab")
        proc = subprocess.Popen(
            list(argv), env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> ControlPlane:
        if self.separate:
            subprocess.run(
                [str(BIN / "cove-manage"), "db", "upgrade"],
                env=self.env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            for name in ("cove-conductor", "cove-taskmanager", "cove-api"):
                self._spawn(str(BIN / name))
        else:
            self._spawn(str(BIN / "cove"), "up")
        wait_for(self._api_up, 60, 0.1, "the API")
        if self not in RUNNING:
            RUNNING.append(self)
        if self.accounts:
            pass  # a restart: the accounts and their tokens carry over
        elif self.identity is None:
            self.account(PROJECT, "e2e-member", "member")
        else:  # the identity plane has its own e2e member: do not touch it
            self.account(f"{PROJECT}-{self.port}", f"e2e-member-{self.port}", "member")
        return self

    def _api_up(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited early: {self.logs()}")
        try:
            return httpx.get(self.url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_files(self) -> list[Path]:
        """The services' and guest agents' own logs (not the database servers')."""
        return (
            sorted(self.base.glob("*.log"))
            + sorted((self.data_dir / "log").glob("*.log"))
            + sorted((self.data_dir / "instances").glob("*/log/guestagent.log"))
        )

    def logs(self) -> str:
        out = []
        for path in sorted(self.base.glob("*.log")) + sorted((self.data_dir / "log").glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        for path in sorted((self.data_dir / "instances").glob("*/log/*.log")):
            out.append(f"--- {path}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        for acct in self.accounts:

            def gone(a: Account = acct) -> bool:
                # Asked again each time: a replica source is deleted once its replicas are.
                left = a.http.get("/instances").json().get("instances")
                for inst in left or []:
                    a.http.delete(f"/instances/{inst['id']}")
                return not left

            try:
                wait_for(gone, 120, 1.0, "instances to be deleted")
            except Exception as exc:  # best effort; leftovers are killed below
                print(f"cleaning up instances through the API failed: {exc}", file=sys.stderr)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for acct in self.accounts:
            acct.http.close()
        _kill_leftovers(self.data_dir)
        if self in RUNNING:
            RUNNING.remove(self)
        # A plane whose instances outlived it leaves its filter on the host (as it would for
        # instances that run on); a test's must go with it.
        if os.geteuid() == 0 and shutil.which("nft"):
            table = table_name(self.data_dir.resolve())
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
        # The services' metrics, on the memory filesystem (cove up removes them itself).
        with contextlib.suppress(OSError):
            remove_directory(place(load_settings(data_dir=self.data_dir)))
        remove_tree(self.base)

    # -- API helpers -------------------------------------------------------------------------

    def instance(self, instance_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/instances/{instance_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()["instance"]  # type: ignore[no-any-return]

    def wait_status(self, instance_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            inst = self.instance(instance_id)
            if inst["status"] == "ERROR" and status != "ERROR":
                raise AssertionError(f"instance went to ERROR: {inst.get('fault')}\n{self.logs()}")
            return inst if inst["status"] == status else None

        try:
            return wait_for(check, timeout, 0.1, f"status {status}")  # type: ignore[no-any-return]
        except AssertionError as exc:
            last = self.instance(instance_id)
            raise AssertionError(f"{exc}; last seen {last}\n{self.logs()}") from None

    def create(self, **spec: Any) -> dict[str, Any]:
        body = {
            "name": "e2e",
            "flavorRef": "1",
            "volume": {"size": 1},
            "datastore": {"type": "postgresql"},
            **spec,
        }
        resp = self.http.post("/instances", json={"instance": body})
        assert resp.status_code == 200, resp.text
        return resp.json()["instance"]  # type: ignore[no-any-return]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _kill_leftovers(data_dir: Path) -> None:
    for line in processes_mentioning(str(data_dir)):
        pid = int(line.split(":")[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def delete_clusters(http: httpx.Client, timeout: float = 180) -> None:
    """Delete every cluster of the client's project and wait until they are gone, as far as
    ``timeout`` allows: a test that failed leaves its cluster, whose members would load the
    machine for every later test. Never raises (it runs while a failure unwinds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            left = http.get("/clusters").json().get("clusters") or []
            if not left:
                return
            for cluster in left:
                if cluster["task"]["name"] != "DELETING":
                    http.delete(f"/clusters/{cluster['id']}")
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(1)
