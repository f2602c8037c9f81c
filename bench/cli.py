"""CLI benchmark: ``cove instance list`` as a whole command (a new process each time, as a
user types it), against floors measured in the same run on the same machine:

* the interpreter's own start (``python -c pass``), what any Python command pays;
* the same request by hand: ``curl`` with a token got beforehand, what an expert scripting
  the API pays.

``cove`` is timed with its token cache (the token a first run got) and without it
(``COVE_TOKEN_CACHE=off``: each run asks the identity service, whose password hash is slow on
purpose). The three take turns run by run, so a change in the machine's load weighs on all
alike; medians and 90th percentiles are printed, with the ratio of the cached median to each
floor. Target: the cached median at most 0.2 s. Timings are printed, never asserted.

Usage: python bench/cli.py [--runs 21] [--instances 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import httpx
from harness import ControlPlane

from cove.cli import clouds

BIN = Path(sys.executable).parent
TARGET = 0.2


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
    return took


def user_env(plane: ControlPlane, home: Path) -> dict[str, str]:
    """What a user's shell has after the README's export line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "COVE_"))}
    env.update(
        HOME=str(home),
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        OS_CLIENT_CONFIG_FILE=str(plane.data_dir / "clouds.yaml"),
        OS_CLOUD="cove",
    )
    return env


def admin_token(env: dict[str, str]) -> tuple[str, str]:
    """A token of the admin and the API's instances URL, as a script would get them first."""
    cfg = clouds.load(env, "cove", Path.cwd(), Path(env["HOME"]))
    resp = httpx.post(clouds.token_url(cfg.auth_url), json=clouds.token_request(cfg), timeout=30)
    resp.raise_for_status()
    project = resp.json()["token"]["project"]["id"]
    base = cfg.auth_url.split("/identity", 1)[0]
    return resp.headers["X-Subject-Token"], f"{base}/v1.0/{project}/instances"


def make_instances(env: dict[str, str], count: int) -> None:
    for n in range(count):
        argv = ["cove", "instance", "create", f"bench-{n}", "--datastore", "redis"]
        argv += ["--flavor", "tiny", "--size", "1", "--wait"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"cannot create an instance: {done.stderr}")


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{name:36} median {statistics.median(times):6.3f} s   p90 {p90:6.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--instances", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cove-bench-cli-"))
    # The control plane as a user runs it: the harness's quicker monitor is for tests.
    plane = ControlPlane(extra_env={"COVE_MONITOR_INTERVAL": "1.0"}).start()
    try:
        env = user_env(plane, home)
        make_instances(env, args.instances)
        token, url = admin_token(env)
        uncached = {**env, "COVE_TOKEN_CACHE": "off"}
        kinds: dict[str, Callable[[], float]] = {
            "python -c pass": lambda: timed([sys.executable, "-c", "pass"], env),
            "curl with a token (by hand)": lambda: timed(
                ["curl", "-sf", "-H", f"X-Auth-Token: {token}", url], env
            ),
            "cove instance list (cached token)": lambda: timed(["cove", "instance", "list"], env),
            "cove instance list (no token cache)": lambda: timed(
                ["cove", "instance", "list"], uncached
            ),
        }
        for run in kinds.values():  # warm the page cache and the token cache
            run()
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.runs):
            for name, run in kinds.items():
                times[name].append(run())
        listed = subprocess.run(
            ["cove", "instance", "list", "-f", "json"], env=env, capture_output=True, text=True
        )
        print(f"{len(json.loads(listed.stdout))} instances listed, {args.runs} runs each")
        for name, found in times.items():
            print(summary(name, found))
        cached = statistics.median(times["cove instance list (cached token)"])
        for floor in ("python -c pass", "curl with a token (by hand)"):
            ratio = cached / statistics.median(times[floor])
            print(f"cached cove / {floor}: {ratio:.1f}x")
        verdict = "met" if cached <= TARGET else "NOT met"
        print(f"target: cached median <= {TARGET} s: {verdict} ({cached:.3f} s)")
    finally:
        plane.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
