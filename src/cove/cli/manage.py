"""``cove-manage``: operator commands for the control database, the catalogue, identity
(projects, users, roles) and networks."""

from __future__ import annotations

import sys

import click
from sqlalchemy import select

from cove.cli import controldb, output
from cove.cli.manage_identity import bootstrap, project, role, user
from cove.cli.manage_network import network
from cove.cli.userfmt import Table
from cove.common.errors import CoveError
from cove.common.log import setup_logging
from cove.common.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc


def _database(settings: Settings):  # type: ignore[no-untyped-def]
    """The control database, which must exist already (see ``cove.cli.controldb``)."""
    return controldb.existing(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate Cove: control database, datastores, flavors, projects, users, roles, networks."""
    setup_logging("manage", "WARNING")


@main.group()
def db() -> None:
    """The control database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the control database schema up to date and seed the catalogue."""
    from cove.cli.bootstrap import bootstrap_catalog

    settings = _settings()
    versions = bootstrap_catalog(settings)
    click.echo(
        f"control database at head; datastore versions found: {', '.join(versions) or 'none'}"
    )


@db.command("version")
def db_version() -> None:
    """Show the schema revision."""
    from cove.db.migrate import current

    settings = _settings()
    controldb.require(settings)
    click.echo(current(settings.database_url) or "empty")


@main.group()
def datastore() -> None:
    """Datastores and their versions."""


@datastore.command("list")
def datastore_list() -> None:
    """List datastore versions, active or not."""
    from cove.db.models import Datastore

    with _database(_settings()).session() as s:
        rows = [
            [
                ds.name,
                v.name,
                v.version,
                "active" if v.active else "disabled",
                v.id == ds.default_version_id,
                v.bin_dir,
            ]
            for ds in s.scalars(select(Datastore).order_by(Datastore.name))
            for v in ds.versions
        ]
    headers = ["Datastore", "Version", "Number", "State", "Default", "Binaries"]
    output.emit(Table.of(headers, rows))


@datastore.command("register")
def datastore_register() -> None:
    """Register every datastore version installed on this machine."""
    from cove.db.catalog import register_found_versions

    with _database(_settings()).session() as s:
        found = register_found_versions(s)
    for f in found:
        click.echo(f"{f.datastore} {f.version} at {f.bin_dir}")


@datastore.command("add-version")
@click.argument("datastore_name")
@click.argument("name")
@click.option("--bin-dir", required=True, help="Directory holding the server's binaries.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default version.")
def datastore_add_version(datastore_name: str, name: str, bin_dir: str, make_default: bool) -> None:
    """Add (or update) a version of mariadb, postgresql or redis from a directory of binaries,
    and read its configuration parameters from them."""
    from pathlib import Path

    from cove.compute.discovery import version_in
    from cove.db.catalog import refresh_parameters, register_version

    try:
        found = version_in(datastore_name, name, Path(bin_dir))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    with _database(_settings()).session() as s:
        register_version(s, found, make_default=make_default)
        refresh_parameters(s, found)
    click.echo(f"{datastore_name} {name} ({found.version}) registered")


def _set_version_active(datastore_name: str, name: str, active: bool) -> None:
    from cove.db.catalog import choose_defaults, get_datastore, get_version

    with _database(_settings()).session() as s:
        try:
            version = get_version(s, get_datastore(s, datastore_name), name)
        except CoveError as exc:
            raise click.ClickException(exc.message) from exc
        version.active = active
        choose_defaults(s)  # moves the default off a disabled version
    click.echo(f"{datastore_name} {name} {'enabled' if active else 'disabled'}")


@datastore.command("disable-version")
@click.argument("datastore_name")
@click.argument("name")
def datastore_disable(datastore_name: str, name: str) -> None:
    """Stop offering a version for new instances."""
    _set_version_active(datastore_name, name, False)


@datastore.command("enable-version")
@click.argument("datastore_name")
@click.argument("name")
def datastore_enable(datastore_name: str, name: str) -> None:
    """Offer a disabled version again."""
    _set_version_active(datastore_name, name, True)


@main.group()
def flavor() -> None:
    """Flavors (sizes of instances)."""


@flavor.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include disabled flavors.")
def flavor_list(show_all: bool) -> None:
    """List flavors."""
    from cove.db.models import Flavor

    with _database(_settings()).session() as s:
        rows = [
            [f.id, f.name, f.ram, f.vcpus, f.disk, "active" if f.active else "disabled"]
            for f in s.scalars(select(Flavor).order_by(Flavor.ram))
            if f.active or show_all
        ]
    headers = ["ID", "Name", "RAM (MB)", "vCPUs", "Disk (GB)", "State"]
    output.emit(Table.of(headers, rows))


@flavor.command("add")
@click.argument("name")
@click.option("--ram", type=click.IntRange(min=128), required=True, help="Memory in MB.")
@click.option("--vcpus", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--disk", type=click.IntRange(min=0), default=0, show_default=True)
def flavor_add(name: str, ram: int, vcpus: int, disk: int) -> None:
    """Add a flavor."""
    from cove.db.catalog import add_flavor

    with _database(_settings()).session() as s:
        try:
            f = add_flavor(s, name, ram, vcpus, disk)
        except CoveError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(f"flavor {f.name} added with id {f.id}")


def _set_flavor_active(ref: str, active: bool) -> None:
    from cove.db.models import Flavor

    with _database(_settings()).session() as s:
        f = s.get(Flavor, ref) or s.scalar(select(Flavor).where(Flavor.name == ref))
        if f is None:
            raise click.ClickException(f"flavor '{ref}' not found")
        f.active = active
    click.echo(f"flavor {ref} {'enabled' if active else 'disabled'}")


@flavor.command("disable")
@click.argument("ref")
def flavor_disable(ref: str) -> None:
    """Stop offering a flavor (existing instances keep it)."""
    _set_flavor_active(ref, False)


@flavor.command("enable")
@click.argument("ref")
def flavor_enable(ref: str) -> None:
    """Offer a disabled flavor again."""
    _set_flavor_active(ref, True)


main.add_command(bootstrap)
main.add_command(project)
main.add_command(user)
main.add_command(role)
main.add_command(network)
output.add_options(main)


if __name__ == "__main__":
    sys.exit(main())
