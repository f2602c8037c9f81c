"""The catalogue of a Redis version, learned from a throw-away server of that version.

Redis describes its settings only through a running server, so one is started in a private
temporary directory, listening on a unix socket only (``port 0``), and asked:

* ``CONFIG GET *`` gives every setting and its default value;
* ``CONFIG SET name <its own value>`` tells the settings that can change live from those that
  take a restart (Redis answers "can't set immutable config");
* ``CONFIG SET name -1`` on a number makes Redis state its bounds ("argument must be between
  0 and 500 inclusive"), or that it is a memory value (bytes, so at least 0);
* ``CONFIG SET name <not a value>`` on a word makes Redis list the values it accepts
  ("argument(s) must be one of the following: ...") or say it is a yes/no setting.

Denied settings are never probed (changing them could disturb the probe itself) and never
returned. Memory settings are integers in bytes, as ``CONFIG GET`` shows them. The server is
stopped (SIGTERM; it has nothing to save) and its directory removed before returning.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.domain.parameters import Parameter, ParamType, denied

LOG = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
_INTEGER = re.compile(r"-?\d+")
_BETWEEN = re.compile(r"between (-?\d+) and (-?\d+) inclusive")
_ONE_OF = re.compile(r"must be one of the following: (.*)$")
#: A word no setting accepts, to make Redis list what it does accept.
_NOT_A_VALUE = "cove-not-a-value"


def read_parameters(bin_dir: str) -> list[Parameter]:
    """The settings tenants may set on the Redis whose ``redis-server`` is in ``bin_dir``.

    Raises OSError when the server cannot start, TimeoutError when it does not answer, and
    redis.RedisError when it stops answering while probed.
    """
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cove-redisparams-"))
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        # The binary by the name it has: redis-server may be a symlink that acts by its name.
        [
            str(Path(bin_dir) / "redis-server"),
            *("--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"),
            *("--dir", str(tmp), "--save", "", "--appendonly", "no"),
            *("--daemonize", "no", "--logfile", ""),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
        start_new_session=True,
    )
    try:
        client = _connect(proc, sock)
        with client:
            params = probe(client, Path(bin_dir) / "redis-server")
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.debug("read %d Redis parameters in %.2f s", len(params), time.monotonic() - started)
    return params


def _connect(proc: subprocess.Popen[bytes], sock: Path) -> redis.Redis:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OSError(f"redis-server exited with status {proc.returncode} while starting")
        if sock.exists():
            client = redis.Redis(
                unix_socket_path=str(sock),
                decode_responses=True,
                socket_timeout=10,
                retry=Retry(NoBackoff(), 0),
            )
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                return client
            client.close()
        time.sleep(0.01)
    raise TimeoutError(f"redis-server did not answer within {_START_TIMEOUT:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def probe(client: redis.Redis, binary: Path) -> list[Parameter]:
    """The catalogue of the (throw-away) server behind ``client``, without denied names;
    ``binary`` is its redis-server, started on its own to learn the bounds of settings that
    cannot change live."""
    current = client.config_get("*")
    return [
        _probe_one(client, binary, str(name), str(value or ""))
        for name, value in sorted(current.items(), key=lambda item: str(item[0]))
        if name and not denied("redis", str(name))
    ]


def _probe_one(client: redis.Redis, binary: Path, name: str, value: str) -> Parameter:
    answer = _try_set(client, name, value)
    immutable = answer is not None and ("immutable" in answer or "protected" in answer)
    if _INTEGER.fullmatch(value):
        return _integer(client, binary, name, value, immutable)
    if immutable:
        kind = ParamType.BOOLEAN if value in ("yes", "no") else ParamType.STRING
        return Parameter(name, kind, True)
    answer = _try_set(client, name, _NOT_A_VALUE)
    if answer is None:  # any text goes: put the value back
        _try_set(client, name, value)
        return Parameter(name, ParamType.STRING, False)
    if "'yes' or 'no'" in answer:
        return Parameter(name, ParamType.BOOLEAN, False)
    listed = _ONE_OF.search(answer)
    if listed:
        allowed = tuple(v.strip() for v in listed.group(1).split(",") if v.strip())
        if set(allowed) == {"yes", "no"}:
            return Parameter(name, ParamType.BOOLEAN, False)
        return Parameter(name, ParamType.STRING, False, allowed=allowed)
    kind = ParamType.BOOLEAN if value in ("yes", "no") else ParamType.STRING
    return Parameter(name, kind, False)


def _integer(
    client: redis.Redis, binary: Path, name: str, value: str, immutable: bool
) -> Parameter:
    low: int | None = 0 if int(value) >= 0 else None
    high: int | None = None
    if immutable:
        # Only a start reads it: a start with -1 makes Redis state the bounds and exit.
        answer = _start_with(binary, name, "-1")
        if answer is not None and (bounds := _BETWEEN.search(answer)):
            low, high = int(bounds.group(1)), int(bounds.group(2))
        return Parameter(name, ParamType.INTEGER, True, low, high)
    answer = _try_set(client, name, "-1")
    if answer is None:  # negative values are accepted: put the value back
        _try_set(client, name, value)
        low = None
    elif bounds := _BETWEEN.search(answer):
        low, high = int(bounds.group(1)), int(bounds.group(2))
    return Parameter(name, ParamType.INTEGER, False, low, high)


def _start_with(binary: Path, name: str, value: str) -> str | None:
    """What redis-server says when started with ``name`` set to ``value`` and refusing it, or
    None when it took the value (it is then stopped at once: port 0, no files)."""
    try:
        proc = subprocess.run(
            [str(binary), "--port", "0", "--save", "", "--appendonly", "no", f"--{name}", value],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=2,
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return None  # it took the value and ran
    return proc.stdout + proc.stderr if proc.returncode != 0 else None


def _try_set(client: redis.Redis, name: str, value: str) -> str | None:
    """None when Redis took ``value``, else its error message."""
    try:
        client.config_set(name, value)
    except redis.ResponseError as exc:
        return str(exc)
    return None
