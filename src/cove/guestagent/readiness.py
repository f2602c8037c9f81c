"""A tiny HTTP answer to "may clients be sent here?", for a load balancer's health checks.

HAProxy's checks of a cluster's members ask ``GET /`` on the member's own address
(``domain.clusters.CHECK_PORT``): 200 while the probe says the server takes queries, 503
otherwise. A TCP check alone would send clients to a server whose port is open but that
refuses queries (a Galera member catching up, or cut off from the majority).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger(__name__)


class Readiness:
    """Answers checks on ``address``:``port`` from a daemon thread, until :meth:`stop`."""

    def __init__(self, address: str, port: int, probe: Callable[[], bool]) -> None:
        self.address = address
        self.port = port
        self.probe = probe
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start answering (idempotent). A port taken by something else is logged, not
        raised: the member then fails its checks and stays out of the rotation."""
        with self._lock:
            if self._server is not None:
                return
            probe = self.probe

            class Handler(BaseHTTPRequestHandler):
                def do_GET(self) -> None:
                    try:
                        ready = probe()
                    except Exception:  # a failing probe is a "no", never a dead thread
                        LOG.exception("the readiness probe failed")
                        ready = False
                    body = b"ready\n" if ready else b"not ready\n"
                    self.send_response(200 if ready else 503)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, format: str, *args: object) -> None:
                    return  # one check a second: not worth a line each

            try:
                server = ThreadingHTTPServer((self.address, self.port), Handler)
            except OSError as exc:
                LOG.error(
                    "cannot answer readiness checks on %s:%d: %s", self.address, self.port, exc
                )
                return
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True, name="readiness").start()
            self._server = server
            LOG.info("answering readiness checks on %s:%d", self.address, self.port)

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
