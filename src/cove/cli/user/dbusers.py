"""The ``cove database``, ``cove user`` and ``cove root`` commands: what lives inside an
instance."""

from __future__ import annotations

from urllib.parse import quote

import click

from cove.cli import userfmt as fmt
from cove.cli.user.client import App, inst_path, need, user_path
from cove.cli.user.refs import INSTANCE_REF
from cove.cli.userfmt import Body

# -- databases --------------------------------------------------------------------------------


@click.group("database")
def database() -> None:
    """Manage the databases of an instance."""


@database.command("list")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def database_list(app: App, instance_id: str) -> None:
    """List the databases of INSTANCE."""
    items = app.api.paginate(f"{inst_path(instance_id)}/databases", "databases")
    app.output(
        {"databases": items}, lambda: fmt.Table.of(["Name"], ([d.get("name")] for d in items))
    )


@database.command("create")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("name")
@click.option("--character-set", help="Character set (encoding) of the database.")
@click.option("--collate", help="Collation of the database.")
@click.pass_obj
def database_create(
    app: App, instance_id: str, name: str, character_set: str | None, collate: str | None
) -> None:
    """Create database NAME on INSTANCE."""
    item: Body = {"name": name}
    if character_set:
        item["character_set"] = character_set
    if collate:
        item["collate"] = collate
    app.api.request("POST", f"{inst_path(instance_id)}/databases", {"databases": [item]})
    app.done(f"Database {name} is being created on instance {instance_id}.")


@database.command("delete")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("name")
@click.pass_obj
def database_delete(app: App, instance_id: str, name: str) -> None:
    """Delete database NAME of INSTANCE."""
    app.api.request("DELETE", f"{inst_path(instance_id)}/databases/{quote(name, safe='')}")
    app.done(f"Database {name} is being deleted from instance {instance_id}.")


# -- users ------------------------------------------------------------------------------------


def _password(given: str | None, name: str) -> str:
    if given:
        return given
    prompt = f"Password for user {name}"
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


password_option = click.option(
    "--password", help="The password (prompted for, unseen, when left out; safer)."
)
user_arg = click.argument("user", metavar="NAME[@HOST]")


@click.group("user")
def user() -> None:
    """Manage the users of an instance."""


@user.command("list")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def user_list(app: App, instance_id: str) -> None:
    """List the users of INSTANCE."""
    items = app.api.paginate(f"{inst_path(instance_id)}/users", "users")
    rows = ([u.get("name"), u.get("host"), u.get("databases")] for u in items)
    app.output({"users": items}, lambda: fmt.Table.of(["Name", "Host", "Databases"], rows))


@user.command("create")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("name")
@password_option
@click.option("--host", help="Host the user may connect from (default: any).")
@click.option("--database", "databases", multiple=True, help="Grant this database (repeatable).")
@click.pass_obj
def user_create(
    app: App,
    instance_id: str,
    name: str,
    password: str | None,
    host: str | None,
    databases: tuple[str, ...],
) -> None:
    """Create user NAME on INSTANCE."""
    item: Body = {"name": name, "password": _password(password, name)}
    if host:
        item["host"] = host
    item["databases"] = [{"name": d} for d in databases]
    app.api.request("POST", f"{inst_path(instance_id)}/users", {"users": [item]})
    app.done(f"User {name} is being created on instance {instance_id}.")


@user.command("show")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@click.pass_obj
def user_show(app: App, instance_id: str, user: str) -> None:
    """Show a user of INSTANCE."""
    body = need(app.api.get(user_path(instance_id, user)), "user")
    keys = ("name", "host", "databases")
    app.output({"user": body}, lambda: fmt.Pairs.of((k, body.get(k)) for k in keys))


@user.command("delete")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@click.pass_obj
def user_delete(app: App, instance_id: str, user: str) -> None:
    """Delete a user of INSTANCE."""
    app.api.request("DELETE", user_path(instance_id, user))
    app.done(f"User {user} is being deleted from instance {instance_id}.")


@user.command("set-password")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@password_option
@click.pass_obj
def user_set_password(app: App, instance_id: str, user: str, password: str | None) -> None:
    """Change the password of a user of INSTANCE."""
    body = {"user": {"password": _password(password, user)}}
    app.api.request("PUT", user_path(instance_id, user), body)
    app.done(f"Password of user {user} is being changed.")


@user.command("grant")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@click.argument("databases", metavar="DB...", nargs=-1, required=True)
@click.pass_obj
def user_grant(app: App, instance_id: str, user: str, databases: tuple[str, ...]) -> None:
    """Give a user of INSTANCE access to databases."""
    body = {"databases": [{"name": d} for d in databases]}
    app.api.request("PUT", f"{user_path(instance_id, user)}/databases", body)
    app.done(f"User {user} is being granted {', '.join(databases)}.")


@user.command("revoke")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@click.argument("db", metavar="DB")
@click.pass_obj
def user_revoke(app: App, instance_id: str, user: str, db: str) -> None:
    """Take away a user's access to database DB."""
    path = f"{user_path(instance_id, user)}/databases/{quote(db, safe='')}"
    app.api.request("DELETE", path)
    app.done(f"User {user} is losing access to {db}.")


@user.command("access")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@user_arg
@click.pass_obj
def user_access(app: App, instance_id: str, user: str) -> None:
    """List the databases a user of INSTANCE may use."""
    items = app.api.paginate(f"{user_path(instance_id, user)}/databases", "databases")
    app.output(
        {"databases": items}, lambda: fmt.Table.of(["Name"], ([d.get("name")] for d in items))
    )


# -- root -------------------------------------------------------------------------------------


@click.group("root")
def root() -> None:
    """Manage the superuser of an instance."""


@root.command("enable")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option("--password", help="Use this password instead of a generated one.")
@click.pass_obj
def root_enable(app: App, instance_id: str, password: str | None) -> None:
    """Enable the superuser and print its password (shown only this once)."""
    req = {"password": password} if password else None
    body = app.api.request("POST", f"{inst_path(instance_id)}/root", req)
    root_user = need(body, "user")
    keys = ("name", "password")
    app.output(body, lambda: fmt.Pairs.of((k, root_user.get(k)) for k in keys), secret=True)
    click.echo("The password is not shown again: store it now.", err=True)


@root.command("show")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def root_show(app: App, instance_id: str) -> None:
    """Tell whether the superuser was ever enabled."""
    body = app.api.get(f"{inst_path(instance_id)}/root")
    enabled = need(body, "rootEnabled")
    app.output(body, lambda: fmt.Pairs.of([("root_enabled", bool(enabled))]))


@root.command("disable")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def root_disable(app: App, instance_id: str) -> None:
    """Disable the superuser."""
    app.api.request("DELETE", f"{inst_path(instance_id)}/root")
    app.done(f"Superuser of instance {instance_id} disabled.")
