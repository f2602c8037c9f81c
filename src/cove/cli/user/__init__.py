"""The ``cove`` command: a terminal client of Cove's Trove v1.0 API.

This package owns the command tree: the ``cli`` group and its global options live here, and
each command group in a module of its own (:mod:`.instances`, :mod:`.dbusers`, :mod:`.catalog`,
:mod:`.configurations`, :mod:`.backups`, :mod:`.up`). What every command shares is
:class:`.app.App`; the HTTP side is :mod:`.client`, logging in :mod:`.login` with the token
cache of :mod:`.tokens`; finding credentials is :mod:`cove.cli.clouds`; names are resolved by
:mod:`.refs`, passwords read by :mod:`.passwords`; rendering and the ``--user`` syntax live in
:mod:`cove.cli.userfmt`, the output options in :mod:`cove.cli.output`.
"""

from __future__ import annotations

import click

from cove import __version__
from cove.cli import output
from cove.cli.user.app import App
from cove.cli.user.backups import backup
from cove.cli.user.catalog import datastore, flavor, limits, network, quota
from cove.cli.user.clusters import cluster
from cove.cli.user.completion import COMPLETE_VAR, completion
from cove.cli.user.configurations import configuration
from cove.cli.user.dbusers import database, root, user
from cove.cli.user.instances import instance
from cove.cli.user.up import up_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--os-cloud",
    "cloud",
    envvar="OS_CLOUD",
    show_envvar=True,
    help="Cloud of clouds.yaml to use (default: 'cove', or the file's only cloud).",
)
@click.option(
    "--url",
    envvar="COVE_URL",
    show_envvar=True,
    help="Cove API address, instead of the database endpoint of the identity catalog.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="HTTP timeout in seconds.",
)
@click.version_option(__version__, prog_name="cove")
@click.pass_context
def cli(ctx: click.Context, cloud: str | None, url: str | None, timeout: float) -> None:
    """Manage Cove database instances.

    Credentials come from clouds.yaml and OS_* variables, as for the openstack command: after
    'make run', export the OS_CLIENT_CONFIG_FILE and OS_CLOUD it prints.
    """
    if url and not url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--url")
    app = App(
        url=url.rstrip("/") if url else None,
        cloud=cloud or None,
        timeout=timeout,
    )
    ctx.obj = app
    ctx.call_on_close(app.close)


cli.add_command(instance)
cli.add_command(cluster)
cli.add_command(database)
cli.add_command(user)
cli.add_command(root)
cli.add_command(configuration)
cli.add_command(backup)
cli.add_command(flavor)
cli.add_command(datastore)
cli.add_command(limits)
cli.add_command(network)
cli.add_command(quota)
cli.add_command(up_command)
cli.add_command(completion)


output.add_options(cli, raw_json=True)


def main() -> None:
    """Entry point of ``cove``."""
    cli.main(prog_name="cove", complete_var=COMPLETE_VAR)
