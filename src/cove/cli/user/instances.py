"""The ``cove instance`` commands; the replication ones are in :mod:`.replicas`, and ``--wait``
in :mod:`.waiting`."""

from __future__ import annotations

from typing import Any

import click

from cove.cli import userfmt as fmt
from cove.cli.user import logs, replicas
from cove.cli.user.app import App
from cove.cli.user.client import inst_path, need
from cove.cli.user.passwords import read_password
from cove.cli.user.refs import BACKUP_REF, CONFIGURATION_REF, FLAVOR_NAME, INSTANCE_REF
from cove.cli.user.waiting import wait_for, wait_option, wait_timeout_option
from cove.cli.userfmt import Body


def show_instance(app: App, inst: Body, failover: Body | None = None) -> None:
    """The instance's fields; ``failover``, its group's latest, goes after its replicas."""

    def render() -> fmt.Pairs:
        items = fmt.instance_pairs(inst)
        if failover is not None:
            at = next((n for n, (k, _) in enumerate(items) if k == "replicas"), len(items)) + 1
            items.insert(at, ("last_failover", replicas.failover_line(failover)))
        return fmt.Pairs.of(items)

    app.output({"instance": inst}, render)


@click.group("instance")
def instance() -> None:
    """Create, inspect and manage instances."""


for _command in replicas.COMMANDS:
    instance.add_command(_command)
instance.add_command(logs.log)


def _users_body(specs: tuple[str, ...], databases: list[str]) -> list[Body]:
    """The ``users`` of a create request, prompting for passwords left out of ``--user``."""
    try:
        parsed = [fmt.parse_user_spec(s) for s in specs]
        grants = [fmt.spec_databases(p, databases) for p in parsed]
    except fmt.SpecError as exc:
        raise click.UsageError(str(exc)) from exc
    users = []
    for spec, dbs in zip(parsed, grants, strict=True):
        password = read_password(spec.name, spec.password, False, None, ways="--user NAME:PASSWORD")
        users.append(
            {"name": spec.name, "password": password, "databases": [{"name": d} for d in dbs]}
        )
    return users


@instance.command("create")
@click.argument("name")
@click.option(
    "--flavor",
    type=FLAVOR_NAME,
    help="Flavor, by name or id (see 'cove flavor list'); required but for a replica.",
)
@click.option(
    "--size", type=click.IntRange(min=1), help="Volume size in GB; required but for a replica."
)
@click.option("--datastore", help="Datastore type, e.g. postgresql.")
@click.option("--datastore-version", help="Datastore version name.")
@click.option("--database", "databases", multiple=True, help="Create this database (repeatable).")
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME[:PASSWORD][@DB,...]",
    help="Create this user (repeatable); without a password you are prompted for it.",
)
@click.option("--network", help="Network to attach to, by id or name (see 'cove network list').")
@click.option(
    "--configuration",
    type=CONFIGURATION_REF,
    help="Configuration group to create it with, by name or id (see 'cove configuration list').",
)
@click.option(
    "--backup",
    metavar="BACKUP",
    type=BACKUP_REF,
    help="Restore this backup (name or id) into the new instance (see 'cove backup list').",
)
@click.option(
    "--restore-time",
    metavar="MOMENT",
    help="With --backup: restore its instance as it was at this moment (ISO 8601, UTC when no "
    "offset is given; see 'cove instance restore-window').",
)
@click.option(
    "--replica-of",
    metavar="INSTANCE",
    type=INSTANCE_REF,
    help="Make a read-only replica of this instance, by name or id (it takes its flavor, size, "
    "datastore, databases and users).",
)
@click.option(
    "--replica-count",
    type=click.IntRange(1, 3),
    help="With --replica-of: how many replicas (named NAME, NAME-2, NAME-3).",
)
@click.option(
    "--public/--private",
    "public",
    default=None,
    help="Publish it on the host's public address (default: private).",
)
@click.option(
    "--allowed-cidr",
    "allowed_cidrs",
    multiple=True,
    metavar="CIDR",
    help="Let clients connect only from this IPv4 network (repeatable; default: every address).",
)
@wait_option
@wait_timeout_option(900)
@click.pass_obj
def instance_create(
    app: App,
    name: str,
    flavor: str | None,
    size: int | None,
    datastore: str | None,
    datastore_version: str | None,
    databases: tuple[str, ...],
    users: tuple[str, ...],
    network: str | None,
    configuration: str | None,
    backup: str | None,
    restore_time: str | None,
    replica_of: str | None,
    replica_count: int | None,
    public: bool | None,
    allowed_cidrs: tuple[str, ...],
    wait: bool,
    wait_timeout: float,
) -> None:
    """Create an instance NAME, empty or restored from a backup.

    \b
    --user NAME:PASSWORD          access to every --database
    --user NAME:PASSWORD@DB1,DB2  access to DB1 and DB2 only
    --user NAME[@DB1,DB2]         prompt for the password (use this when it contains '@')
    """
    if replica_of is not None:
        _refuse_for_replica(
            {
                "--flavor": flavor,
                "--size": size,
                "--datastore": datastore,
                "--datastore-version": datastore_version,
                "--database": databases,
                "--user": users,
                "--backup": backup,
                "--restore-time": restore_time,
            }
        )
        inst = replicas.create_replicas(
            app,
            name,
            replica_of,
            replica_count,
            network,
            configuration,
            wait,
            wait_timeout,
            _access_body(public, allowed_cidrs),
        )
        show_instance(app, inst)
        return
    if replica_count is not None:
        raise click.UsageError("--replica-count needs --replica-of.")
    if flavor is None or size is None:
        raise click.UsageError("--flavor and --size are required (but for --replica-of).")
    dbs = list(databases)
    req: Body = {"name": name, "flavorRef": flavor, "volume": {"size": size}}
    store = {"type": datastore, "version": datastore_version}
    if any(store.values()):
        req["datastore"] = {k: v for k, v in store.items() if v}
    user_items = _users_body(users, dbs)
    req["databases"] = [{"name": d} for d in dbs]
    req["users"] = user_items
    if network:
        req["nics"] = [{"net-id": network}]
    if configuration:
        req["configuration"] = configuration
    access = _access_body(public, allowed_cidrs)
    if access:
        req["access"] = access
    if restore_time and not backup:
        raise click.UsageError("--restore-time needs --backup.")
    if backup:
        point = {"backupRef": backup}
        if restore_time:
            point["restore_time"] = restore_time
        req["restorePoint"] = point
    inst = need(app.api.request("POST", "instances", {"instance": req}), "instance")
    if not wait:
        show_instance(app, inst)
        return
    inst = wait_for(app, str(need(inst, "id")), gone=False, timeout=wait_timeout) or inst
    show_instance(app, inst)
    first = user_items[0] if user_items else {}
    grants = [d["name"] for d in first.get("databases", [])] or dbs
    hint = fmt.connect_hint(inst, grants[0] if grants else None, first.get("name"))
    if hint:
        click.echo(f"\nConnect with:\n  {hint}", err=app.machine_output)


