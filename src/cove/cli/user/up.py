"""The ``cove up`` command: options and errors only; the control plane itself is run by
:mod:`cove.cli.up`."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command("up")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="COVE_DATA_DIR",
    help="Where Cove keeps everything it writes (COVE_DATA_DIR).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    envvar="COVE_API_PORT",
    help="API port (COVE_API_PORT, default 8779).",
)
def up_command(data_dir: str | None, port: int | None) -> None:
    """Run the whole control plane here: API, task manager, conductor, embedded bus."""
    from cove.cli.up import up
    from cove.common.errors import CoveError
    from cove.common.log import setup_logging
    from cove.common.settings import load_settings

    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    if port:
        overrides["api_port"] = port
    try:
        settings = load_settings(**overrides)
        setup_logging("up", settings.log_level, settings.log_format)
        status = up(settings)
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc
    sys.exit(status)
