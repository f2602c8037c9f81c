"""The processes of ``cove up``: the embedded bus and the API, task manager and conductor.

:class:`Supervisor` owns them and nothing else (no settings files, no control database). Used
as a context manager, it starts the embedded bus on entry (unless ``transport_url`` names
another bus) and stops it on exit, whatever happened in between. :meth:`Supervisor.run` starts
the children (``python -m cove.cli.services <name>``, each in a session of its own, writing to
``<data>/log/<name>.log``) and keeps everything running until :meth:`Supervisor.stop` is called
(by SIGINT or SIGTERM after :meth:`Supervisor.stop_on_signals`), then returns 0:

* a child that exits is started again; one that keeps exiting soon after its start waits longer
  each time (:func:`backoff`, up to a minute) and is reported at ERROR level with its log, but
  never takes the others down: the API keeps serving reads while a task manager crash-loops;
* the embedded bus is watched the same way: a bus server that died is started again at once on
  the same socket (and with growing pauses if it keeps dying), and every service and guest
  agent reconnects by itself (cove.rpc). The bus keeps nothing on disk: what a message carried
  that must not be lost is recorded in the control database first (cove.taskmanager.leases).

Whichever way it returns or raises, the children are gone by then (SIGTERM, SIGKILL after 15
seconds).

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
from cove.common.errors import CoveError
from cove.common.metrics import empty_directory, place, remove_directory
from cove.common.service_user import service_user
from cove.common.settings import Settings

LOG = logging.getLogger("cove.up")

#: The children, in the order they are started.
SERVICES = ("conductor", "taskmanager", "api")
#: A process that lived less than this many seconds died "quickly": its next start waits longer.
QUICK = 5.0
#: The longest wait before starting again a process that keeps dying.
MAX_BACKOFF = 60.0
#: From this many quick deaths in a row on, each restart is reported at ERROR level.
LOUD_AFTER = 3


def backoff(quick_deaths: int) -> float:
    """Seconds to wait before starting again a process that died ``quick_deaths`` times in a
    row soon after its start: none for the first death (a one-off crash or an operator's kill
    costs nothing), then 0.2 s doubling up to :data:`MAX_BACKOFF`."""
    if quick_deaths <= 1:
        return 0.0
    return float(min(MAX_BACKOFF, 0.2 * 2 ** (quick_deaths - 2)))


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    #: When (monotonic) an exited child is to be started again; 0 while it runs.
    due: float = 0.0

    def exited(self, now: float) -> float:
        """Count an exit at ``now``; the pause before the next start."""
        self.quick_deaths = self.quick_deaths + 1 if now - self.started < QUICK else 1
        pause = backoff(self.quick_deaths)
        self.due = now + pause
        return pause


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children = {name: Child(name) for name in SERVICES}
        self.bus: EmbeddedBus | None = None
        self._bus_child = Child("bus")
        self._stop = threading.Event()

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
        self._bus_child.started = time.monotonic()

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
        """Start the children and keep them (and the bus) running until :meth:`stop`."""
        self._forget_metrics()
        try:
            for child in self.children.values():
                self._spawn(child)
            while not self._stop.wait(0.05):
                self._check_bus()
                self._check()
        finally:
            self.terminate()
            self._forget_metrics(gone=True)
        return 0

    def _forget_metrics(self, gone: bool = False) -> None:
        """A new run's metrics count from zero; the children started again within it keep
        adding to theirs (``cove.common.metrics``). Once the children are ``gone``, their
        directory goes too (it may be on the memory filesystem)."""
        if self.settings.metrics:
            directory = place(self.settings)
            try:
                (remove_directory if gone else empty_directory)(directory)
            except OSError as exc:
                LOG.warning("cannot empty the metrics directory: %s", exc)

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
        """Start again the children that exited, each when its pause is over."""
        now = time.monotonic()
        for child in self.children.values():
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            if not child.due:
                self._report(child, f"exited with status {proc.returncode}", child.exited(now))
            if now >= child.due:
                try:
                    self._spawn(child)
                except OSError as exc:
                    # A fork refused under load, a full disk: try again later, as for a death.
                    child.started = now
                    self._report(child, f"could not be started ({exc})", child.exited(now))

    def _check_bus(self) -> None:
        """Start the embedded bus again if its server died."""
        bus, child = self.bus, self._bus_child
        if bus is None or bus.running():
            return
        now = time.monotonic()
        if not child.due:
            self._report(child, "died", child.exited(now))
        if now < child.due:
            return
        # A start that fails counts as a quick death: the pauses grow while it keeps failing.
        child.started = now
        try:
            bus.start()
        except (CoveError, OSError) as exc:
            # Another try after a longer pause; the services keep retrying meanwhile.
            reason = exc.message if isinstance(exc, CoveError) else str(exc)
            self._report(child, f"did not start again ({reason})", child.exited(time.monotonic()))
            return
        child.due, child.started = 0.0, time.monotonic()
        LOG.warning("the embedded bus is back on %s", bus.socket)

    def _report(self, child: Child, what: str, pause: float) -> None:
        log = self._log_file(child) if child.name != "bus" else self.settings.data_dir / "bus"
        if child.quick_deaths >= LOUD_AFTER:
            LOG.error(
                "%s %s; it keeps dying (%d times in a row within %g s of its start): "
                "starting it again in %.1f s (see %s)",
                child.name,
                what,
                child.quick_deaths,
                QUICK,
                pause,
                log,
            )
        else:
            LOG.warning("%s %s; starting it again (see %s)", child.name, what, log)

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
        child.started, child.due = time.monotonic(), 0.0
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
