"""A webhook receiver for the tests: what Cove POSTs to an operator's URL, kept."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What the webhook requests of the e2e tests' ``cove_rabbit`` are signed with.
EVENT_SECRET = "e2e-hook-Secret"


class Receiver:
    """An HTTP server on loopback that keeps the bodies POSTed to it, with their headers;
    the first ``failing`` requests are answered 503."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.failing = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    fail = receiver.failing > 0
                    receiver.failing -= 1 if fail else 0
                    if not fail:
                        receiver.got.append((dict(self.headers), body))
                self.send_response(503 if fail else 204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            assert time.monotonic() < deadline, f"{len(self.got)} of {count} arrived"
            time.sleep(0.02)

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