def _access_body(public: bool | None, allowed_cidrs: tuple[str, ...]) -> Body:
    """Trove's ``access`` for what the options say (empty when they say nothing)."""
    access: Body = {}
    if public is not None:
        access["is_public"] = public
    if allowed_cidrs:
        access["allowed_cidrs"] = list(allowed_cidrs)
    return access


@instance.command("access")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option(
    "--public/--private",
    "public",
    default=None,
    help="Publish it on the host's public address, or take it off.",
)
@click.option(
    "--allowed-cidr",
    "allowed_cidrs",
    multiple=True,
    metavar="CIDR",
    help="Let clients connect only from these IPv4 networks (repeatable; 0.0.0.0/0: every "
    "address). Replaces the networks it had.",
)
@click.pass_obj
def instance_access(
    app: App, instance_id: str, public: bool | None, allowed_cidrs: tuple[str, ...]
) -> None:
    """Show or change who may connect to INSTANCE; what is not given stays as it is."""
    access = _access_body(public, allowed_cidrs)
    if access:
        app.api.request("PUT", inst_path(instance_id), {"instance": {"access": access}})
    inst = need(app.api.request("GET", inst_path(instance_id)), "instance")
    shown = inst.get("access") or {}
    public_at = next(
        (fmt.address(a) for a in inst.get("addresses") or [] if a.get("type") == "public"), None
    )

    def render() -> fmt.Pairs:
        return fmt.Pairs.of(
            [
                ("is_public", shown.get("is_public")),
                ("allowed_cidrs", shown.get("allowed_cidrs")),
                ("published", public_at),
            ]
        )

    app.output({"access": shown}, render)


@instance.command("list")
@click.option(
    "--all-projects", is_flag=True, help="Instances of every project (takes the admin role)."
)
@click.pass_obj
def instance_list(app: App, all_projects: bool) -> None:
    """List instances."""
    if all_projects:
        items = app.api.paginate("mgmt/instances", "instances")
        headers = [*fmt.INSTANCE_HEADERS, "Project"]
        rows = ([*fmt.instance_row(i), i.get("tenant_id")] for i in items)
    else:
        items = app.api.paginate("instances", "instances")
        headers = list(fmt.INSTANCE_HEADERS)
        rows = (fmt.instance_row(i) for i in items)
    app.output({"instances": items}, lambda: fmt.Table.of(headers, rows))


@instance.command("show")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def instance_show(app: App, instance_id: str) -> None:
    """Show INSTANCE (and, in a replication group, the group's latest failover)."""
    inst = need(app.api.get(inst_path(instance_id)), "instance")
    # --json prints the API's answer alone: the failovers have a command of their own.
    failover = None if app.json_output else replicas.latest_failover(app, inst)
    show_instance(app, inst, failover)


def _refuse_for_replica(options: dict[str, object]) -> None:
    """Raises click.UsageError naming the options given that a replica takes from its source."""
    given = [option for option, value in options.items() if value]
    if given:
        raise click.UsageError(
            f"A replica takes {', '.join(given)} from its source; leave "
            f"{'it' if len(given) == 1 else 'them'} out with --replica-of."
        )


