"""The ``cove backup`` commands: backups of instances, and (``cove backup schedule``) the
schedules that make them on their own and keep only the newest."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import click

from cove.cli import userfmt as fmt
from cove.cli.user import waiting
from cove.cli.user.app import App
from cove.cli.user.client import inst_path, need
from cove.cli.user.refs import BACKUP_REF, INSTANCE_REF
from cove.cli.userfmt import Body

BACKUP_HEADERS = ("ID", "Name", "Instance", "Status", "Size (GB)", "Parent", "Created")
SCHEDULE_HEADERS = ("ID", "Name", "Instance", "Cron", "Retention", "Next run", "Last backup")


def backup_path(backup_id: str) -> str:
    return f"backups/{quote(backup_id, safe='')}"


def schedule_path(schedule_id: str) -> str:
    return f"backup_schedules/{quote(schedule_id, safe='')}"


def _size(backup: Body) -> str | None:
    size = backup.get("size")
    return None if size is None else f"{float(size):.4f}"


def _backup_row(b: Body) -> list[Any]:
    return [
        b.get("id"),
        b.get("name"),
        b.get("instance_id"),
        b.get("status"),
        _size(b),
        b.get("parent_id"),
        b.get("created"),
    ]


def _show_backup(app: App, backup: Body) -> None:
    pairs = [(k, v) for k, v in fmt.flat_pairs(backup) if k != "size"]
    pairs.insert(4, ("size (GB)", _size(backup)))
    app.output({"backup": backup}, lambda: fmt.Pairs.of(pairs))


def wait_for_backup(app: App, backup_id: str, timeout: float) -> Body:
    """Poll a backup until it is COMPLETED. Raises click.ClickException when it fails, when
    ``timeout`` seconds pass, or on Ctrl-C (the backup carries on)."""
    start = time.monotonic()
    last = None
    waits = waiting.pauses()
    try:
        while True:
            backup: Body = need(app.api.get(backup_path(backup_id)), "backup")
            status = str(backup.get("status") or "UNKNOWN")
            elapsed = time.monotonic() - start
            if status != last:
                click.echo(f"{status} ({elapsed:.1f}s)", err=True)
                last = status
            if status == "COMPLETED":
                return backup
            if status in ("FAILED", "DELETE_FAILED"):
                message = (backup.get("fault") or {}).get("message") or "no reason was recorded"
                raise click.ClickException(f"backup {backup_id} is {status}: {message}")
            if elapsed >= timeout:
                raise click.ClickException(
                    f"gave up waiting after {timeout:g} s: backup {backup_id} is {status}; it "
                    f"carries on in the background (see 'cove backup show {backup_id}')"
                )
            time.sleep(next(waits))
    except KeyboardInterrupt:
        raise waiting.StoppedWaiting(
            f"stopped waiting; backup {backup_id} carries on in the background"
        ) from None


@click.group("backup")
def backup() -> None:
    """Backups of instances, and the schedules that make them."""


@backup.command("create")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.argument("name")
@click.option("--description", help="What the backup is for.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Build on the instance's newest completed backup (where the datastore can).",
)
@click.option(
    "--parent", "parent_id", metavar="BACKUP", type=BACKUP_REF, help="Build on this backup."
)
@waiting.wait_option
@waiting.wait_timeout_option(3600)
@click.pass_obj
def backup_create(
    app: App,
    instance_id: str,
    name: str,
    description: str | None,
    incremental: bool,
    parent_id: str | None,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Back up instance INSTANCE as NAME."""
    req: Body = {"name": name, "instance": instance_id}
    if description is not None:
        req["description"] = description
    if incremental:
        req["incremental"] = 1
    if parent_id is not None:
        req["parent_id"] = parent_id
    made = need(app.api.request("POST", "backups", {"backup": req}), "backup")
    if wait:
        made = wait_for_backup(app, str(need(made, "id")), wait_timeout)
    _show_backup(app, made)


@backup.command("list")
@click.option(
    "--instance", "instance_id", metavar="INSTANCE", type=INSTANCE_REF, help="Only this instance's."
)
@click.option("--all-projects", is_flag=True, help="Backups of every project (cloud admin).")
@click.pass_obj
def backup_list(app: App, instance_id: str | None, all_projects: bool) -> None:
    """List backups, newest first."""
    if instance_id is not None:
        items = app.api.paginate(f"{inst_path(instance_id)}/backups", "backups")
    else:
        params = {"all_projects": "true"} if all_projects else None
        items = app.api.paginate("backups", "backups", params)
    app.output(
        {"backups": items}, lambda: fmt.Table.of(BACKUP_HEADERS, (_backup_row(b) for b in items))
    )


@backup.command("show")
@click.argument("backup_id", metavar="BACKUP", type=BACKUP_REF)
@click.pass_obj
def backup_show(app: App, backup_id: str) -> None:
    """Show backup BACKUP."""
    _show_backup(app, need(app.api.get(backup_path(backup_id)), "backup"))


@backup.command("delete")
@click.argument("backup_id", metavar="BACKUP", type=BACKUP_REF)
@click.pass_obj
def backup_delete(app: App, backup_id: str) -> None:
    """Delete backup BACKUP and every incremental built on it."""
    app.api.request("DELETE", backup_path(backup_id))
    app.done(f"Backup {backup_id} deleted; its artifact is being removed from the store.")


# -- schedules ---------------------------------------------------------------------------------


