"""The output options both commands share, ``cove`` and ``cove-manage``: ``-f FORMAT`` and
``-c COLUMN``, as OpenStack's command line has them, accepted anywhere on the line.

Click reads an option only after the command that declares it, so :func:`add_options` gives
the options to every group and command of a tree; each records what it was given in the
``meta`` of the run's click contexts (one dict for the whole command line, the last ``-f``
winning and the ``-c`` adding up), and :func:`emit` prints with what was chosen.
"""

from __future__ import annotations

from typing import Any

import click

from cove.cli import userfmt as fmt

FORMAT_KEY = "cove.format"
COLUMNS_KEY = "cove.columns"
RAW_JSON_KEY = "cove.json"


def chosen(key: str, default: Any) -> Any:
    """What the command line chose for ``key`` (``default`` when nothing did)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(key, default) if ctx is not None else default


def form() -> str:
    return str(chosen(FORMAT_KEY, "table"))


def columns() -> list[str]:
    return list(chosen(COLUMNS_KEY, []))


def emit(shown: fmt.Table | fmt.Pairs) -> None:
    """Print ``shown`` in the chosen format with the chosen columns.

    Raises click.UsageError for a ``-c`` that names no column.
    """
    try:
        text = fmt.render(fmt.select(shown, columns()), form())
    except fmt.ColumnError as exc:
        raise click.UsageError(str(exc)) from exc
    if text:  # an empty listing in a headerless format prints nothing, not an empty line
        click.echo(text)


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[FORMAT_KEY] = value


def _add_columns(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    ctx.meta.setdefault(COLUMNS_KEY, []).extend(value)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[RAW_JSON_KEY] = True


def _options(raw_json: bool) -> list[click.Parameter]:
    found: list[click.Parameter] = [
        click.Option(
            ["-f", "--format", "output_format"],
            type=click.Choice(fmt.FORMATS),
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
    ]
    if raw_json:
        found.append(
            click.Option(
                ["--json", "output_json"],
                is_flag=True,
                expose_value=False,
                callback=_set_json,
                help="Print the API's JSON bodies as they are.",
            )
        )
    return found


def add_options(command: click.Command, *, raw_json: bool = False) -> None:
    """Give ``command`` and everything under it ``-f`` and ``-c`` (and, with ``raw_json``,
    ``--json``), but for an option a command already has."""
    taken = {opt for p in command.params for opt in p.opts}
    command.params += [p for p in _options(raw_json) if not taken.intersection(p.opts)]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_options(sub, raw_json=raw_json)
