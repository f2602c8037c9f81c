"""The ``cove configuration`` commands: configuration groups and the parameters they may set."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import need
from cove.cli.user.refs import CONFIGURATION_REF
from cove.cli.userfmt import Body

GROUP_HEADERS = ("ID", "Name", "Datastore", "Version", "Description")


def group_path(configuration_id: str) -> str:
    return f"configurations/{quote(configuration_id, safe='')}"


def parse_values(text: str) -> Body:
    """``--values``: a JSON object of parameter names to values. Raises click.BadParameter."""
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--values") from exc
    if not isinstance(values, dict):
        raise click.BadParameter(
            "must be a JSON object, e.g. '{\"work_mem\": 4096}'", param_hint="--values"
        )
    return values


values_option = click.option(
    "--values",
    "values_text",
    required=True,
    metavar="JSON",
    help="Parameter values as a JSON object, e.g. '{\"work_mem\": 4096}'.",
)


def _row(g: Body) -> list[Any]:
    return [
        g.get("id"),
        g.get("name"),
        g.get("datastore_name"),
        g.get("datastore_version_name"),
        g.get("description"),
    ]


def _show(app: App, body: Body) -> None:
    cfg = need(body, "configuration")
    keys = (
        "id",
        "name",
        "description",
        "datastore_name",
        "datastore_version_name",
        "datastore_version_number",
        "instance_count",
        "created",
        "updated",
    )
    values = cfg.get("values") or {}

    def render() -> fmt.Pairs:
        rows = ([k, v] for k, v in sorted(values.items()))
        table = fmt.Table.of(["Parameter", "Value"], rows)
        return fmt.Pairs.of(((k, cfg.get(k)) for k in keys), table, "values")

    app.output(body, render)


@click.group("configuration")
def configuration() -> None:
    """Configuration groups: parameter values for instances of one datastore version."""


@configuration.command("list")
@click.pass_obj
def configuration_list(app: App) -> None:
    """List the project's configuration groups."""
    items = app.api.paginate("configurations", "configurations")
    app.output(
        {"configurations": items}, lambda: fmt.Table.of(GROUP_HEADERS, (_row(g) for g in items))
    )


@configuration.command("show")
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@click.pass_obj
def configuration_show(app: App, configuration_id: str) -> None:
    """Show configuration group CONFIGURATION and its values."""
    _show(app, app.api.get(group_path(configuration_id)))


@configuration.command("create")
@click.argument("name")
@values_option
@click.option("--datastore", help="Datastore type (default: the cloud's default datastore).")
@click.option("--version", "version", help="Datastore version (default: its default version).")
@click.option("--description", help="What the group is for.")
@click.pass_obj
def configuration_create(
    app: App,
    name: str,
    values_text: str,
    datastore: str | None,
    version: str | None,
    description: str | None,
) -> None:
    """Create configuration group NAME.

    \b
    cove configuration create tuned --datastore postgresql --version 15 \\
        --values '{"work_mem": 8192, "shared_buffers": 32768}'
    """
    req: Body = {"name": name, "values": parse_values(values_text)}
    if description is not None:
        req["description"] = description
    store = {"type": datastore, "version": version}
    if any(store.values()):
        req["datastore"] = {k: v for k, v in store.items() if v}
    _show(app, app.api.request("POST", "configurations", {"configuration": req}))


@configuration.command("set")
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@values_option
@click.option("--name", help="A new name.")
@click.option("--description", help="A new description.")
@click.pass_obj
def configuration_set(
    app: App, configuration_id: str, values_text: str, name: str | None, description: str | None
) -> None:
    """Replace every value of group CONFIGURATION (values left out return to their defaults)."""
    req: Body = {"values": parse_values(values_text)}
    if name is not None:
        req["name"] = name
    if description is not None:
        req["description"] = description
    app.api.request("PUT", group_path(configuration_id), {"configuration": req})
    app.done(f"Configuration group {configuration_id} replaced; attached instances are updated.")


@configuration.command("patch")
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@values_option
@click.pass_obj
def configuration_patch(app: App, configuration_id: str, values_text: str) -> None:
    """Change some values of group CONFIGURATION, keeping the others."""
    body = {"configuration": {"values": parse_values(values_text)}}
    app.api.request("PATCH", group_path(configuration_id), body)
    app.done(f"Configuration group {configuration_id} updated; attached instances are updated.")


@configuration.command("delete")
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@click.pass_obj
def configuration_delete(app: App, configuration_id: str) -> None:
    """Delete group CONFIGURATION (detach it from its instances first)."""
    app.api.request("DELETE", group_path(configuration_id))
    app.done(f"Configuration group {configuration_id} deleted.")


@configuration.command("instances")
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@click.pass_obj
def configuration_instances(app: App, configuration_id: str) -> None:
    """List the instances group CONFIGURATION is attached to."""
    path = group_path(configuration_id)
    items = app.api.paginate(f"{path}/instances", "instances")
    rows = ([i.get("id"), i.get("name")] for i in items)
    app.output({"instances": items}, lambda: fmt.Table.of(["ID", "Name"], rows))


def _limits(p: Body) -> str:
    if p.get("allowed"):
        return " | ".join(str(a) for a in p["allowed"])
    low, high = p.get("min"), p.get("max")
    if low is None and high is None:
        return ""
    return f"{'' if low is None else low} .. {'' if high is None else high}"


@configuration.command("parameters")
@click.argument("datastore")
@click.argument("version")
@click.argument("name", required=False)
@click.pass_obj
def configuration_parameters(app: App, datastore: str, version: str, name: str | None) -> None:
    """List the parameters groups may set for DATASTORE VERSION (or show parameter NAME)."""
    path = f"datastores/{quote(datastore, safe='')}/versions/{quote(version, safe='')}/parameters"
    if name is not None:
        param = app.api.get(f"{path}/{quote(name, safe='')}")
        app.output(param, lambda: fmt.Pairs.of(fmt.flat_pairs(param)))
        return
    body = app.api.get(path)
    items = need(body, "configuration-parameters")
    rows = (
        [p.get("name"), p.get("type"), _limits(p), bool(p.get("restart_required"))] for p in items
    )
    headers = ["Name", "Type", "Values", "Restart required"]
    app.output(body, lambda: fmt.Table.of(headers, rows))
