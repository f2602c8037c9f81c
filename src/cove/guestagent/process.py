"""Typed wrappers for the external commands the guest agent runs.

Every command is an argv list (never a shell string), has a timeout, and fails loudly: a non-zero
exit raises CommandFailed with the tail of its output. Secrets never go on argv; pass them in
files with mode 0600 or through the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cove.common.errors import CommandFailed

LOG = logging.getLogger(__name__)

#: Bytes a pipe to or from a streamed command holds: the most Linux lets an unprivileged
#: process ask for by default (``/proc/sys/fs/pipe-max-size``).
PIPE_SIZE = 1 << 20


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> CommandResult:
    """Run ``argv`` to completion and return its output.

    Raises CommandFailed when it cannot start, times out or exits non-zero.
    """
    args = tuple(str(a) for a in argv)
    LOG.debug("running %s", args[0])
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{args[0]} is not installed: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{Path(args[0]).name} did not finish within {timeout:.0f} s") from exc
    result = CommandResult(args, proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise CommandFailed(
            f"{Path(args[0]).name} exited with status {proc.returncode}: " + " | ".join(tail)
        )
    return result


def _raise(exc: OSError) -> None:
    raise exc


def copy_private(source: Path, target: Path) -> None:
    """Copy the directory ``source`` to ``target`` (which must not exist) as ``cp -a`` does,
    sharing blocks where the filesystem can, then take every group and other permission off
    the copy: a template the control plane made is its group's to read, the copy is this
    instance's alone. Raises CommandFailed."""
    run(["cp", "-a", "--reflink=auto", source, target], timeout=300)
    try:
        for root, dirs, files in os.walk(target, onerror=_raise):
            for path in (root, *(os.path.join(root, name) for name in dirs + files)):
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & ~0o077)
    except OSError as exc:
        raise CommandFailed(f"cannot make the copy {target} private: {exc}") from exc


def tail(path: Path, lines: int = 10) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(data.strip().splitlines()[-lines:])


class Streamed:
    """A running command whose output is read as a stream of chunks (see :func:`stream_out`).

    ``chunks`` yields stdout until it ends, then raises CommandFailed if the command exited
    non-zero (with the tail of its stderr), so a consumer never takes a cut-short stream for a
    whole one.
    """

    def __init__(self, proc: subprocess.Popen[bytes], name: str, errors: Path) -> None:
        self.proc = proc
        self.name = name
        self._errors = errors

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read(size)
            if not chunk:
                break
            yield chunk
        code = self.proc.wait()
        if code != 0:
            raise CommandFailed(f"{self.name} exited with status {code}: {tail(self._errors, 5)}")


@contextmanager
def stream_out(
    argv: Sequence[str | Path],
    *,
    errors: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Streamed]:
    """Run ``argv`` with its stdout to read as a stream and its stderr to the file ``errors``;
    a command still running when the block ends (the consumer failed) is killed.

    Raises CommandFailed when it cannot start.
    """
    args = tuple(str(a) for a in argv)
    name = Path(args[0]).name
    with errors.open("wb") as err:
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        except FileNotFoundError as exc:
            raise CommandFailed(f"{args[0]} is not installed: {exc}") from exc
    assert proc.stdout is not None
    _widen(proc.stdout.fileno())
    try:
        yield Streamed(proc, name, errors)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _widen(pipe: int) -> None:
    """Make ``pipe`` hold ``PIPE_SIZE`` bytes rather than 64 KiB: tools read and write small
    records (tar: 10 KiB) while the agent moves MiBs at a time, so with the wider pipe both
    sides wait on each other far less often. Where that is refused, the pipe stays as it is."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def stream_in(
    argv: Sequence[str | Path],
    chunks: Iterable[bytes],
    *,
    errors: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run ``argv`` with ``chunks`` as its stdin, to completion.

    ``chunks`` is read to its end even when the command stops reading early and exits 0, so
    whatever the iterator checks at its end (a backup's checksum) is checked; it is closed
    afterwards when it has a ``close`` (so a reader's threads stop), whatever happened.

    Raises CommandFailed when it cannot start or exits non-zero, and whatever reading
    ``chunks`` raises (the command is killed then).
    """
    args = tuple(str(a) for a in argv)
    name = Path(args[0]).name
    try:
        with errors.open("wb") as err:
            try:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE,
                    stdout=err,
                    stderr=err,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                )
            except FileNotFoundError as exc:
                raise CommandFailed(f"{args[0]} is not installed: {exc}") from exc
        code = _feed(proc, chunks)
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    if code != 0:
        raise CommandFailed(f"{name} exited with status {code}: {tail(errors, 5)}")


def _feed(proc: subprocess.Popen[bytes], chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` into ``proc``'s stdin and wait for it; its exit status. Kills it when
    reading ``chunks`` raises."""
    assert proc.stdin is not None
    _widen(proc.stdin.fileno())
    try:
        stream = iter(chunks)
        try:
            for chunk in stream:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            # The command stopped reading: its status says why. When it is content, the rest
            # is still read (and so checked) before the stream counts as used.
            if proc.wait() == 0:
                for _ in stream:
                    pass
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
