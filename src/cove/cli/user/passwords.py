"""Where the ``cove`` command takes a password from: the command line (``NAME:PASSWORD`` or
``--password``, visible to other users of the host in ``ps``), standard input
(``--password-stdin``), a file (``--password-file``), or a prompt on the terminal that does not
echo it. Without a terminal and without a password, a command stops with an error naming the
ways to give one: it neither reads a password from a pipe it was not told to read nor lets the
terminal library warn that it cannot hide the input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def interactive() -> bool:
    """Whether a prompt can be answered unseen: standard input is a terminal."""
    return sys.stdin.isatty()


def password_sources(command: F) -> F:
    """``--password-stdin`` and ``--password-file`` for a command that takes a password."""
    command = click.option(
        "--password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the password from the first line of this file.",
    )(command)
    return click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input.",
    )(command)


#: How a command that has the options of :func:`password_sources` takes a password.
WAYS = "--password-stdin, --password-file or --password"


def read_password(
    name: str, given: str | None, from_stdin: bool, from_file: Path | None, ways: str = WAYS
) -> str:
    """The password of user ``name``: ``given`` (from the command line), else the first line
    of standard input (asked unseen when it is a terminal) or of ``from_file``, else a prompt
    asked twice.

    Raises click.UsageError when more than one source is given, a source is empty, or no
    source is given and there is no terminal to ask on (the message names ``ways``).
    """
    sources = [given is not None, from_stdin, from_file is not None]
    if sum(sources) > 1:
        raise click.UsageError(
            "give the password one way: NAME:PASSWORD, --password, --password-stdin or "
            "--password-file"
        )
    if from_stdin and interactive():  # typed at a terminal: not to be seen on it
        found = str(click.prompt(f"Password for user {name}", hide_input=True))
        where = "standard input"
    elif from_stdin:
        found = sys.stdin.readline()
        where = "standard input"
    elif from_file is not None:
        try:
            with from_file.open(encoding="utf-8") as f:
                found = f.readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"cannot read the password file {from_file}: {exc}") from exc
        where = str(from_file)
    elif given is not None:
        found, where = given, "the command line"
    elif interactive():
        prompt = f"Password for user {name}"
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))
    else:
        raise click.UsageError(
            f"no password for user {name} and no terminal to ask for one: give it with {ways}"
        )
    password = found.rstrip("\r\n")
    if not password:
        raise click.UsageError(f"the password for user {name} from {where} is empty")
    return password
