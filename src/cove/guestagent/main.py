"""The guest agent program: one per instance, beside its database server.

It holds an exclusive lock on ``run/guestagent.lock`` for as long as it lives; the compute
driver tells a live agent from a dead one by that lock, so no pid file can go stale.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from cove.common.errors import CoveError
from cove.common.log import setup_logging
from cove.domain.guest import GuestSettings
from cove.guestagent.config import load_settings
from cove.guestagent.datastores import load_manager

LOG = logging.getLogger("cove.guestagent")

LOCK_NAME = "guestagent.lock"
#: How long heartbeats wait for the agent's server to consume at start.
STARTUP_WAIT = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cove-guestagent")
    parser.add_argument("--config", required=True, type=Path, help="the instance's guest.json")
    args = parser.parse_args(argv)
    setup_logging("guestagent")
    try:
        config = load_settings(args.config)
    except CoveError as exc:
        print(f"cove-guestagent: {exc.message}", file=sys.stderr)
        return 2
    if config.log_format == "json":
        setup_logging("guestagent", fmt="json")
    elif config.log_format != "text":
        LOG.warning("unknown log format %r: writing text", config.log_format[:20])
    os.umask(0o077)
    lock = (config.run_dir / LOCK_NAME).open("a+")
    # The compute driver probes the lock for an instant to see whether an agent lives, so a
    # failed try is retried briefly before concluding that another agent holds it.
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                LOG.info("another guest agent already serves instance %s", config.instance_id)
                return 0
            time.sleep(0.05)
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return run(config)


def run(config: GuestSettings) -> int:
    manager = load_manager(config)
    parts: dict[str, Any] = {}

    def _shutdown() -> None:
        if "service" in parts:
            parts["service"].stop()
        try:
            manager.stop()
        finally:
            if "server" in parts:
                parts["server"].stop()

    stopping = threading.Event()

    def _terminate(signum: int, _frame: FrameType | None) -> None:
        LOG.info("stopping on signal %d", signum)
        stopping.set()
        threading.Thread(target=_shutdown, daemon=True).start()

    # Before anything starts a server: a stop request must always stop what was started.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    if not manager.prepared:
        # A new instance: get the server going while the bus client loads and connects.
        threading.Thread(target=manager.warm_up, name="warm-up", daemon=True).start()
    from cove.guestagent.service import GuestService
    from cove.rpc import RpcClient, RpcServer, topics

    bus = RpcClient(config.transport_url)
    service = parts["service"] = GuestService(config, manager, bus)

    def _start() -> None:
        try:
            manager.start()
            manager.server_started()
        except CoveError as exc:
            LOG.error("cannot start the database server: %s", exc.message)

    if manager.prepared and manager.adopt():
        # A primary that kept running while its agent was away holds no lease of this agent's.
        service.lease.assume_held()
    elif manager.prepared:
        if service.lease.needs_lease():
            # A group's primary waits for the conductor's word before it takes writes.
            threading.Thread(
                target=service.lease.start_when_allowed, args=(_start,), name="start", daemon=True
            ).start()
        else:
            _start()
    topic = topics.guest(config.instance_id)
    server = parts["server"] = RpcServer(config.transport_url, topic, service.endpoints())
    if stopping.is_set():
        _shutdown()
        return 0

    def _beat() -> None:
        # Heartbeats once the server consumes: the task manager's prepare is already waiting
        # in the queue, and the first beat (a declare, a status, a cast) would hold the
        # interpreter while the server connects. Not for long if the bus is away. The lease
        # is renewed from the start: a primary's watchdog counts on it.
        server.wait_consuming(STARTUP_WAIT)
        service.run_heartbeats()

    threading.Thread(target=_beat, name="heartbeat", daemon=True).start()
    threading.Thread(target=service.lease.run, name="lease", daemon=True).start()
    guard = partial(service.isolation.run_guard, service.stopping)
    threading.Thread(target=guard, name="volume-guard", daemon=True).start()
    threading.Thread(target=service.lease.run_watchdog, name="lease-watchdog", daemon=True).start()
    LOG.info("guest agent for instance %s serving %s", config.instance_id, topic)
    server.serve_forever()
    bus.close()
    LOG.info("guest agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
