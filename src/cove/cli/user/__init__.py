"""The ``cove`` command: a terminal client of Cove's Trove v1.0 API.

This package owns the command tree: the ``cli`` group and its global options live here, and
each command group in a module of its own (:mod:`.instances`, :mod:`.dbusers`, :mod:`.catalog`,
:mod:`.up`). The HTTP side is :mod:`.client`; rendering and the ``--user`` syntax live in
:mod:`cove.cli.userfmt`.
"""

from __future__ import annotations

import click

from cove import __version__
from cove.cli.user.catalog import datastore, flavor, limits
from cove.cli.user.client import App
from cove.cli.user.dbusers import database, root, user
from cove.cli.user.instances import instance
from cove.cli.user.up import up_command

__all__ = ["cli", "main"]

DEFAULT_URL = "http://127.0.0.1:8779"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="COVE_URL",
    show_envvar=True,
    default=DEFAULT_URL,
    show_default=True,
    help="Cove API address.",
)
@click.option(
    "--project",
    envvar="COVE_PROJECT",
    show_envvar=True,
    default="default",
    show_default=True,
    help="Project id.",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON bodies instead of tables.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="HTTP timeout in seconds.",
)
@click.version_option(__version__, prog_name="cove")
@click.pass_context
def cli(ctx: click.Context, url: str, project: str, json_output: bool, timeout: float) -> None:
    """Manage Cove database instances."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--url")
    app = App(url=url.rstrip("/"), project=project, json_output=json_output, timeout=timeout)
    ctx.obj = app
    ctx.call_on_close(app.close)


cli.add_command(instance)
cli.add_command(database)
cli.add_command(user)
cli.add_command(root)
cli.add_command(flavor)
cli.add_command(datastore)
cli.add_command(limits)
cli.add_command(up_command)


def main() -> None:
    """Entry point of ``cove``."""
    cli.main(prog_name="cove")
