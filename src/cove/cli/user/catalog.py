"""The ``cove flavor``, ``cove datastore``, ``cove network``, ``cove limits`` and ``cove quota``
commands: what a project may ask for."""

from __future__ import annotations

from urllib.parse import quote

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import need
from cove.cli.user.refs import FLAVOR_REF


@click.group("flavor")
def flavor() -> None:
    """Instance sizes."""


@flavor.command("list")
@click.pass_obj
def flavor_list(app: App) -> None:
    """List flavors."""
    items = app.api.paginate("flavors", "flavors")
    keys = ("name", "vcpus", "ram", "disk")
    rows = ([fmt.flavor_id(f), *(f.get(k) for k in keys)] for f in items)
    headers = ["ID", "Name", "vCPUs", "RAM (MB)", "Disk (GB)"]
    app.output({"flavors": items}, lambda: fmt.Table.of(headers, rows))


@flavor.command("show")
@click.argument("flavor_id", metavar="FLAVOR", type=FLAVOR_REF)
@click.pass_obj
def flavor_show(app: App, flavor_id: str) -> None:
    """Show flavor FLAVOR."""
    body = app.api.get(f"flavors/{quote(flavor_id, safe='')}")
    app.output(body, lambda: fmt.Pairs.of(fmt.flat_pairs(need(body, "flavor"))))


@click.group("datastore")
def datastore() -> None:
    """Database engines and their versions."""


@datastore.command("list")
@click.pass_obj
def datastore_list(app: App) -> None:
    """List datastores."""
    items = app.api.paginate("datastores", "datastores")
    rows = (
        [d.get("name"), d.get("id"), fmt.default_version_name(d), d.get("versions")] for d in items
    )
    headers = ["Name", "ID", "Default version", "Versions"]
    app.output({"datastores": items}, lambda: fmt.Table.of(headers, rows))


@datastore.command("show")
@click.argument("name")
@click.pass_obj
def datastore_show(app: App, name: str) -> None:
    """Show datastore NAME (a name or an id)."""
    body = app.api.get(f"datastores/{quote(name, safe='')}")
    app.output(body, lambda: fmt.Pairs.of(fmt.datastore_pairs(need(body, "datastore"))))


@datastore.command("versions")
@click.argument("name")
@click.pass_obj
def datastore_versions(app: App, name: str) -> None:
    """List the versions of datastore NAME."""
    items = app.api.paginate(f"datastores/{quote(name, safe='')}/versions", "versions")
    rows = ([v.get("name"), v.get("version"), v.get("id")] for v in items)
    app.output({"versions": items}, lambda: fmt.Table.of(["Name", "Version", "ID"], rows))


@click.command("limits")
@click.pass_obj
def limits(app: App) -> None:
    """Show the limits of the project."""
    body = app.api.get("limits")
    app.output(body, lambda: fmt.limits_shown(need(body, "limits")))


@click.group("network")
def network() -> None:
    """Networks instances can attach to."""


@network.command("list")
@click.pass_obj
def network_list(app: App) -> None:
    """List networks; 'instance create --network' takes an id or a name from here."""
    items = app.api.paginate("networks", "networks")
    rows = ([n.get("id"), n.get("name"), n.get("cidr"), bool(n.get("is_default"))] for n in items)
    app.output({"networks": items}, lambda: fmt.Table.of(["ID", "Name", "CIDR", "Default"], rows))


@click.group("quota")
def quota() -> None:
    """Quotas of a project (changing them takes the admin role)."""


@quota.command("show")
@click.argument("project", required=False)
@click.pass_obj
def quota_show(app: App, project: str | None) -> None:
    """Show the quotas and usage of PROJECT (an id or a name; default: your project)."""
    project_id = app.project_id(project)
    body = app.api.get(f"mgmt/quotas/{quote(project_id, safe='')}")
    app.output(body, lambda: fmt.quotas_shown(need(body, "quotas")))


@quota.command("set")
@click.argument("project")
@click.argument("resource")
@click.argument("limit", type=click.IntRange(min=-1))
@click.pass_obj
def quota_set(app: App, project: str, resource: str, limit: int) -> None:
    """Set the quota of RESOURCE (instances, ram, volumes, backups) of PROJECT to LIMIT
    (-1: unlimited)."""
    project_id = app.project_id(project)
    body = app.api.request(
        "PUT", f"mgmt/quotas/{quote(project_id, safe='')}", {"quotas": {resource: limit}}
    )
    app.output(body, lambda: fmt.quotas_shown(need(body, "quotas")))
