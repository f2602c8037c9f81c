"""The control plane's metrics, in Prometheus's text format (``prometheus-client``).

What is counted, and by whom (``docs/operator-guide.md``, "Metrics", lists every name):

* the API: each request by method, route (the path's template, so ids never become labels)
  and status, and its latency;
* every RPC client of the control plane: each call and cast sent, each that failed (by the
  error's name) and how long each call waited for its answer;
* every RPC server of the control plane (task manager, conductor): each request handled and
  how long it took, by outcome;
* the task manager: each task's duration (create, delete, resize, backup, failover...) and
  the tasks that ended with an unexpected error;
* at each scrape, the API reads the instances by status and datastore from the control
  database (``Metrics.exposition`` takes such scrape-time families as ``extra``).

Guest topics are counted as ``guestagent``, without the instance's id: labels stay few.

Where the numbers live: a service started with a metrics directory (``metrics_dir``; ``cove up``
empties it at start) writes its values to files there (prometheus-client's multiprocess mode),
and the API's ``GET /metrics`` adds up those of every process of the host, the dead ones'
included, so counts never go down when a service is started again. Without a directory, a
process counts in its own memory (the tests).

Recording costs a lock and an addition (microseconds). Nothing here is set up at import time:
a service builds :class:`Metrics` at start-up with :meth:`Metrics.start`, before anything else
imports prometheus-client, because the library reads where to keep values when it is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


class Metrics:
    """The instruments of one control plane process; the RPC client and server record through
    it (``cove.rpc.observer.RpcObserver``)."""

    def __init__(self, directory: Path | None) -> None:
        """Use :meth:`start`."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.directory = directory
        # The process's own instruments are never exposed from this registry when values
        # live in files: the scrape reads the files of every process instead.
        own = CollectorRegistry()
        self._own = own
        self.requests = Counter(
            "cove_api_requests",
            "API requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=own,
        )
        self.request_seconds = Histogram(
            "cove_api_request_duration_seconds",
            "Time to answer an API request, by method and route.",
            ["method", "route"],
            buckets=FAST_BUCKETS,
            registry=own,
        )
        self.rpc_sent = Counter(
            "cove_rpc_sent",
            "RPC requests sent on the bus, by kind (call or cast), topic and method.",
            ["kind", "topic", "method"],
            registry=own,
        )
        self.rpc_failed = Counter(
            "cove_rpc_failed",
            "RPC requests that failed for their sender (not sent, no answer in time, or an "
            "error answered), by kind, topic, method and error.",
            ["kind", "topic", "method", "error"],
            registry=own,
        )
        self.rpc_call_seconds = Histogram(
            "cove_rpc_call_duration_seconds",
            "Time from sending an RPC call to its answer, by topic and method.",
            ["topic", "method"],
            buckets=FAST_BUCKETS,
            registry=own,
        )
        self.rpc_handled = Counter(
            "cove_rpc_handled",
            "RPC requests a server handled, by topic, method and outcome (ok or the error).",
            ["topic", "method", "outcome"],
            registry=own,
        )
        self.rpc_handle_seconds = Histogram(
            "cove_rpc_handle_duration_seconds",
            "Time a server took to handle an RPC request, by topic and method.",
            ["topic", "method"],
            buckets=TASK_BUCKETS,
            registry=own,
        )
        self.task_seconds = Histogram(
            "cove_task_duration_seconds",
            "Duration of the task manager's tasks, by task.",
            ["task"],
            buckets=TASK_BUCKETS,
            registry=own,
        )
        self.task_failures = Counter(
            "cove_task_failures",
            "Tasks of the task manager that ended with an unexpected error, by task.",
            ["task"],
            registry=own,
        )

    @classmethod
    def start(cls, directory: Path | None) -> Metrics:
        """The process's instruments, keeping values in files under ``directory`` (created,
        mode 0700) or, when None, in memory. Raises RuntimeError when prometheus-client was
        imported before without that directory (it would count in memory unseen) and OSError
        when the directory cannot be made."""
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.environ.get(_DIR_VARIABLE) != str(directory):
                if "prometheus_client" in sys.modules:
                    raise RuntimeError("metrics must start before prometheus_client is imported")
                os.environ[_DIR_VARIABLE] = str(directory)
        return cls(directory)

    # -- recording ---------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def sent(self, kind: str, topic: str, method: str, seconds: float, error: str | None) -> None:
        """An RPC request this process sent: ``kind`` is ``call`` or ``cast``; ``seconds``
        is a call's wait for its answer; ``error`` the failure's name, None when it went
        well."""
        topic = topic_label(topic)
        self.rpc_sent.labels(kind, topic, method).inc()
        if error is not None:
            self.rpc_failed.labels(kind, topic, method, error).inc()
        if kind == "call":
            self.rpc_call_seconds.labels(topic, method).observe(seconds)

    def handled(self, topic: str, method: str, seconds: float, error: str | None) -> None:
        """An RPC request this process's server handled; ``error`` as for :meth:`sent`."""
        topic = topic_label(topic)
        self.rpc_handled.labels(topic, method, error or "ok").inc()
        self.rpc_handle_seconds.labels(topic, method).observe(seconds)

    def task(self, task: str, seconds: float, failed: bool) -> None:
        self.task_seconds.labels(task).observe(seconds)
        if failed:
            self.task_failures.labels(task).inc()

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


def empty_directory(directory: Path) -> None:
    """Remove the values the processes of an earlier run left in ``directory``: a new run
    counts from zero. Raises OSError."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.suffix == ".db":
            path.unlink(missing_ok=True)
