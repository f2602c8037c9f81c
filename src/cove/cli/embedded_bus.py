"""The embedded message bus: a private Redis server on a unix socket in the data directory,
supervised by ``cove up`` (which starts it again when it dies). It runs as the service user so
guest agents can reach its socket.

It keeps nothing on disk: no snapshot, no append-only file. Messages are in flight only; what
must survive a bus that died (a task the API accepted) is recorded in the control database
before it is cast, and a snapshot replayed at a restart would only bring back stale casts, or
passwords that were on their way to a guest."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cove.common.errors import ConfigurationError, ServiceUnavailable
from cove.common.service_user import ServiceUser
from cove.common.settings import Settings

LOG = logging.getLogger(__name__)


class EmbeddedBus:
    def __init__(self, settings: Settings, identity: ServiceUser) -> None:
        self.settings = settings
        self.socket = settings.bus_socket
        self.dir = settings.data_dir / "bus"
        self.identity = identity
        self.uid, self.gid = identity.uid, identity.gid
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        return "\n".join(
            [
                "port 0",
                f"unixsocket {self.socket}",
                # Every instance's user is in the service user's group (common/service_user.py).
                f"unixsocketperm {'770' if self.identity.switch else '700'}",
                f"dir {self.dir}",
                'save ""',
                "appendonly no",
                "daemonize no",
                f"logfile {self.dir / 'bus.log'}",
                "protected-mode yes",
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers.

        Raises ConfigurationError when redis-server is missing, ServiceUnavailable when it does
        not come up.
        """
        binary = shutil.which(self.settings.redis_server)
        if binary is None:
            raise ConfigurationError(
                f"'{self.settings.redis_server}' was not found: install redis-server "
                "('make run' does) or set COVE_TRANSPORT_URL to an existing bus"
            )
        for path, mode in (
            (self.socket.parent, 0o750 if self.identity.switch else 0o700),
            (self.dir, 0o700),
        ):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self.uid, self.gid)
            path.chmod(mode)
        if self.socket.exists() and _answers(self.socket):
            raise ConfigurationError(
                f"a bus is already running on {self.socket}: is another 'cove up' using "
                f"{self.settings.data_dir}?"
            )
        # A snapshot an earlier version of Cove left would be loaded at start: see above.
        (self.dir / "bus.rdb").unlink(missing_ok=True)
        conf = self.dir / "bus.conf"
        conf.write_text(self._config())
        os.chown(conf, self.uid, self.gid)
        self.proc = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=self.identity.popen_user,
            group=self.identity.popen_group,
            extra_groups=self.identity.popen_extra_groups,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceUnavailable(
                    f"the embedded bus exited at start (see {self.dir / 'bus.log'})"
                )
            if _answers(self.socket):
                LOG.info("embedded bus listening on %s", self.socket)
                return
            time.sleep(0.02)
        self.stop()
        raise ServiceUnavailable("the embedded bus did not start in time")

    def running(self) -> bool:
        """Whether the server started last is still alive (not whether it answers)."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _answers(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        sock.connect(str(path))
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False
