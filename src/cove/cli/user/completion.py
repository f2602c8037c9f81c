"""``cove completion bash|zsh``: the script a shell sources to complete ``cove`` command
lines. The script calls ``cove`` with click's completion variables set; commands, options and
choices complete from the command tree, and the names of instances, configuration groups,
backups, clusters and flavors from the API (:meth:`cove.cli.user.refs.Ref.shell_complete`)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from cove.cli.user import COMPLETE_VAR


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  echo 'eval "$(cove completion bash)"' >> ~/.bashrc
    zsh:   echo 'eval "$(cove completion zsh)"' >> ~/.zshrc
    """
    root = click.get_current_context().find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # both are click's own
    click.echo(cls(root.command, {}, "cove", COMPLETE_VAR).source())
