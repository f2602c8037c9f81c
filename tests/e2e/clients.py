"""The OpenStack clients (python-troveclient, python-openstackclient) from PyPI, unmodified, in
a virtualenv of their own, and the ways tests drive them: a troveclient session in a child
process (``TroveDriver``) and the ``openstack`` command (``OpenStackCli``).

The clients never enter Cove's own virtualenv: their dependency tree is large and must not
shape Cove's. The client virtualenv is cached between runs, in ``$COVE_TEST_CACHE`` or
``~/.cache/cove-tests``, under a name that changes with the pinned requirements; concurrent test
processes serialise on a lock file, and a marker file written last says the install finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What the tests install. Bump a pin to test a newer client; the cache key follows.
REQUIREMENTS = ("python-troveclient==8.11.0", "python-openstackclient==10.5.0")
#: The client virtualenv is built from the system Python, never from Cove's venv.
SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("troveclient_flow.py")
MARKER = ".cove-installed"
INSTALL_TIMEOUT = 900.0
_NETWORK_HINTS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


class ClientInstallError(RuntimeError):
    """The client virtualenv could not be made; the message says why and what pip said."""


@dataclass(frozen=True)
class ClientVenv:
    """An installed client virtualenv."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def openstack(self) -> Path:
        return self.path / "bin" / "openstack"


