"""The ``cove database``, ``cove user`` and ``cove root`` commands: what lives inside an
instance."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import inst_path, need, user_path
from cove.cli.user.passwords import password_sources, read_password
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


password_option = click.option(
    "--password",
    help="The password (seen by others in ps; safer: --password-stdin, --password-file, or "
    "left out to be asked for it unseen).",
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
@click.argument("spec", metavar="NAME[:PASSWORD][@DB,...]")
@password_option
@password_sources
@click.option("--host", help="Host the user may connect from (default: any).")
@click.option("--database", "databases", multiple=True, help="Grant this database (repeatable).")
@click.pass_obj
def user_create(
    app: App,
    instance_id: str,
    spec: str,
    password: str | None,
    password_stdin: bool,
    password_file: Path | None,
    host: str | None,
    databases: tuple[str, ...],
) -> None:
    """Create a user on INSTANCE, as 'instance create --user' does.

    \b
    cove user create pg1 erin@orders --password-stdin < pw.txt
    cove user create pg1 erin:PASSWORD@orders,audit
    cove user create pg1 erin --database orders    (asks for the password)
    """
    try:
        parsed = fmt.parse_user_spec(spec, "user")
    except fmt.SpecError as exc:
        raise click.UsageError(str(exc)) from exc
    if parsed.password is not None and password is not None:
        raise click.UsageError("give the password once: in NAME:PASSWORD or with --password")
    if parsed.password is not None and parsed.databases:
        # "erin:p@orders" may be a password with an '@': the tail names databases only when
        # the instance has them all (instance create checks them against its --database).
        path = f"{inst_path(instance_id)}/databases"
        have = {d.get("name") for d in app.api.paginate(path, "databases")}
        missing = [d for d in parsed.databases if d not in have]
        if missing:
            raise click.UsageError(
                f"user {parsed.name}: instance {instance_id} has no database "
                f"{', '.join(missing)}; if '@' is part of the password, leave the password "
                "out of the spec and give it with --password-stdin, --password-file or at the "
                "prompt"
            )
    given = parsed.password if parsed.password is not None else password
    item: Body = {
        "name": parsed.name,
        "password": read_password(
            parsed.name,
            given,
            password_stdin,
            password_file,
            ways="--password-stdin, --password-file, --password or NAME:PASSWORD",
        ),
    }
    if host:
        item["host"] = host
    grants = dict.fromkeys([*(parsed.databases or ()), *databases])
    item["databases"] = [{"name": d} for d in grants]
    app.api.request("POST", f"{inst_path(instance_id)}/users", {"users": [item]})
    app.done(f"User {parsed.name} is being created on instance {instance_id}.")


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
@password_sources
@click.pass_obj
def user_set_password(
    app: App,
    instance_id: str,
    user: str,
    password: str | None,
    password_stdin: bool,
    password_file: Path | None,
) -> None:
    """Change the password of a user of INSTANCE."""
    body = {"user": {"password": read_password(user, password, password_stdin, password_file)}}
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
@password_sources
@click.pass_obj
def root_enable(
    app: App,
    instance_id: str,
    password: str | None,
    password_stdin: bool,
    password_file: Path | None,
) -> None:
    """Enable the superuser and print its password (shown only this once)."""
    if password is not None or password_stdin or password_file is not None:
        password = read_password("root", password, password_stdin, password_file)
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
