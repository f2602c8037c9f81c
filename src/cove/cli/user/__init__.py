"""The ``cove`` command: a terminal client of Cove's Trove v1.0 API.

This package owns the command tree: the ``cli`` group and its global options live here, and each
command group in a module of its own (:mod:`.instances`, :mod:`.dbusers`, :mod:`.catalog`,
:mod:`.configurations`, :mod:`.backups`, :mod:`.up`). What every command shares is
:class:`.app.App`; the HTTP side is :mod:`.client` over :mod:`.transport`, logging in
:mod:`.login` with the token cache of :mod:`.tokens`; finding credentials is
:mod:`cove.cli.clouds`; names are resolved by :mod:`.refs`, passwords read by :mod:`.passwords`;
rendering and the ``--user`` syntax live in :mod:`cove.cli.userfmt`, the output options in
:mod:`cove.cli.output`.
"""

from __future__ import annotations

import importlib

import click

from cove import __version__
from cove.cli import output
from cove.cli.user.app import App

#: The variable click's completion scripts set when they call ``cove``.
COMPLETE_VAR = "_COVE_COMPLETE"

#: Every command of ``cove``, as ``module:attribute``: a module is imported when a command
#: line names its command (or ``--help`` lists them all), so a short command pays for the
#: code it runs, not for every other command's.
COMMANDS = {
    "instance": "cove.cli.user.instances:instance",
    "cluster": "cove.cli.user.clusters:cluster",
    "database": "cove.cli.user.dbusers:database",
    "user": "cove.cli.user.dbusers:user",
    "root": "cove.cli.user.dbusers:root",
    "configuration": "cove.cli.user.configurations:configuration",
    "backup": "cove.cli.user.backups:backup",
    "flavor": "cove.cli.user.catalog:flavor",
    "datastore": "cove.cli.user.catalog:datastore",
    "limits": "cove.cli.user.catalog:limits",
    "network": "cove.cli.user.catalog:network",
    "quota": "cove.cli.user.catalog:quota",
    "up": "cove.cli.user.up:up_command",
    "completion": "cove.cli.user.completion:completion",
}


class CommandGroup(click.Group):
    """The ``cove`` group: its commands come from :data:`COMMANDS`, each given the output
    options on its way in."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        output.add_options(command, raw_json=True)  # once: it adds no option twice
        return command


__all__ = ["cli", "main"]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


output.add_options(cli, raw_json=True)


def main() -> None:
    """Entry point of ``cove``."""
    cli.main(prog_name="cove", complete_var=COMPLETE_VAR)