def _retention(s: Body) -> str:
    parts = []
    if s.get("keep_count") is not None:
        parts.append(f"{s['keep_count']} newest")
    if s.get("keep_days") is not None:
        parts.append(f"{s['keep_days']} days")
    return ", ".join(parts) or "keep all"


def _schedule_row(s: Body) -> list[Any]:
    return [
        s.get("id"),
        s.get("name"),
        s.get("instance_id"),
        f"{s.get('cron') or ''}{' (incremental)' if s.get('incremental') else ''}",
        _retention(s),
        s.get("next_run") if s.get("enabled") else "disabled",
        s.get("last_backup_id"),
    ]


def _show_schedule(app: App, body: Body) -> None:
    sched = need(body, "backup_schedule")
    keys = (
        "id",
        "name",
        "instance_id",
        "cron",
        "incremental",
        "keep_count",
        "keep_days",
        "enabled",
        "next_run",
        "last_run",
        "last_backup_id",
        "last_error",
        "created",
        "updated",
    )
    app.output(body, lambda: fmt.Pairs.of((k, sched.get(k)) for k in keys))


@backup.group("schedule")
def schedule() -> None:
    """Schedules that back an instance up on their own (cron, in UTC), keeping only the
    newest backups."""


@schedule.command("create")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option(
    "--cron",
    required=True,
    metavar="EXPR",
    help="When, in UTC: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'.",
)
@click.option("--name", help="A name; the backups are named after it and the time.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Runs after the first full backup build on the schedule's latest backup.",
)
@click.option(
    "--keep-count", type=click.IntRange(min=1), help="Keep this many of the newest backups."
)
@click.option("--keep-days", type=click.IntRange(min=1), help="Keep backups for this many days.")
@click.option("--disabled", is_flag=True, help="Create it without running it yet.")
@click.pass_obj
def schedule_create(
    app: App,
    instance_id: str,
    cron: str,
    name: str | None,
    incremental: bool,
    keep_count: int | None,
    keep_days: int | None,
    disabled: bool,
) -> None:
    """Back instance INSTANCE up on a schedule.

    \b
    cove backup schedule create $ID --cron '0 3 * * *' --keep-count 7
    """
    req: Body = {"instance_id": instance_id, "cron": cron, "incremental": incremental}
    if name is not None:
        req["name"] = name
    if keep_count is not None:
        req["keep_count"] = keep_count
    if keep_days is not None:
        req["keep_days"] = keep_days
    if disabled:
        req["enabled"] = False
    _show_schedule(app, app.api.request("POST", "backup_schedules", {"backup_schedule": req}))


@schedule.command("update")
@click.argument("schedule_id", metavar="ID")
@click.option("--cron", metavar="EXPR", help="When, in UTC (as for create).")
@click.option("--name", help="A new name.")
@click.option(
    "--incremental/--full",
    default=None,
    help="Build later runs on the schedule's latest backup, or make full backups.",
)
@click.option(
    "--keep-count", type=click.IntRange(min=0), help="Keep this many of the newest (0: no limit)."
)
@click.option(
    "--keep-days", type=click.IntRange(min=0), help="Keep backups this many days (0: no limit)."
)
@click.option("--enable/--disable", "enabled", default=None, help="Run it, or stop running it.")
@click.pass_obj
def schedule_update(
    app: App,
    schedule_id: str,
    cron: str | None,
    name: str | None,
    incremental: bool | None,
    keep_count: int | None,
    keep_days: int | None,
    enabled: bool | None,
) -> None:
    """Change backup schedule ID; what is not given stays as it is.

    \b
    cove backup schedule update $ID --keep-count 14 --keep-days 0
    """
    req: Body = {}
    for key, value in (
        ("cron", cron),
        ("name", name),
        ("incremental", incremental),
        ("enabled", enabled),
    ):
        if value is not None:
            req[key] = value
    for key, limit in (("keep_count", keep_count), ("keep_days", keep_days)):
        if limit is not None:
            req[key] = limit or None  # 0 lifts the limit
    if not req:
        raise click.UsageError("Nothing to change: give at least one option.")
    body = {"backup_schedule": req}
    _show_schedule(app, app.api.request("PUT", schedule_path(schedule_id), body))


@schedule.command("list")
@click.option(
    "--instance", "instance_id", metavar="INSTANCE", type=INSTANCE_REF, help="Only this instance's."
)
@click.pass_obj
def schedule_list(app: App, instance_id: str | None) -> None:
    """List the project's backup schedules."""
    params = {"instance_id": instance_id} if instance_id is not None else None
    items = app.api.paginate("backup_schedules", "backup_schedules", params)
    app.output(
        {"backup_schedules": items},
        lambda: fmt.Table.of(SCHEDULE_HEADERS, (_schedule_row(s) for s in items)),
    )


@schedule.command("show")
@click.argument("schedule_id", metavar="ID")
@click.pass_obj
def schedule_show(app: App, schedule_id: str) -> None:
    """Show backup schedule ID, with its last run and why a run was put off."""
    _show_schedule(app, app.api.get(schedule_path(schedule_id)))


@schedule.command("delete")
@click.argument("schedule_id", metavar="ID")
@click.pass_obj
def schedule_delete(app: App, schedule_id: str) -> None:
    """Delete backup schedule ID; the backups it made stay."""
    app.api.request("DELETE", schedule_path(schedule_id))
    app.done(f"Backup schedule {schedule_id} deleted; its backups stay.")
