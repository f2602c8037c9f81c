"""The agent's readiness answer to a load balancer's checks (cove.guestagent.readiness)."""

from __future__ import annotations

import socket

import httpx

from cove.guestagent.readiness import Readiness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_it_answers_what_the_probe_says_and_a_failing_probe_is_a_no() -> None:
    answers = [True, False]

    def probe() -> bool:
        if not answers:
            raise RuntimeError("the server does not answer")
        return answers.pop(0)

    port = free_port()
    readiness = Readiness("127.0.0.1", port, probe)
    readiness.start()
    readiness.start()  # idempotent
    try:
        url = f"http://127.0.0.1:{port}/"
        assert httpx.get(url).status_code == 200
        assert httpx.get(url).status_code == 503
        assert httpx.get(url).status_code == 503
    finally:
        readiness.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_is_logged_not_raised() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        readiness = Readiness("127.0.0.1", taken.getsockname()[1], lambda: True)
        readiness.start()
        readiness.stop()
