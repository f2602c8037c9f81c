"""``--wait``: polling until a change is done, with its progress on stderr.

Tests set :data:`POLL_INTERVAL` here to 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import ApiError, inst_path, need
from cove.cli.userfmt import Body

#: Seconds between two polls of ``--wait`` once a change has taken a while; tests set it to 0.
POLL_INTERVAL = 0.5
#: The pause at first: a change that is quick (a Redis instance takes about a tenth of a
#: second) is seen soon after it is done. After FIRST_POLLS of them (a quarter of a second)
#: the pauses grow by half each time up to POLL_INTERVAL, so that many clients waiting at once
#: do not keep the API busy.
FIRST_PAUSE = 0.02
FIRST_POLLS = 12


def pauses() -> Iterator[float]:
    """The pauses between polls: FIRST_POLLS of FIRST_PAUSE, then growing by half up to
    POLL_INTERVAL, then that."""
    pause = FIRST_PAUSE
    for _ in range(FIRST_POLLS):
        yield min(pause, POLL_INTERVAL)
    while True:
        pause = min(pause * 1.5, POLL_INTERVAL)
        yield pause


T = TypeVar("T")


class StoppedWaiting(click.ClickException):
    """Ctrl-C during ``--wait``: the change goes on, only the CLI stops watching."""

    exit_code = 130


class _Progress:
    """A label and the elapsed time on stderr: rewritten in place on a terminal, else one line
    per change of label so that logs stay readable."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last: str | None = None
        self._open = False

    def show(self, label: str, elapsed: float) -> None:
        line = f"{label} ({elapsed:.1f}s)"
        if self._tty:
            click.echo(f"\r{line}\x1b[K", err=True, nl=False)
            self._open = True
        elif label != self._last:
            click.echo(line, err=True)
        self._last = label

    def end(self) -> None:
        if self._open:
            click.echo("", err=True)
            self._open = False


@dataclass(frozen=True)
class Seen(Generic[T]):
    """One look at a change: ``label`` is shown (and named when waiting gives up), ``value``
    is what :func:`poll` answers once ``done``, and ``failure`` ends the wait with an error."""

    label: str
    value: T
    done: bool = False
    failure: str | None = None


def poll(look: Callable[[], Seen[T]], *, timeout: float, subject: str, see: str) -> T:
    """Call ``look`` (after each of ``pauses``), showing its label and the time spent, until it sees
    the change done; answers that look's value. ``subject`` names what is watched and ``see``
    the command that shows it, in messages.

    Raises click.ClickException when a look sees a failure or ``timeout`` seconds pass
    (the change carries on), StoppedWaiting on Ctrl-C, and what ``look`` raises.
    """
    progress = _Progress()
    start = time.monotonic()
    waits = pauses()
    try:
        while True:
            elapsed = time.monotonic() - start
            seen = look()
            progress.show(seen.label, elapsed)
            if seen.failure is not None:
                raise click.ClickException(seen.failure)
            if seen.done:
                return seen.value
            if elapsed >= timeout:
                raise click.ClickException(
                    f"gave up waiting after {timeout:g} s: {subject} is {seen.label}; "
                    f"it carries on in the background (see '{see}')"
                )
            time.sleep(next(waits))
    except KeyboardInterrupt:
        raise StoppedWaiting(f"stopped waiting; {subject} carries on in the background") from None
    finally:
        progress.end()


def wait_for(app: App, instance_id: str, *, gone: bool, timeout: float) -> Body | None:
    """Poll an instance until it is ACTIVE (or, with ``gone``, until it no longer exists).

    Returns the last instance view (None once gone). Raises click.ClickException when the
    instance goes to ERROR, when ``timeout`` seconds pass, or on Ctrl-C.
    """

    def look() -> Seen[Body | None]:
        try:
            inst: Body = need(app.api.get(inst_path(instance_id)), "instance")
        except ApiError as exc:
            if gone and exc.code == 404:
                return Seen("DELETED", None, done=True)
            raise
        status = str(inst.get("status") or "UNKNOWN")
        failure = None
        if status == "ERROR":
            failure = f"instance {instance_id} is in ERROR: {fmt.fault_message(inst)}"
        done = status == "ACTIVE" and not gone
        return Seen(fmt.status_label(inst), dict(inst), done=done, failure=failure)

    return poll(
        look,
        timeout=timeout,
        subject=f"instance {instance_id}",
        see=f"cove instance show {instance_id}",
    )


wait_option = click.option("--wait", is_flag=True, help="Wait until the change is done.")


def wait_timeout_option(default: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--wait-timeout",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        help="Seconds to wait before giving up (with --wait).",
    )