def cache_root() -> Path:
    configured = os.environ.get("COVE_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "cove-tests"


def venv_dir(requirements: tuple[str, ...] = REQUIREMENTS) -> Path:
    """Where the virtualenv for ``requirements`` lives: one per requirement list and Python."""
    key = "\n".join([SYSTEM_PYTHON, *sorted(requirements)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / f"clients-{digest}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _works(venv: ClientVenv) -> bool:
    """The marker is there and the clients import: a half-made or broken venv is rebuilt."""
    if not (venv.path / MARKER).is_file() or not venv.openstack.is_file():
        return False
    probe = subprocess.run(
        [str(venv.python), "-c", "import troveclient.client, openstackclient.shell"],
        capture_output=True,
        timeout=120,
    )
    return probe.returncode == 0


def _run_step(argv: list[str], what: str, requirements: tuple[str, ...] = REQUIREMENTS) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientInstallError(f"{what} took more than {INSTALL_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        hint = ""
        if any(h in output for h in _NETWORK_HINTS):
            hint = (
                "PyPI looks unreachable from here, or lacks these releases (the OpenStack "
                f"client tests install {', '.join(requirements)} from it; pip's usual "
                "PIP_INDEX_URL and proxy settings apply). "
            )
        raise ClientInstallError(f"{hint}{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


def _build(venv: ClientVenv, requirements: tuple[str, ...]) -> None:
    if venv.path.exists():
        shutil.rmtree(venv.path)
    if not Path(SYSTEM_PYTHON).is_file():
        raise ClientInstallError(f"{SYSTEM_PYTHON} is missing: it builds the client virtualenv")
    _run_step([SYSTEM_PYTHON, "-m", "venv", str(venv.path)], "creating the client virtualenv")
    pip = [str(venv.python), "-m", "pip", "--disable-pip-version-check"]
    _run_step(
        [*pip, "install", "--quiet", *requirements],
        f"pip install {' '.join(requirements)}",
        requirements,
    )
    frozen = _run_step([*pip, "freeze", "--all"], "pip freeze")
    if not venv.openstack.is_file():
        raise ClientInstallError(f"the clients were installed but {venv.openstack} is missing")
    (venv.path / MARKER).write_text(frozen)


def ensure_client_venv(requirements: tuple[str, ...] = REQUIREMENTS) -> ClientVenv:
    """The client virtualenv, made (or remade, if broken) on first use.

    Raises ClientInstallError when it cannot be made, for example when PyPI is unreachable.
    """
    venv = ClientVenv(venv_dir(requirements))
    with _locked(venv.path.with_name(venv.path.name + ".lock")):
        if _works(venv):
            return venv
        started = time.monotonic()
        _build(venv, requirements)
        if not _works(venv):
            raise ClientInstallError(f"the clients do not import in {venv.path} after install")
        print(
            f"installed {', '.join(requirements)} in {venv.path} "
            f"in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
    return venv


# -- driving the clients ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cloud:
    """Credentials for the password plugin. The password travels in the environment or in a
    clouds.yaml file, never on a command line."""

    auth_url: str
    username: str
    password: str = field(repr=False)
    project_name: str

    def environ(self) -> dict[str, str]:
        return {
            "COVE_OS_AUTH_URL": self.auth_url,
            "COVE_OS_USERNAME": self.username,
            "COVE_OS_PASSWORD": self.password,
            "COVE_OS_PROJECT_NAME": self.project_name,
        }

    def clouds_yaml(self, name: str) -> str:
        """A clouds.yaml with one cloud; JSON is YAML, so no YAML library is needed."""
        auth = {
            "auth_url": self.auth_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }
        cloud = {"auth_type": "password", "auth": auth, "interface": "public"}
        return json.dumps({"clouds": {name: cloud}}, indent=2)


def _clean_env() -> dict[str, str]:
    """The test's environment without any OS_* settings that would override ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


class ClientError(AssertionError):
    """A client call failed where the test expected it to succeed."""


class TroveDriver:
    """A troveclient ``Client('1.0', session=...)`` in a child process of the client venv.

    Each ``call`` runs one manager method there (``call("databases", "list", iid)``) and
    returns its result as JSON: resources as their dicts, lists and tuples as lists. A client
    exception comes back as ``{"error": class name, "code": status, "message": text}`` from
    ``call_error`` and raises ClientError from ``call``.
    """

    #: How long one call may take before the driver is taken for hung.
    REPLY_TIMEOUT = 120.0

    def __init__(self, venv: ClientVenv, cloud: Cloud) -> None:
        # A file, not a pipe, for stderr: a chatty client must never block on a full pipe.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            [str(venv.python), str(DRIVER)],
            env={**_clean_env(), **cloud.environ()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.hello = self._receive()
        if not self.hello.get("ready"):
            self.close()
            raise ClientError(f"troveclient could not connect: {self.hello}\n{self._stderr()}")

    def _stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    def _receive(self) -> dict[str, Any]:
        """The driver's next line. Raises ClientError if it exits or hangs."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.REPLY_TIMEOUT)
        if not ready:
            self.proc.kill()
            raise ClientError(f"no answer from troveclient in {self.REPLY_TIMEOUT:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise ClientError(f"the troveclient driver exited: {self._stderr()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def request(
        self, manager: str, method: str, *args: Any, attrs: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One call; ``attrs`` are read from its result with getattr, as a script would."""
        assert self.proc.stdin is not None
        message = {"manager": manager, "method": method, "args": args, "kwargs": kwargs}
        if attrs:
            message["attrs"] = attrs
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        return self._receive()

    def call(self, manager: str, method: str, *args: Any, **kwargs: Any) -> Any:
        reply = self.request(manager, method, *args, **kwargs)
        if "error" in reply:
            raise ClientError(f"{manager}.{method}{args!r} raised {reply}")
        return reply["result"]

    def call_error(self, manager: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        reply = self.request(manager, method, *args, **kwargs)
        if "error" not in reply:
            raise ClientError(f"{manager}.{method}{args!r} succeeded: {reply['result']!r}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


@dataclass(frozen=True)
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class OpenStackCli:
    """The ``openstack`` command of the client venv, reading one cloud of a clouds.yaml."""

    def __init__(self, venv: ClientVenv, config_file: Path, cloud_name: str, home: Path) -> None:
        self.venv = venv
        self.env = {
            **_clean_env(),
            "OS_CLIENT_CONFIG_FILE": str(config_file),
            "OS_CLOUD": cloud_name,
            "HOME": str(home),
        }

    @classmethod
    def with_cloud(cls, venv: ClientVenv, cloud: Cloud, workdir: Path) -> OpenStackCli:
        """A CLI using ``cloud`` through a clouds.yaml (mode 0600) written in ``workdir``."""
        config = workdir / "clouds.yaml"
        config.touch(mode=0o600)
        config.write_text(cloud.clouds_yaml("cove"))
        return cls(venv, config, "cove", workdir)

    def run(self, *argv: str, timeout: float = 120) -> CliResult:
        full = [str(self.venv.openstack), *argv]
        done = subprocess.run(
            full,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(full, done.returncode, done.stdout, done.stderr)

    def ok(self, *argv: str) -> CliResult:
        """Run a command that must succeed. Raises ClientError with its output otherwise."""
        result = self.run(*argv)
        if result.returncode != 0:
            raise ClientError(
                f"openstack {' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stderr[-4000:]}{result.stdout[-2000:]}"
            )
        return result

    def json(self, *argv: str) -> Any:
        return self.ok(*argv, "-f", "json").json()
