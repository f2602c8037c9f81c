"""The control plane's metrics, in Prometheus's text format (``prometheus-client``).

What is counted, and by whom (``docs/operator-guide.md``, "Metrics", lists every name):

* the API: each request by method (an unknown one is ``other``), route (the path's template,
  so ids never become labels) and status, unexpected errors (500) included, and its latency;
* every RPC client of the control plane: each call and cast sent, each that failed (by the
  error's name) and how long each call waited for its answer;
* every RPC server of the control plane (task manager, conductor): each request handled and
  how long it took, by outcome;
* the task manager: each task's duration (create, delete, restart, resize, detach, promote,
  eject, rejoin, backup) and the tasks that failed;
* at each scrape, the API reads the instances by status and datastore, and each instance's
  vital signs from its last heartbeat, from the control database (``cove.api.metrics``;
  ``Metrics.exposition`` takes such scrape-time families as ``extra``).

Guest topics are counted as ``guestagent``, without the instance's id: labels stay few.

Where the numbers live: a service started with a metrics directory (``metrics_dir``, on a
memory filesystem by default: a write to a file mapped from a full disk kills the process;
``cove up`` empties it at start) writes its values to files there (prometheus-client's
multiprocess mode),
and the API's ``GET /metrics`` adds up those of every process of the host, the dead ones'
included, so counts never go down when a service is started again. Without a directory, a
process counts in its own memory (the tests).

Recording costs a lock and an addition (microseconds). Nothing here is set up at import time:
a service builds :class:`Metrics` at start-up with :meth:`Metrics.start`, before anything else
imports prometheus-client, because the library reads where to keep values when it is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cove.common.errors import ConfigurationError
from cove.common.settings import Settings

LOG = logging.getLogger(__name__)

#: The environment variable prometheus-client reads its multiprocess directory from.
_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Latency buckets of API requests and RPC calls, in seconds.
FAST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Buckets of tasks, which run from a fraction of a second to hours (a backup).
TASK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
#: What a scrape answers with.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def topic_label(topic: str) -> str:
    """The label of an RPC topic: a guest's topic without its instance's id."""
    return topic.split(".", 1)[0]


#: HTTP methods counted by name; any other (a client may send what it likes) is ``other``.
METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})

#: The instruments: attribute, kind, name, help, labels, buckets of a histogram.
INSTRUMENTS: tuple[tuple[str, str, str, str, tuple[str, ...], tuple[float, ...]], ...] = (
    ("requests", "counter", "cove_api_requests",
     "API requests answered, by method, route and status.", ("method", "route", "status"), ()),
    ("request_seconds", "histogram", "cove_api_request_duration_seconds",
     "Time to answer an API request, by method and route.", ("method", "route"), FAST_BUCKETS),
    ("rpc_sent", "counter", "cove_rpc_sent",
     "RPC requests sent on the bus, by kind (call or cast), topic and method.",
     ("kind", "topic", "method"), ()),
    ("rpc_failed", "counter", "cove_rpc_failed",
     "RPC requests that failed for their sender (not sent, no answer in time, or an error "
     "answered), by kind, topic, method and error.", ("kind", "topic", "method", "error"), ()),
    ("rpc_call_seconds", "histogram", "cove_rpc_call_duration_seconds",
     "Time from sending an RPC call to its answer or its failure, by topic and method.",
     ("topic", "method"), FAST_BUCKETS),
    ("rpc_handled", "counter", "cove_rpc_handled",
     "RPC requests a server handled, by topic, method and outcome (ok or the error).",
     ("topic", "method", "outcome"), ()),
    ("rpc_handle_seconds", "histogram", "cove_rpc_handle_duration_seconds",
     "Time a server took to handle an RPC request, by topic and method.", ("topic", "method"),
     TASK_BUCKETS),
    ("task_seconds", "histogram", "cove_task_duration_seconds",
     "Duration of the task manager's tasks, by task.", ("task",), TASK_BUCKETS),
    ("task_failures", "counter", "cove_task_failures",
     "Tasks of the task manager that failed (the instance in error or given a fault, the "
     "backup failed, or an unexpected error), by task.", ("task",), ()),
)  # fmt: skip


class Metrics:
    """The instruments of one control plane process; the RPC client and server record through
    it (``cove.rpc.observer.RpcObserver``). Recording never raises: a value that cannot be
    kept (its file cannot grow, say) is lost and logged once, and what was being counted goes
    on."""

    # Made from INSTRUMENTS (prometheus-client's Counter and Histogram).
    requests: Any
    request_seconds: Any
    rpc_sent: Any
    rpc_failed: Any
    rpc_call_seconds: Any
    rpc_handled: Any
    rpc_handle_seconds: Any
    task_seconds: Any
    task_failures: Any

    def __init__(self, directory: Path | None) -> None:
        """Use :meth:`start`."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.directory = directory
        self._warned = False
        # The process's own instruments are never exposed from this registry when values
        # live in files: the scrape reads the files of every process instead.
        self._own = CollectorRegistry()
        for attribute, kind, name, text, labels, buckets in INSTRUMENTS:
            if kind == "counter":
                made: Any = Counter(name, text, labels, registry=self._own)
            else:
                made = Histogram(name, text, labels, buckets=buckets, registry=self._own)
            setattr(self, attribute, made)

    @classmethod
    def start(cls, directory: Path | None) -> Metrics:
        """The process's instruments, keeping values in files under ``directory`` (made
        mode 0700; one of another user is refused) or, when None, in memory. Raises
        ConfigurationError when the directory cannot be had or prometheus-client was imported
        before without it (it would count in memory, unseen by the scrape)."""
        if directory is not None:
            _own_directory(directory)
            if os.environ.get(_DIR_VARIABLE) != str(directory):
                if "prometheus_client" in sys.modules:
                    raise ConfigurationError(
                        "metrics must start before prometheus_client is imported"
                    )
                os.environ[_DIR_VARIABLE] = str(directory)
        return cls(directory)

    # -- recording ---------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        with self._kept():
            self.requests.labels(method, route, str(status)).inc()
            self.request_seconds.labels(method, route).observe(seconds)

    def sent(self, kind: str, topic: str, method: str, seconds: float, error: str | None) -> None:
        """An RPC request this process sent: ``kind`` is ``call`` or ``cast``; ``seconds``
        is a call's wait for its answer; ``error`` the failure's name, None when it went
        well."""
        topic = topic_label(topic)
        with self._kept():
            self.rpc_sent.labels(kind, topic, method).inc()
            if error is not None:
                self.rpc_failed.labels(kind, topic, method, error).inc()
            if kind == "call":
                self.rpc_call_seconds.labels(topic, method).observe(seconds)

    def handled(self, topic: str, method: str, seconds: float, error: str | None) -> None:
        """An RPC request this process's server handled; ``error`` as for :meth:`sent`."""
        topic = topic_label(topic)
        with self._kept():
            self.rpc_handled.labels(topic, method, error or "ok").inc()
            self.rpc_handle_seconds.labels(topic, method).observe(seconds)

    def task(self, task: str, seconds: float, failed: bool) -> None:
        with self._kept():
            self.task_seconds.labels(task).observe(seconds)
            if failed:
                self.task_failures.labels(task).inc()

    @contextlib.contextmanager
    def _kept(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            if not self._warned:
                self._warned = True
                LOG.warning("cannot keep a metric (more are lost unlogged)", exc_info=True)

    # -- exposition --------------------------------------------------------------------------

    def exposition(self, extra: Iterable[Any] = ()) -> bytes:
        """The text a scrape answers with: every process's values (this one's alone without
        a directory), then the ``extra`` metric families, made at this scrape."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.directory is None:
            text = generate_latest(self._own)
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
        families = list(extra)
        if not families:
            return text
        scraped = CollectorRegistry()
        scraped.register(_made(families))
        return text + generate_latest(scraped)


def _made(families: list[Any]) -> Any:
    """A collector of metric families made already. Its class is defined here, not at
    import: prometheus-client may be imported only once :meth:`Metrics.start` has run."""
    from prometheus_client.registry import Collector

    class Made(Collector):
        def collect(self) -> Iterable[Any]:
            return families

    return Made()


def place(settings: Settings) -> Path:
    """Where the services of this host keep their metrics: ``metrics_dir`` when set; else a
    directory of this user and data directory on the memory filesystem (``/dev/shm``: a file
    mapped from a disk that fills up kills the process writing it), or ``<data>/run/metrics``
    where that filesystem is missing or someone else took the name. Every service of the
    data directory finds the same."""
    if settings.metrics_dir is not None:
        return settings.metrics_dir
    fallback = settings.data_dir / "run" / "metrics"
    digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:16]
    shm = Path("/dev/shm")  # noqa: S108 (checked: a directory this user owns, or not used)
    chosen = shm / f"cove-metrics-{os.geteuid()}-{digest}"
    if not shm.is_dir():
        return fallback
    try:
        _own_directory(chosen)
    except ConfigurationError as exc:
        LOG.warning("%s; keeping metrics in %s", exc.message, fallback)
        return fallback
    return chosen


def _own_directory(directory: Path) -> None:
    """Make ``directory`` (0700), or make sure the existing one is this user's and only this
    user's. Raises ConfigurationError."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        seen = directory.lstat()
        if not stat.S_ISDIR(seen.st_mode) or seen.st_uid != os.geteuid():
            raise ConfigurationError(
                f"the metrics directory {directory} is not a directory of this user's"
            )
        if stat.S_IMODE(seen.st_mode) != 0o700:
            directory.chmod(0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot keep metrics in {directory}: {exc.strerror or exc}"
        ) from exc


def remove_directory(directory: Path) -> None:
    """Remove ``directory`` and the values in it, once the services that kept them there are
    gone (it may be on the memory filesystem). Raises OSError."""
    empty_directory(directory)
    if directory.is_dir():
        directory.rmdir()


def empty_directory(directory: Path) -> None:
    """Remove the values the processes of an earlier run left in ``directory``: a new run
    counts from zero. Raises OSError."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.suffix == ".db":
            path.unlink(missing_ok=True)
