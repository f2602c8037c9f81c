"""``cove-manage network``: the networks instances attach to (for the local driver, named
loopback address pools)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cove.cli import controldb, output
from cove.cli.userfmt import Table
from cove.common.errors import CoveError
from cove.common.settings import load_settings


@contextmanager
def _session() -> Iterator[Session]:
    """A session on the control database the settings name; a Cove error raised inside
    becomes the command's error message."""
    try:
        settings = load_settings()
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc
    database = controldb.existing(settings)
    try:
        with database.session() as s:
            yield s
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        database.dispose()


def _run(change: Callable[[Session], str]) -> None:
    with _session() as s:
        message = change(s)
    click.echo(message)


@click.group()
def network() -> None:
    """Networks: named address pools instances attach to; one is the default."""


@network.command("list")
def network_list() -> None:
    """List networks, the default marked, with how many instances use each."""
    from cove.db.models import Instance
    from cove.db.networks import list_networks

    with _session() as s:
        rows = s.execute(
            select(Instance.network_id, func.count())
            .where(Instance.deleted.is_(False))
            .group_by(Instance.network_id)
        )
        counts = {network_id: count for network_id, count in rows}
        listed = [
            [n.name, n.cidr, n.id, counts.get(n.id, 0), n.is_default] for n in list_networks(s)
        ]
    output.emit(Table.of(["Name", "CIDR", "ID", "Instances", "Default"], listed))


@network.command("create")
@click.argument("name")
@click.argument("cidr")
@click.option("--default", "make_default", is_flag=True, help="Make it the default network.")
def network_create(name: str, cidr: str, make_default: bool) -> None:
    """Add a network NAME with the loopback range CIDR (such as 127.43.0.0/24)."""
    from cove.db.networks import create_network

    def change(s: Session) -> str:
        n = create_network(s, name, cidr, default=make_default)
        return f"network {n.name} ({n.cidr}) created with id {n.id}" + (
            ", the default" if n.is_default else ""
        )

    _run(change)


@network.command("set-default")
@click.argument("name")
def network_set_default(name: str) -> None:
    """Make NAME (a name or id) the network of creates that name none."""
    from cove.db.networks import set_default_network

    _run(lambda s: f"network {set_default_network(s, name).name} is the default")


@network.command("delete")
@click.argument("name")
def network_delete(name: str) -> None:
    """Delete NAME (a name or id): not the default, and not while an instance uses it."""
    from cove.db.networks import delete_network

    def change(s: Session) -> str:
        delete_network(s, name)
        return f"network {name} deleted"

    _run(change)
