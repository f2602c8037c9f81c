"""The ``cove instance log`` commands: an instance's guest logs (Trove's log API) listed,
shown, enabled, disabled, published, discarded, and the published copy's last lines read back
from Cove's object-store endpoint, as ``openstack database log tail`` reads them."""

from __future__ import annotations

import json

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import inst_path, need
from cove.cli.user.refs import INSTANCE_REF
from cove.cli.userfmt import Body

HEADERS = ["Name", "Type", "Status", "Published", "Pending"]


@click.group("log")
def log() -> None:
    """The server's logs: general, slow-query and error logs, published to read them."""


def object_store(app: App) -> str:
    """Where Cove serves the project's published guest logs: its read-only object-store
    endpoint beside the API's (``<api>/swift/v1/AUTH_<project>``)."""
    root, _, project = app.scoped.endpoint.rpartition("/v1.0/")
    return f"{root}/swift/v1/AUTH_{project}"


def _pairs(shown: Body) -> fmt.Pairs:
    keys = ("name", "type", "status", "published", "pending", "container", "prefix")
    return fmt.Pairs.of([(k, shown.get(k)) for k in keys])


def _act(app: App, instance_id: str, name: str, flag: str | None) -> Body:
    body: Body = {"name": name}
    if flag is not None:
        body[flag] = 1
    shown: Body = need(app.api.request("POST", f"{inst_path(instance_id)}/log", body), "log")
    return shown


@log.command("list")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def log_list(app: App, instance_id: str) -> None:
    """List the logs of INSTANCE's server, with what is published and pending (bytes)."""
    body = app.api.get(f"{inst_path(instance_id)}/log")
    rows = ([entry.get(k.lower()) for k in HEADERS] for entry in need(body, "logs"))
    app.output(body, lambda: fmt.Table.of(HEADERS, rows))


def _action(flag: str | None, summary: str) -> click.Command:
    @click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
    @click.argument("name")
    @click.pass_obj
    def command(app: App, instance_id: str, name: str) -> None:
        shown = _act(app, instance_id, name, flag)
        app.output({"log": shown}, lambda: _pairs(shown))

    command.__doc__ = summary
    return click.command(flag or "show")(command)


for _flag, _summary in (
    (None, "Show the log NAME of INSTANCE."),
    ("enable", "Turn on the USER log NAME of INSTANCE (at once, no restart)."),
    ("disable", "Turn off the USER log NAME of INSTANCE."),
    ("publish", "Copy what the log NAME of INSTANCE gained since its last publish."),
    ("discard", "Delete the published copy of the log NAME of INSTANCE."),
):
    log.add_command(_action(_flag, _summary))


@log.command("tail")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("name")
@click.option("--lines", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--publish", is_flag=True, help="Publish what is pending first.")
@click.pass_obj
def log_tail(app: App, instance_id: str, name: str, lines: int, publish: bool) -> None:
    """Print the last lines of the published copy of the log NAME of INSTANCE."""
    shown = _act(app, instance_id, name, "publish" if publish else None)
    store = f"{object_store(app)}/{shown['container']}"
    listing = app.api.text(store, {"format": "json", "prefix": str(shown["prefix"])})
    if listing is None:
        raise click.ClickException(
            f"nothing of the {name} log is published yet: "
            f"cove instance log publish {instance_id} {name}"
        )
    parts = sorted(str(p["name"]) for p in json.loads(listing))
    text: list[str] = []
    for part in reversed(parts):  # the newest parts until there are lines enough
        body = app.api.text(f"{store}/{part}")
        text[:0] = (body or "").splitlines()
        if len(text) >= lines:
            break
    for line in text[-lines:]:
        click.echo(line)
