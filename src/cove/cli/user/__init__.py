"""The ``cove`` command: a terminal client of Cove's Trove v1.0 API.

This package owns the command tree: the ``cli`` group and its global options live here, and
each command group in a module of its own (:mod:`.instances`, :mod:`.dbusers`, :mod:`.catalog`,
:mod:`.configurations`, :mod:`.backups`, :mod:`.up`). The HTTP side, authentication included, is
:mod:`.client`; finding credentials is :mod:`cove.cli.clouds`; rendering and the ``--user``
syntax live in :mod:`cove.cli.userfmt`.
"""

from __future__ import annotations

import click

from cove import __version__
from cove.cli.user.backups import backup
from cove.cli.user.catalog import datastore, flavor, limits, network, quota
from cove.cli.user.client import COLUMNS_KEY, FORMAT_KEY, RAW_JSON_KEY, App
from cove.cli.user.clusters import cluster
from cove.cli.user.completion import completion
from cove.cli.user.configurations import configuration
from cove.cli.user.dbusers import database, root, user
from cove.cli.user.instances import instance
from cove.cli.user.up import up_command
from cove.cli.userfmt import FORMATS

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


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[FORMAT_KEY] = value


def _add_columns(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    ctx.meta.setdefault(COLUMNS_KEY, []).extend(value)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[RAW_JSON_KEY] = True


def output_options() -> list[click.Parameter]:
    """``-f``, ``-c`` and ``--json``, for every group and command: click reads an option
    only after the command that declares it, and a user puts these anywhere on the line."""
    return [
        click.Option(
            ["-f", "--format", "output_format"],
            type=click.Choice(FORMATS),
            expose_value=False,
            callback=_set_format,
            help="Output format (default: table).",
        ),
        click.Option(
            ["-c", "--column", "output_columns"],
            multiple=True,
            metavar="COLUMN",
            expose_value=False,
            callback=_add_columns,
            help="Show this column (repeatable; default: all).",
        ),
        click.Option(
            ["--json", "output_json"],
            is_flag=True,
            expose_value=False,
            callback=_set_json,
            help="Print the API's JSON bodies as they are.",
        ),
    ]


def _with_output_options(command: click.Command) -> None:
    taken = {opt for p in command.params for opt in p.opts}
    command.params += [p for p in output_options() if not taken.intersection(p.opts)]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_output_options(sub)


_with_output_options(cli)


def main() -> None:
    """Entry point of ``cove``."""
    cli.main(prog_name="cove")
