"""``cove up``: the whole control plane on one machine.

It prepares the data directory, starts the embedded bus (unless a transport URL is set),
upgrades the control database, registers what is installed, then runs the API, a task manager
and a conductor as child processes, restarting any that dies. Ctrl-C stops the control plane;
database instances and their guest agents keep running and are re-attached on the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cove.common.service_user import service_user
from cove.common.settings import Settings

LOG = logging.getLogger("cove.up")

SERVICES = ("conductor", "taskmanager", "api")
MAX_QUICK_DEATHS = 5


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0


def prepare_data_dir(settings: Settings) -> None:
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # The service user must be able to enter the data directory to reach its instances.
        data.chmod(0o711)
    for sub in ("log",):
        (data / sub).mkdir(exist_ok=True)


def bootstrap_catalog(settings: Settings) -> list[str]:
    """Migrate the control database, seed flavors, register installed datastore versions."""
    from cove.db.catalog import register_found_versions, seed_flavors
    from cove.db.engine import Database
    from cove.db.migrate import upgrade

    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            seed_flavors(s)
            found = register_found_versions(s)
    finally:
        db.dispose()
    return [f"{f.datastore} {f.version}" for f in found]


def banner(settings: Settings, versions: list[str]) -> str:
    url = f"http://{settings.api_host}:{settings.api_port}"
    found = ", ".join(versions) if versions else "none (install postgresql)"
    bin_dir = Path(sys.executable).parent
    return f"""
Cove is running.
  API:         {url}  (Trove v1.0: {url}/v1.0/<project>/...)
  Data:        {settings.data_dir}
  Datastores:  {found}
  Auth:        {settings.auth_strategy} (development only: the project id in the path is trusted)

Try it in another terminal:
  export PATH="{bin_dir}:$PATH" COVE_URL={url}
  cove flavor list
  cove instance create orders --datastore postgresql --flavor small --size 2 \\
      --database orders --user app:secret --wait
  curl {url}/v1.0/default/instances

Ctrl-C stops the control plane; database instances keep running.
"""


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children = {name: Child(name) for name in SERVICES}
        self._stop = threading.Event()
        self.failed: str | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["COVE_DATA_DIR"] = str(self.settings.data_dir)
        env["COVE_TRANSPORT_URL"] = self.settings.transport_url
        env["COVE_DATABASE_URL"] = self.settings.database_url
        env["COVE_API_PORT"] = str(self.settings.api_port)
        env["COVE_API_HOST"] = self.settings.api_host
        return env

    def _spawn(self, child: Child) -> None:
        log = (self.settings.data_dir / "log" / f"{child.name}.log").open("ab")
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "cove.cli.services", child.name],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        child.started = time.monotonic()
        LOG.info("started %s (pid %d)", child.name, child.proc.pid)

    def run(self) -> int:
        for child in self.children.values():
            self._spawn(child)
        while not self._stop.wait(0.2):
            for child in self.children.values():
                proc = child.proc
                if proc is None or proc.poll() is None:
                    continue
                lived = time.monotonic() - child.started
                child.quick_deaths = child.quick_deaths + 1 if lived < 5 else 0
                log = self.settings.data_dir / "log" / f"{child.name}.log"
                if child.quick_deaths >= MAX_QUICK_DEATHS:
                    self.failed = (
                        f"{child.name} keeps exiting (status {proc.returncode}); see {log}"
                    )
                    LOG.error("%s", self.failed)
                    self._stop.set()
                    break
                LOG.warning(
                    "%s exited with status %s; restarting it (see %s)",
                    child.name,
                    proc.returncode,
                    log,
                )
                time.sleep(min(2.0, 0.2 * 2**child.quick_deaths))
                self._spawn(child)
        self.terminate()
        return 1 if self.failed else 0

    def stop(self) -> None:
        self._stop.set()

    def terminate(self) -> None:
        procs = [c.proc for c in self.children.values() if c.proc and c.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for_api(settings: Settings, timeout: float = 30.0) -> bool:
    import httpx

    url = f"http://{settings.api_host}:{settings.api_port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def up(settings: Settings) -> int:
    """Run the control plane until Ctrl-C or SIGTERM; return the exit status."""
    from cove.cli.embedded_bus import EmbeddedBus

    prepare_data_dir(settings)
    bus: EmbeddedBus | None = None
    if settings.embedded_bus:
        identity = service_user(settings.service_user)
        bus = EmbeddedBus(settings, identity)
        bus.start()
    supervisor = Supervisor(settings)

    def handler(signum: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        versions = bootstrap_catalog(settings)
        waiter = threading.Thread(
            target=lambda: (
                print(banner(settings, versions), flush=True)
                if wait_for_api(settings)
                else LOG.error("the API did not come up; see %s", settings.data_dir / "log")
            ),
            daemon=True,
        )
        waiter.start()
        status = supervisor.run()
    finally:
        if bus is not None:
            bus.stop()
    print("Cove stopped. Database instances keep running; 'make run' re-attaches them.")
    return status
