"""Provisioning benchmark: Cove's time from POST to the first successful client connection,
against the raw floor measured in the same run (initdb + start + create database + create user
by hand, then the same first connection).

Usage: python bench/provision.py [--n 5]
Prints one line per scenario with both medians and their ratio (Cove / raw).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane, wait_for

from cove.common.service_user import service_user
from cove.compute.discovery import find_postgresql

PASSWORD = "bench-Pass-1"
#: How often a client asks whether its instance is ready, as a script or the CLI would.
POLL = 0.05
RAW_POOL = "127.43.0."


def _connect(host: str, dbname: str = "app", user: str = "app") -> None:
    def attempt() -> bool:
        try:
            psycopg.connect(
                host=host, port=5432, user=user, password=PASSWORD, dbname=dbname, connect_timeout=2
            ).close()
            return True
        except psycopg.OperationalError:
            return False

    wait_for(attempt, 120, 0.01, f"a connection to {host}")


class RawPostgres:
    """PostgreSQL set up by hand, the way an operator without Cove would."""

    def __init__(self, base: Path, index: int) -> None:
        self.dir = base / f"raw{index}"
        self.host = f"{RAW_POOL}{index + 1}"
        self.bin = Path(find_postgresql()[-1].bin_dir)
        self.user = service_user("cove")
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_user(self) -> dict[str, object]:
        return {
            "user": self.user.popen_user,
            "group": self.user.popen_group,
            "extra_groups": self.user.popen_extra_groups,
        }

    def provision(self) -> float:
        start = time.perf_counter()
        self.dir.mkdir()
        os.chown(self.dir, self.user.uid, self.user.gid)
        data = self.dir / "data"
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            **self._as_user(),
        )  # type: ignore[call-overload]
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "port=5432",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._as_user(),
        )  # type: ignore[call-overload]

        def admin() -> psycopg.Connection | None:
            try:
                return psycopg.connect(
                    host=str(self.dir), port=5432, user="admin", dbname="postgres", autocommit=True
                )
            except psycopg.OperationalError:
                return None

        conn = wait_for(admin, 60, 0.01, "the raw server")
        with conn:
            conn.execute("CREATE DATABASE app")
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("GRANT ALL ON DATABASE app TO app")
        _connect(self.host)
        return time.perf_counter() - start

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


def cove_provision(plane: ControlPlane, name: str) -> float:
    start = time.perf_counter()
    resp = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": name,
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "postgresql"},
                "databases": [{"name": "app"}],
                "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "app"}]}],
            }
        },
    )
    resp.raise_for_status()
    iid = resp.json()["instance"]["id"]
    inst = wait_for(lambda: _active(plane, iid), 300, POLL, "ACTIVE")
    _connect(inst["ip"][0])
    return time.perf_counter() - start


def _active(plane: ControlPlane, iid: str) -> dict | None:
    inst = plane.http.get(f"/instances/{iid}").json()["instance"]
    if inst["status"] == "ERROR":
        raise RuntimeError(f"instance failed: {inst.get('fault')}")
    return inst if inst["status"] == "ACTIVE" else None


def _delete_all(plane: ControlPlane) -> None:
    for inst in plane.http.get("/instances").json()["instances"]:
        plane.http.delete(f"/instances/{inst['id']}")
    wait_for(lambda: not plane.http.get("/instances").json()["instances"], 300, 0.2, "deletes")


def _run(fn: object, n: int, concurrent: bool) -> list[float]:
    assert callable(fn)
    if not concurrent:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="instances per scenario")
    args = parser.parse_args()
    if not find_postgresql():
        print("no PostgreSQL server binaries found", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    base.chmod(0o755)
    plane = ControlPlane(fast_heartbeats=False).start()
    results: list[tuple[str, float, float]] = []
    try:
        warm = cove_provision(plane, "warm-up")
        _delete_all(plane)
        print(f"first instance of the version (builds the template): {warm:.2f} s")
        for concurrent in (False, True):
            label = f"{args.n} {'concurrent' if concurrent else 'sequential'}"
            raws: list[RawPostgres] = []

            def raw_one(i: int, _raws: list[RawPostgres] = raws, _c: bool = concurrent) -> float:
                raw = RawPostgres(base, i + (100 if _c else 0))
                _raws.append(raw)
                return raw.provision()

            raw_times = _run(raw_one, args.n, concurrent)
            for raw in raws:
                raw.stop()
            cove_times = _run(lambda i: cove_provision(plane, f"b{i}"), args.n, concurrent)
            _delete_all(plane)
            if concurrent:
                raw_value, cove_value = max(raw_times), max(cove_times)
                label += " (time until all are ready)"
            else:
                raw_value, cove_value = statistics.median(raw_times), statistics.median(cove_times)
                label += " (median per instance)"
            results.append((label, raw_value, cove_value))
    finally:
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'scenario':48} {'raw (s)':>8} {'cove (s)':>9} {'ratio':>6}")
    for label, raw_value, cove_value in results:
        print(f"{label:48} {raw_value:8.2f} {cove_value:9.2f} {cove_value / raw_value:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
