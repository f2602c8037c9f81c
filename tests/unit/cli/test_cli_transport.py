"""The command's own HTTP client against a real HTTP server on loopback: URLs, bodies, kept-alive
connections, and each way a request can fail."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cove.cli.user.transport import Failed, LightClient, TimedOut, Unreachable


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Handler.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "type": self.headers.get("Content-Type"),
                "token": self.headers.get("X-Auth-Token"),
                "port": self.client_address[1],
            }
        )
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        if self.path.startswith("/hangup"):
            self.close_connection = True
            return
        out = json.dumps({"path": self.path}).encode()
        self.send_response(404 if self.path.endswith("/missing") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Subject-Token", "tok")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_paths_params_bodies_and_one_kept_alive_connection(server: str) -> None:
    client = LightClient(f"{server}/v1.0/p", 5, {"X-Auth-Token": "t1"}, True)
    try:
        first = client.request("GET", "instances", params={"limit": "1", "marker": "a b"})
        client.headers["X-Auth-Token"] = "t2"
        second = client.request("POST", "instances/x/action", json={"restart": {}})
        absolute = client.request("GET", f"{server}/identity/v3/projects?name=x")
        missing = client.request("DELETE", "/missing")  # below the base, as any path
    finally:
        client.close()
    assert (first.status_code, first.json()) == (
        200,
        {"path": "/v1.0/p/instances?limit=1&marker=a+b"},
    )
    assert first.headers.get("x-subject-token") == "tok" and not first.is_error
    assert second.json()["path"] == "/v1.0/p/instances/x/action"
    assert absolute.json()["path"] == "/identity/v3/projects?name=x"
    assert missing.is_error and missing.status_code == 404 and missing.reason_phrase == "Not Found"
    assert json.loads(missing.text) == {"path": "/v1.0/p/missing"}
    posted = Handler.seen[1]
    assert (posted["body"], posted["type"]) == (b'{"restart": {}}', "application/json")
    assert [s["token"] for s in Handler.seen[:2]] == ["t1", "t2"]
    assert len({s["port"] for s in Handler.seen}) == 1  # one connection for all four


def test_a_connection_the_server_let_go_is_made_again(server: str) -> None:
    client = LightClient(server, 5, {}, True)
    try:
        assert client.request("GET", "a").status_code == 200
        with pytest.raises(Failed):
            client.request("GET", "hangup")  # a fresh connection closed without an answer
        assert client.request("GET", "b").status_code == 200
    finally:
        client.close()


def test_refused_and_timed_out(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(Unreachable):
        LightClient(f"http://127.0.0.1:{port}", 2, {}, True).request("GET", "x")
    slow = LightClient(server, 0.3, {}, True)
    with pytest.raises(TimedOut):
        slow.request("GET", "slow")
    slow.close()


def test_a_post_after_the_server_let_an_idle_connection_go_goes_on_a_new_one(server: str) -> None:
    client = LightClient(server, 5, {}, True)
    try:
        assert client.request("GET", "a").status_code == 200
        conn = next(iter(client._connections.values()))
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RD)  # as if the server had closed it while idle
        sent = client.request("POST", "b", json={"x": 1})
        assert sent.status_code == 200
    finally:
        client.close()
    assert [s["method"] for s in Handler.seen] == ["GET", "POST"]  # the POST went once
    assert Handler.seen[0]["port"] != Handler.seen[1]["port"]


def test_a_proxy_from_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test server answers whatever it is asked, so it stands for the proxy: a request through
    # a proxy names the whole URL.
    monkeypatch.setenv("http_proxy", server)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = LightClient("http://cove.example:8779/v1.0/p", 5, {}, True)
    try:
        answer = client.request("GET", "instances", params={"limit": "2"})
    finally:
        client.close()
    assert answer.json()["path"] == "http://cove.example:8779/v1.0/p/instances?limit=2"
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = LightClient(server, 5, {}, True)
    try:
        assert direct.request("GET", "x").json()["path"] == "/x"  # not through the proxy
    finally:
        direct.close()


def test_a_ca_bundle_that_cannot_be_read(tmp_path: Any) -> None:
    client = LightClient("https://127.0.0.1:1", 2, {}, str(tmp_path / "missing.pem"))
    with pytest.raises(Failed, match="cannot read the CA bundle"):
        client.request("GET", "x")
