"""API benchmark: latency and throughput of ``GET /v1.0/{project}/instances`` and
``GET /v1.0/{project}/instances/{id}`` with many instances recorded, with token validation
(Cove's real embedded identity: the token's signature is checked with the key and the
revocation table is read) against a baseline measured in the same run: the same application
whose authenticator accepts any token without looking at it. Cove itself has no
unauthenticated mode; that authenticator exists only here, to isolate what auth costs. A third
mode is the real API with its metrics turned off (``metrics = false``), to show what counting
every request costs (target: the API with metrics keeps >= 95% of the throughput without).

Each mode's API runs under uvicorn in a child process of its own, all on the same control
database (the two that count keep their metrics in files, as services do); the clients are
threads of this process, each with its own keep-alive connection.
Latency is measured with one client (requests one after another), throughput with
``--concurrency`` clients. The modes take turns, so a change in the machine's load weighs
on both alike; a measurement is cut short after ``--seconds``. Also timed: one password
authentication, slow on purpose (scrypt). Timings are printed, never asserted.

Usage: python bench/api.py [--instances 1000] [--requests 2000] [--concurrency 8] [--seconds 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import select

from cove.api.auth import Credentials
from cove.common.ids import new_id, utcnow
from cove.common.metrics import Metrics, place, remove_directory
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.migrate import upgrade
from cove.db.models import DatastoreVersion, GuestState, Instance, Network
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.identity import store

PROJECT = "bench"
USER = "bench-user"
#: Share of the instances that belong to the measured project; the rest are spread over others.
OWN_SHARE = 0.9
OTHER_PROJECTS = 4
MODES = ("no-auth", "auth", "no-metrics")
#: Each measurement is split in this many turns per mode, the modes alternating.
ROUNDS = 2
#: Password authentications timed (scrypt makes each one slow on purpose).
PASSWORD_AUTHS = 15
#: The API's default page size: a list answers this many instances.
PAGE_SIZE = 20
#: The API's settings for the run. Heartbeats are declared hourly so the recorded heartbeats
#: keep the instances ACTIVE for the whole run, and the rate limit (200 requests a minute per
#: project by default) is off: the benchmark sends thousands a minute.
SERVER_ENV = {
    "COVE_RATE_LIMIT_PER_MINUTE": "0",
    "COVE_HEARTBEAT_INTERVAL": "3600",
    "COVE_LOG_LEVEL": "WARNING",
    "COVE_PAGE_SIZE": str(PAGE_SIZE),
}


# -- the server (child process) -----------------------------------------------------------------


class NoBus:
    """The bus the measured GETs never use: anything sent on it is a bug of the benchmark."""

    def _refuse(self) -> NoReturn:
        raise RuntimeError("the API benchmark has no message bus")

    def cast(self, *_args: Any, **_kwargs: Any) -> None:
        self._refuse()

    def call(self, *_args: Any, **_kwargs: Any) -> Any:
        self._refuse()

    def declare_topic(self, *_args: Any, **_kwargs: Any) -> None:
        self._refuse()

    def delete_topic(self, *_args: Any, **_kwargs: Any) -> None:
        self._refuse()

    def close(self) -> None:
        pass


class AcceptAnyToken:
    """Accepts any token as a member of one project, without validating it (benchmark only)."""

    def __init__(self, project_id: str) -> None:
        self.credentials = Credentials(
            user_id="bench",
            project_id=project_id,
            roles=frozenset({"member"}),
            expires_at=utcnow() + timedelta(days=1),
        )

    def authenticate(self, token: str) -> Credentials:
        return self.credentials


def serve(mode: str, project_id: str) -> None:
    """Run the API in this process until killed; settings come from the COVE_* environment."""
    import uvicorn

    from cove.api.app import create_app
    from cove.api.context import build_context

    settings = load_settings()
    context = build_context(settings, Database(settings.database_url), NoBus())  # type: ignore[arg-type]
    context.metrics = Metrics.start(place(settings)) if settings.metrics else None
    if mode == "no-auth":
        context.auth = AcceptAnyToken(project_id)
    uvicorn.run(
        create_app(context),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
    )


# -- the control database -----------------------------------------------------------------------


def seed(settings: Settings, instances: int) -> tuple[str, str, list[str]]:
    """Record ``instances`` ACTIVE instances with fresh heartbeats, most of them in the measured
    project; returns (project id, the user's password, ids of the project's instances)."""
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        project_id, password = _add_member(db)
        others = [new_id() for _ in range(OTHER_PROJECTS)]
        own = round(instances * OWN_SHARE)
        owners = [project_id] * own + [others[i % OTHER_PROJECTS] for i in range(instances - own)]
        with db.session() as s:
            seed_flavors(s)
            register_version(
                s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"), True
            )
            version = s.scalars(select(DatastoreVersion)).one()
            network = Network(
                id=new_id(),
                name="default",
                cidr=settings.address_pool,
                is_default=True,
                created=utcnow(),
            )
            s.add(network)
            s.flush()
            ids = _add_instances(s, owners, version.id, network.id)
        return (
            project_id,
            password,
            [i for i, p in zip(ids, owners, strict=True) if p == project_id],
        )
    finally:
        db.dispose()


def _add_instances(s: Any, owners: list[str], version_id: str, network_id: str) -> list[str]:
    now = utcnow()
    ids = []
    for n, project_id in enumerate(owners):
        iid = new_id()
        created = now - timedelta(minutes=len(owners) - n)
        s.add(
            Instance(
                id=iid,
                project_id=project_id,
                name=f"db-{n}",
                flavor_id=str(1 + n % 3),
                datastore_version_id=version_id,
                volume_size=1 + n % 5,
                compute_driver="local",
                task=Task.NONE.value,
                task_started_at=created,
                compute_state=ComputeState.ACTIVE.value,
                agent_started_at=created,
                address=f"127.42.{n // 250}.{n % 250 + 1}",
                network_id=network_id,
                port=5432,
                created=created,
                updated=created,
            )
        )
        ids.append(iid)
    s.flush()  # the heartbeats refer to the instances
    for iid in ids:
        s.add(
            GuestState(
                instance_id=iid,
                status=GuestStatus.HEALTHY.value,
                payload=json.dumps({"version": "15.4"}),
                heartbeat_at=now,
            )
        )
    return ids


# -- the clients --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one endpoint did against one server, over all rounds."""

    latencies: list[float] = field(default_factory=list)
    concurrent_requests: int = 0
    concurrent_seconds: float = 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000

    @property
    def per_second(self) -> float:
        return self.concurrent_requests / self.concurrent_seconds


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> float:
    start = time.perf_counter()
    conn.request("GET", path, headers={"X-Auth-Token": token, "Accept": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200:
        raise RuntimeError(f"GET {path} answered {resp.status}: {body[:200]!r}")
    return elapsed


def _client(port: int, paths: list[str], token: str, times: list[float], deadline: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for path in paths:
            if time.perf_counter() > deadline:
                break
            times.append(_get(conn, path, token))
    finally:
        conn.close()


def run_clients(
    port: int, paths: list[str], token: str, clients: int, seconds: float
) -> tuple[list[float], float]:
    """Send ``paths`` spread over ``clients`` threads, stopping early after ``seconds``;
    returns the request times and the wall time of the whole run."""
    times: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def work(i: int) -> None:
        try:
            _client(port, paths[i::clients], token, times[i], deadline)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return [x for chunk in times for x in chunk], wall


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (ephemeral ports are never standard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _add_member(db: Database) -> tuple[str, str]:
    """A project and a member of it, made with the identity store; (project id, password)."""
    password = secrets.token_urlsafe(16)
    with db.session() as s:
        store.ensure_roles(s)
        project = store.create_project(s, PROJECT)
        store.create_user(s, USER, password, default_project=project.id)
        store.grant_role(s, USER, project.id, "member")
        return project.id, password


def password_auth_ms(port: int, password: str, project_id: str, n: int) -> tuple[float, str]:
    """The median time of ``n`` password authentications, and the last token issued."""
    body = json.dumps(
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": USER, "password": password, "domain": {"id": "default"}}
                    },
                },
                "scope": {"project": {"id": project_id}},
            }
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, token = [], ""
    try:
        for _ in range(n):
            start = time.perf_counter()
            conn.request(
                "POST", "/identity/v3/auth/tokens", body, {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            text = resp.read()
            times.append(time.perf_counter() - start)
            if resp.status != 201:
                raise RuntimeError(f"authentication answered {resp.status}: {text[:200]!r}")
            token = resp.getheader("X-Subject-Token") or ""
    finally:
        conn.close()
    return statistics.median(times) * 1000, token


class Server:
    """The API in a child process, in one of the two modes."""

    def __init__(self, mode: str, data_dir: Path, project_id: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "COVE_CONFIG"}
        env.update(SERVER_ENV, COVE_DATA_DIR=str(data_dir), COVE_API_PORT=str(self.port))
        env["COVE_METRICS"] = "false" if mode == "no-metrics" else "true"
        self.log = data_dir / f"api-{mode}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", mode, "--project", project_id],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited: {self.log.read_text(errors='replace')}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise RuntimeError("the API did not start within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Target:
    """A running server and the token its requests carry."""

    server: Server
    token: str


def measure(
    targets: dict[str, Target], paths: list[str], args: argparse.Namespace
) -> dict[str, Tally]:
    """Latency (one client) and throughput (``args.concurrency`` clients) of ``paths`` on
    every target. The targets take turns, in ``ROUNDS`` rounds per phase, so a change in the
    machine's load during the run weighs on both modes alike."""
    tallies = {mode: Tally() for mode in targets}
    budget = args.seconds / ROUNDS
    for target in targets.values():  # warm-up
        warm_up = paths[: args.concurrency * 5]
        run_clients(target.server.port, warm_up, target.token, args.concurrency, budget)
    sequential = max(args.requests // 4 // ROUNDS, 1)
    concurrent = max(args.requests // ROUNDS, 1)
    for _round in range(ROUNDS):
        for mode, target in targets.items():
            times, _wall = run_clients(
                target.server.port, paths[:sequential], target.token, 1, budget
            )
            tallies[mode].latencies += times
    for _round in range(ROUNDS):
        for mode, target in targets.items():
            times, wall = run_clients(
                target.server.port, paths[:concurrent], target.token, args.concurrency, budget
            )
            tallies[mode].concurrent_requests += len(times)
            tallies[mode].concurrent_seconds += wall
    return tallies


def run(
    args: argparse.Namespace, data_dir: Path, project_id: str, password: str, own_ids: list[str]
) -> tuple[dict[str, dict[str, Tally]], float]:
    """Tallies per endpoint and mode, and the median password authentication in ms."""
    servers: list[Server] = []
    try:
        for mode in MODES:
            servers.append(Server(mode, data_dir, project_id))
        auth_ms, token = password_auth_ms(servers[1].port, password, project_id, PASSWORD_AUTHS)
        targets = {
            "no-auth": Target(servers[0], "any-token"),
            "auth": Target(servers[1], token),
            "no-metrics": Target(servers[2], token),
        }
        base = f"/v1.0/{project_id}/instances"
        rng = random.Random(7)
        cases = {
            "GET /instances": [base] * args.requests,
            "GET /instances/{id}": [f"{base}/{rng.choice(own_ids)}" for _ in range(args.requests)],
        }
        return {name: measure(targets, paths, args) for name, paths in cases.items()}, auth_ms
    finally:
        for server in servers:
            server.stop()


def report(results: dict[str, dict[str, Tally]], auth_ms: float, args: argparse.Namespace) -> None:
    own = round(args.instances * OWN_SHARE)
    print(
        f"{args.instances} instances recorded, {own} in the measured project (a page is "
        f"{PAGE_SIZE}); latency: one client; throughput: {args.concurrency} clients "
        "(n: requests measured)"
    )
    print(
        f"{'endpoint':20} {'mode':10} {'median ms':>9} {'p95 ms':>8} {'n':>5} {'req/s':>7} {'n':>5}"
    )
    for endpoint, tallies in results.items():
        for mode in MODES:
            r = tallies[mode]
            print(
                f"{endpoint:20} {mode:10} {r.median_ms:9.2f} {r.p95_ms:8.2f} "
                f"{len(r.latencies):5} {r.per_second:7.0f} {r.concurrent_requests:5}"
            )
    print()
    ratios(results, "cost of auth (auth / no-auth)", "auth", "no-auth")
    ratios(
        results,
        "cost of metrics (auth, metrics counted / auth, metrics off; target req/s >= 0.95)",
        "auth",
        "no-metrics",
    )
    print(
        f"one password authentication (POST /identity/v3/auth/tokens, median of "
        f"{PASSWORD_AUTHS}): {auth_ms:.1f} ms"
    )


def ratios(results: dict[str, dict[str, Tally]], title: str, mode: str, base: str) -> None:
    """``mode``'s latency and throughput as ratios of ``base``'s, per endpoint."""
    print(title)
    print(f"{'endpoint':20} {'median':>8} {'p95':>8} {'req/s':>8}")
    for endpoint, tallies in results.items():
        a, n = tallies[mode], tallies[base]
        print(
            f"{endpoint:20} {a.median_ms / n.median_ms:8.2f} {a.p95_ms / n.p95_ms:8.2f} "
            f"{a.per_second / n.per_second:8.2f}"
        )
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000, help="instances recorded")
    parser.add_argument("--requests", type=int, default=2000, help="requests per case")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="cut a measurement short after this long (keeps a full run near two minutes)",
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.project)
        return 0
    if min(args.instances, args.requests, args.concurrency) < 1 or args.seconds <= 0:
        parser.error("--instances, --requests, --concurrency and --seconds must be positive")
    base = Path(tempfile.mkdtemp(prefix="cove-bench-api-"))
    try:
        settings = load_settings(data_dir=base)
        project_id, password, own_ids = seed(settings, args.instances)
        results, auth_ms = run(args, base, project_id, password, own_ids)
    finally:
        remove_directory(place(load_settings(data_dir=base)))
        shutil.rmtree(base, ignore_errors=True)
    report(results, auth_ms, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
