"""Typed wrappers for the external commands the guest agent runs.

Every command is an argv list (never a shell string), has a timeout, and fails loudly: a non-zero
exit raises CommandFailed with the tail of its output. Secrets never go on argv; pass them in
files with mode 0600 or through the environment.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cove.common.errors import CommandFailed

LOG = logging.getLogger(__name__)


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
