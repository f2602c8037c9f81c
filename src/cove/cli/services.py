"""Entry points of the control plane services: cove-api, cove-taskmanager, cove-conductor and
cove-guestagent. Each builds its settings, checks the control database and serves until
SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from cove.common.errors import ConfigurationError, CoveError
from cove.common.log import setup_logging
from cove.common.metrics import Metrics, place
from cove.common.settings import Settings, load_settings
from cove.db.engine import Database
from cove.rpc import RpcClient
from cove.rpc.taskmanager import TaskManagerClient

LOG = logging.getLogger("cove")

#: Addresses only this host reaches.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _settings(service: str) -> Settings:
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"cove-{service}",
        description=f"Run Cove's {service}. Settings come from cove.toml and COVE_* variables "
        "(see docs/operator-guide.md).",
    )
    parser.parse_args(sys.argv[2:] if sys.argv[1:2] == [service] else sys.argv[1:])
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"cove-{service}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    setup_logging(service, settings.log_level, settings.log_format)
    return settings


def _database(settings: Settings) -> Database:
    from cove.db.migrate import current, head

    try:
        revision = current(settings.database_url)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot open the control database ({type(exc).__name__}): run "
            "'cove-manage db upgrade' first, with the same COVE_DATA_DIR / COVE_DATABASE_URL"
        ) from exc
    if revision != head():
        raise ConfigurationError(
            "the control database is not up to date: run 'cove-manage db upgrade' first"
        )
    return Database(settings.database_url)


def _metrics(settings: Settings) -> Metrics | None:
    """The service's metrics (``cove.common.metrics``), kept where every service of the host
    keeps them; None when the operator turned them off. Raises ConfigurationError when that
    directory cannot be had."""
    return Metrics.start(place(settings)) if settings.metrics else None


def _declare(client: TaskManagerClient) -> None:
    """Declare the task managers' topic, so casts sent before one first starts wait in the
    queue instead of being dropped."""
    try:
        client.declare()
    except CoveError as exc:
        LOG.warning("cannot declare the %s topic yet: %s", client.topic, exc.message)


def _on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        LOG.info("stopping on signal %d", signum)
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run(service: str, body: Callable[[Settings], None]) -> None:
    settings = _settings(service)
    try:
        body(settings)
    except CoveError as exc:
        LOG.error("%s", exc.message)
        sys.exit(1)


def api_main() -> None:
    def body(settings: Settings) -> None:
        import uvicorn

        from cove.api.app import create_app
        from cove.api.context import build_context
        from cove.compute import DRIVERS

        if settings.compute_driver not in DRIVERS:
            raise ConfigurationError(
                f"unknown compute driver '{settings.compute_driver}' "
                f"(known: {', '.join(sorted(DRIVERS))})"
            )
        metrics = _metrics(settings)
        bus = RpcClient(settings.transport_url, observer=metrics)
        _declare(TaskManagerClient(bus))
        context = build_context(settings, _database(settings), bus)
        context.metrics = metrics
        open_to_all = not settings.metrics_token.get_secret_value()
        if metrics is not None and open_to_all and settings.api_host not in LOOPBACK:
            LOG.warning(
                "GET /metrics answers anyone who reaches %s:%d, and names every instance; "
                "set metrics_token to ask scrapers for it",
                settings.api_host,
                settings.api_port,
            )
        uvicorn.run(
            create_app(context),
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,
        )

    _run("api", body)


def taskmanager_main() -> None:
    def body(settings: Settings) -> None:
        from cove.compute import load_driver
        from cove.rpc import RpcServer, topics
        from cove.taskmanager.context import TaskContext
        from cove.taskmanager.service import TaskManager

        metrics = _metrics(settings)
        db = _database(settings)
        bus = RpcClient(settings.transport_url, observer=metrics)
        tc = TaskContext(settings, db, bus, load_driver(settings), metrics=metrics)
        manager = TaskManager(tc)
        server = RpcServer(
            settings.transport_url,
            topics.TASKMANAGER,
            manager.endpoints(),
            workers=16,
            observer=metrics,
        )

        def stop() -> None:
            manager.stop()
            server.stop()

        _on_signals(stop)
        threading.Thread(target=manager.run_monitor, name="monitor", daemon=True).start()
        threading.Thread(target=manager.run_coordinator, name="coordinator", daemon=True).start()
        LOG.info("task manager serving (driver %s)", tc.driver.name)
        try:
            server.serve_forever()
        finally:
            tc.driver.close()

    _run("taskmanager", body)


def conductor_main() -> None:
    def body(settings: Settings) -> None:
        from cove.conductor.service import Conductor
        from cove.rpc import RpcServer, topics

        metrics = _metrics(settings)
        conductor = Conductor(_database(settings))
        server = RpcServer(
            settings.transport_url,
            topics.CONDUCTOR,
            conductor.endpoints(),
            workers=8,
            observer=metrics,
        )
        _on_signals(server.stop)
        LOG.info("conductor serving")
        server.serve_forever()

    _run("conductor", body)


SERVICES: dict[str, Callable[[], None]] = {
    "api": api_main,
    "taskmanager": taskmanager_main,
    "conductor": conductor_main,
}

if __name__ == "__main__":
    SERVICES[sys.argv[1]]()
