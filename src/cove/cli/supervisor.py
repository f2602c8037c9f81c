"""The processes of ``cove up``: the embedded bus and the API, task manager and conductor.

:class:`Supervisor` owns them and nothing else (no settings files, no control database). Used
as a context manager, it starts the embedded bus on entry (unless ``transport_url`` names
another bus) and stops it on exit, whatever happened in between. :meth:`Supervisor.run` starts
the children (``python -m cove.cli.services <name>``, each in a session of its own, writing to
``<data>/log/<name>.log``), restarts any that exits, and returns once :meth:`Supervisor.stop`
is called (by SIGINT or SIGTERM after :meth:`Supervisor.stop_on_signals`): 0, or 1 when a child
exited :data:`MAX_QUICK_DEATHS` times in a row within 5 seconds of its start. Whichever way it
returns or raises, the children are gone by then (SIGTERM, SIGKILL after 15 seconds).

Raises: entering raises ``ConfigurationError`` (redis-server missing, another bus already
answering on the socket) or ``ServiceUnavailable`` (the bus does not come up), and as root
whatever creating the service user raises; it leaves no bus running when it raises.
:meth:`Supervisor.run` propagates ``OSError`` from starting a child, after stopping the others.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cove.cli.embedded_bus import EmbeddedBus
from cove.common.service_user import service_user
from cove.common.settings import Settings

LOG = logging.getLogger("cove.up")

#: The children, in the order they are started.
SERVICES = ("conductor", "taskmanager", "api")
#: How many quick exits in a row (each within 5 seconds of its start) end ``cove up``.
MAX_QUICK_DEATHS = 5


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children = {name: Child(name) for name in SERVICES}
        self.bus: EmbeddedBus | None = None
        self._stop = threading.Event()
        self.failed: str | None = None

    def __enter__(self) -> Supervisor:
        self.start_bus()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_bus()

    def start_bus(self) -> None:
        """Start the embedded bus as the service user, if the settings want one."""
        if not self.settings.embedded_bus:
            return
        identity = service_user(self.settings.service_user)
        self.bus = EmbeddedBus(self.settings, identity)
        try:
            self.bus.start()
        except BaseException:
            # Ctrl-C is still a KeyboardInterrupt here: the redis-server must not outlive it.
            self.bus.stop()
            raise

    def stop_bus(self) -> None:
        if self.bus is not None:
            self.bus.stop()

    def stop_on_signals(self) -> None:
        """Make SIGINT (Ctrl-C) and SIGTERM call :meth:`stop`. Call from the main thread."""

        def handler(signum: int, _frame: object) -> None:
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def when_api_answers(self, announce: Callable[[], None]) -> None:
        """Call ``announce`` in a daemon thread once the API answers; log an error instead if
        it does not within 30 seconds."""

        def wait() -> None:
            if wait_for_api(self.settings):
                announce()
            else:
                LOG.error("the API did not come up; see %s", self.settings.data_dir / "log")

        threading.Thread(target=wait, daemon=True).start()

    def run(self) -> int:
        """Start the children and keep them running until :meth:`stop`; 1 if one kept
        exiting, else 0."""
        try:
            for child in self.children.values():
                self._spawn(child)
            while not self._stop.wait(0.2):
                self._check()
        finally:
            self.terminate()
        return 1 if self.failed else 0

    def stop(self) -> None:
        """Make :meth:`run` stop the children and return; safe from a signal handler."""
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

    def _check(self) -> None:
        """Restart the children that exited, until one keeps exiting."""
        for child in self.children.values():
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            if not self._restart(child, proc.returncode):
                break

    def _restart(self, child: Child, status: int) -> bool:
        """Start an exited child again after a back-off; False, and stop everything, when it
        keeps exiting."""
        lived = time.monotonic() - child.started
        child.quick_deaths = child.quick_deaths + 1 if lived < 5 else 0
        log = self._log_file(child)
        if child.quick_deaths >= MAX_QUICK_DEATHS:
            self.failed = f"{child.name} keeps exiting (status {status}); see {log}"
            LOG.error("%s", self.failed)
            self._stop.set()
            return False
        LOG.warning(
            "%s exited with status %s; restarting it (see %s)",
            child.name,
            status,
            log,
        )
        time.sleep(min(2.0, 0.2 * 2**child.quick_deaths))
        self._spawn(child)
        return True

    def _log_file(self, child: Child) -> Path:
        return self.settings.data_dir / "log" / f"{child.name}.log"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["COVE_DATA_DIR"] = str(self.settings.data_dir)
        env["COVE_TRANSPORT_URL"] = self.settings.transport_url
        env["COVE_DATABASE_URL"] = self.settings.database_url
        env["COVE_API_PORT"] = str(self.settings.api_port)
        env["COVE_API_HOST"] = self.settings.api_host
        return env

    def _spawn(self, child: Child) -> None:
        log = self._log_file(child).open("ab")
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


def wait_for_api(settings: Settings, timeout: float = 30.0) -> bool:
    """Whether the API answers ``GET /`` with 200 within ``timeout`` seconds."""
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