@instance.command("restore-window")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def instance_restore_window(app: App, instance_id: str) -> None:
    """Show the moments INSTANCE can be restored to (--restore-time of 'cove instance
    create'): from the end of its oldest kept backup to its last archived write."""
    window = need(app.api.get(f"{inst_path(instance_id)}/restore_window"), "restore_window")

    def render() -> fmt.Pairs:
        return fmt.Pairs.of((k, window.get(k)) for k in ("earliest", "latest"))

    if window.get("earliest") is None and not app.machine_output:
        click.echo(f"Instance {instance_id} has no moments to restore to yet (no full backup).")
        return
    app.output({"restore_window": window}, render)


@instance.command("delete")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_delete(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Delete INSTANCE."""
    app.api.request("DELETE", inst_path(instance_id))
    if wait:
        wait_for(app, instance_id, gone=True, timeout=wait_timeout)
        app.done(f"Instance {instance_id} deleted.")
    else:
        app.done(f"Instance {instance_id} is being deleted.")


@instance.command("restart")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_restart(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Restart the database server of INSTANCE."""
    app.api.request("POST", f"{inst_path(instance_id)}/action", {"restart": {}})
    if wait:
        wait_for(app, instance_id, gone=False, timeout=wait_timeout)
        app.done(f"Instance {instance_id} restarted and ACTIVE.")
    else:
        app.done(f"Instance {instance_id} is restarting.")


@instance.command("resize")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option(
    "--flavor",
    type=FLAVOR_NAME,
    help="A new flavor (name or id): new memory settings and a restart.",
)
@click.option(
    "--volume", type=click.IntRange(min=1), help="A larger volume, in GB (a volume only grows)."
)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_resize(
    app: App,
    instance_id: str,
    flavor: str | None,
    volume: int | None,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Give INSTANCE a new flavor or a larger volume (one of them per resize)."""
    if (flavor is None) == (volume is None):
        raise click.UsageError("give either --flavor or --volume")
    resize: dict[str, Any] = {"flavorRef": flavor} if flavor else {"volume": {"size": volume}}
    app.api.request("POST", f"{inst_path(instance_id)}/action", {"resize": resize})
    if not wait:
        app.done(f"Instance {instance_id} is being resized.")
        return
    inst = wait_for(app, instance_id, gone=False, timeout=wait_timeout) or {}
    if inst.get("fault"):
        # A resize that failed puts the old size back and says why.
        raise click.ClickException(f"the resize failed: {fmt.fault_message(inst)}")
    app.done(f"Instance {instance_id} resized and ACTIVE.")


@instance.command("rename")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("new_name")
@click.pass_obj
def instance_rename(app: App, instance_id: str, new_name: str) -> None:
    """Rename INSTANCE to NEW_NAME."""
    app.api.request("PUT", inst_path(instance_id), {"instance": {"name": new_name}})
    app.done(f"Instance {instance_id} renamed to {new_name}.")


@instance.command("attach-configuration")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("configuration_id", metavar="CONFIGURATION", type=CONFIGURATION_REF)
@click.pass_obj
def instance_attach_configuration(app: App, instance_id: str, configuration_id: str) -> None:
    """Attach configuration group CONFIGURATION to INSTANCE.

    Dynamic parameters apply at once; when a static one changes, the instance shows
    RESTART_REQUIRED until 'cove instance restart'.
    """
    body = {"instance": {"configuration": configuration_id}}
    app.api.request("PUT", inst_path(instance_id), body)
    app.done(f"Configuration group {configuration_id} is being applied to instance {instance_id}.")


@instance.command("detach-configuration")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def instance_detach_configuration(app: App, instance_id: str) -> None:
    """Detach the configuration group of INSTANCE: its defaults apply again."""
    app.api.request("PUT", inst_path(instance_id), {"instance": {"configuration": None}})
    app.done(f"Instance {instance_id} is returning to its default configuration.")


@instance.command("configuration")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def instance_configuration(app: App, instance_id: str) -> None:
    """Show the settings the server of INSTANCE runs with."""
    body = app.api.get(f"{inst_path(instance_id)}/configuration")
    settings = need(need(body, "instance"), "configuration")
    rows = ([k, v] for k, v in sorted(settings.items()))
    app.output(body, lambda: fmt.Table.of(["Setting", "Value"], rows))


@instance.command("events")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option(
    "--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Events shown."
)
@click.pass_obj
def instance_events(app: App, instance_id: str, limit: int) -> None:
    """Show the newest notification events of INSTANCE (created, resized, backed up, failed
    over...), newest first."""
    body = app.api.get(f"{inst_path(instance_id)}/events", params={"limit": str(limit)})
    events = need(body, "events")
    rows = ([e.get("timestamp"), e.get("event_type"), _event_detail(e)] for e in events)
    app.output(body, lambda: fmt.Table.of(["Time", "Event", "Detail"], rows))


def _event_detail(event: dict[str, object]) -> str:
    """What an event's line says beside its type: an error's message, a resize's new size."""
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return ""
    for key in ("message", "new_flavor_id", "new_size", "backup_id", "state"):
        if payload.get(key) not in (None, ""):
            return f"{key}: {payload[key]}"
    return ""
