"""The replication commands of ``cove instance``: making replicas, detaching one, a
switchover (``promote``), replacing a lost replica source (``eject``) and the group's failover
history (``failovers``, and the latest failover line of ``show``).

:mod:`.instances` adds :data:`COMMANDS` to its group.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import ApiError, inst_path, need
from cove.cli.user.refs import INSTANCE_REF
from cove.cli.user.waiting import Seen, poll, wait_for, wait_option, wait_timeout_option
from cove.cli.userfmt import Body

#: The states of a failover record that end ``eject --wait``.
_EJECT_ENDS = ("promoted", "done", "failed")

FAILOVER_HEADERS = (
    "Started",
    "Kind",
    "State",
    "Old primary",
    "New primary",
    "Lost bytes",
    "Promoted",
    "Rejoined",
    "Reason",
)


def create_replicas(
    app: App,
    name: str,
    source: str,
    count: int | None,
    network: str | None,
    configuration: str | None,
    wait: bool,
    wait_timeout: float,
    access: Body | None = None,
) -> Body:
    """``instance create --replica-of``: the name, the count and (when given) the network,
    the configuration group and who may connect go with the request; with ``wait``, waits
    for the new replicas. Answers the view of the (first) new replica."""
    req: Body = {"name": name, "replica_of": source}
    if access:
        req["access"] = access
    if count is not None:
        req["replica_count"] = count
    if network:
        req["nics"] = [{"net-id": network}]
    if configuration:
        req["configuration"] = configuration
    before = _replica_ids(app, source) if wait else set()
    inst: Body = need(app.api.request("POST", "instances", {"instance": req}), "instance")
    if wait:
        for replica in sorted(_replica_ids(app, source) - before) or [str(inst["id"])]:
            wait_for(app, replica, gone=False, timeout=wait_timeout)
        inst = need(app.api.get(inst_path(str(inst["id"]))), "instance")
    return inst


def _replica_ids(app: App, source: str) -> set[str]:
    shown = need(app.api.get(inst_path(source)), "instance")
    return {str(r["id"]) for r in shown.get("replicas") or []}


# -- failover records ---------------------------------------------------------------------------


def failovers_of(app: App, instance_id: str) -> list[Body]:
    """The failovers of the instance's replication group, newest first. Raises ApiError."""
    return list(need(app.api.get(f"{inst_path(instance_id)}/failovers"), "failovers") or [])


def latest_failover(app: App, inst: Body) -> Body | None:
    """The newest failover of the group of ``inst`` (a view), asked only when ``inst`` is in a
    group; None when there is none, or the API does not list failovers."""
    if not (inst.get("replica_of") or inst.get("replicas")):
        return None
    try:
        found = failovers_of(app, str(inst["id"]))
    except ApiError as exc:
        if exc.code in (404, 501):
            return None
        raise
    return found[0] if found else None


def _moment(value: Any) -> str:
    """An API timestamp to the second, for a table."""
    return str(value).split(".")[0].replace("T", " ") if value else ""


def _offset(record: Body, key: str) -> str:
    """When ``record[key]`` came, as seconds after the failover started."""
    try:
        start = datetime.fromisoformat(str(record["started"]))
        then = datetime.fromisoformat(str(record[key]))
    except (KeyError, TypeError, ValueError):
        return _moment(record.get(key))
    return f"+{(then - start).total_seconds():.1f}s"


def _why(record: Body) -> str:
    reason, message = record.get("reason") or "", record.get("message")
    return f"{reason}: {message}" if message else str(reason)


def failover_row(record: Body) -> list[Any]:
    return [
        _moment(record.get("started")),
        record.get("kind"),
        record.get("state"),
        record.get("old_primary"),
        record.get("new_primary"),
        record.get("lost_bytes"),
        _offset(record, "promoted") if record.get("promoted") else "",
        _offset(record, "rejoined") if record.get("rejoined") else "",
        _why(record),
    ]


def failover_line(record: Body) -> str:
    """One failover in a line: ``switchover done, A -> B, 0 bytes lost, started <when>``."""
    parts = [
        f"{record.get('kind')} {record.get('state')}",
        f"{record.get('old_primary')} -> {record.get('new_primary') or '?'}",
    ]
    if record.get("lost_bytes") is not None:
        parts.append(f"{record['lost_bytes']} bytes lost")
    parts.append(f"started {_moment(record.get('started'))}")
    line = ", ".join(parts)
    return f"{line}: {record['message']}" if record.get("message") else line


# -- the commands -------------------------------------------------------------------------------


@click.command("detach-replica")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_detach_replica(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Make replica INSTANCE a standalone, writable instance (it keeps the data it replicated)."""
    app.api.request("PUT", inst_path(instance_id), {"instance": {"replica_of": None}})
    if wait:
        inst = wait_for(app, instance_id, gone=False, timeout=wait_timeout) or {}
        if inst.get("replica_of"):
            raise click.ClickException(
                f"instance {instance_id} is still a replica: {fmt.fault_message(inst)}"
            )
        app.done(f"Instance {instance_id} is no longer a replica.")
    else:
        app.done(f"Instance {instance_id} is being detached from its source.")


@click.command("promote")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_promote(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Make replica INSTANCE the replica source of its group (a switchover).

    Its source stops taking writes, INSTANCE replays them all and takes its place, and the old
    source and the other replicas follow it: nothing written is lost. Both must be ACTIVE.
    """
    action: Body = {"promote_to_replica_source": {}}
    app.api.request("POST", f"{inst_path(instance_id)}/action", action)
    if not wait:
        app.done(f"Replica {instance_id} is being promoted to replica source.")
        return
    inst = wait_for(app, instance_id, gone=False, timeout=wait_timeout) or {}
    if inst.get("replica_of") or inst.get("fault"):
        raise click.ClickException(
            f"instance {instance_id} was not promoted: {fmt.fault_message(inst)}"
        )
    record = latest_failover(app, inst)

    def render() -> fmt.Pairs:
        items: list[tuple[str, Any]] = [
            ("replicas", [r.get("id") for r in inst.get("replicas") or []] or None)
        ]
        if record is not None:
            items.append(("last_failover", failover_line(record)))
        return fmt.Pairs.of(items)

    app.done(f"Instance {instance_id} is the replica source now.")
    app.output({"instance": inst}, render)


@click.command("eject")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_eject(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Replace replica source INSTANCE, whose agent stopped reporting, by its best replica.

    The replica that replayed the most takes its place at once (writes INSTANCE had not sent
    yet are lost, see 'cove instance failovers'); INSTANCE rejoins as a replica when it
    reports again. Refused while INSTANCE reports: promote one of its replicas then. --wait
    waits until the replica is promoted.
    """
    known = {str(f.get("id")) for f in failovers_of(app, instance_id)} if wait else set()
    app.api.request("POST", f"{inst_path(instance_id)}/action", {"eject_replica_source": {}})
    if not wait:
        app.done(f"Replica source {instance_id} is being ejected.")
        return

    def look() -> Seen[Body]:
        found = [
            f
            for f in failovers_of(app, instance_id)
            if str(f.get("id")) not in known and f.get("old_primary") == instance_id
        ]
        if not found:
            return Seen("failover not recorded yet", {})
        record = found[0]
        state = str(record.get("state"))
        failure = None
        if state == "failed":
            failure = f"the eject of {instance_id} failed: {record.get('message') or _why(record)}"
        return Seen(f"failover {state}", record, done=state in _EJECT_ENDS, failure=failure)

    record = poll(
        look,
        timeout=wait_timeout,
        subject=f"the eject of {instance_id}",
        see=f"cove instance failovers {instance_id}",
    )
    app.output({"failover": record}, lambda: _ejected(instance_id, record))


def _ejected(instance_id: str, record: Body) -> str:
    lost = record.get("lost_bytes")
    loss = "the writes lost are not known" if lost is None else f"{lost} bytes lost"
    then = (
        "it rejoined as a replica"
        if record.get("state") == "done"
        else "it rejoins as a replica when it reports again"
    )
    return (
        f"Instance {record.get('new_primary')} replaced {instance_id} as replica source "
        f"({loss}); {then}."
    )


@click.command("failovers")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.pass_obj
def instance_failovers(app: App, instance_id: str) -> None:
    """List the changes of primary of INSTANCE's replication group, newest first.

    Promoted and Rejoined are seconds after Started (all times UTC); Lost bytes is how far the
    promoted replica was behind the old primary's last known position (empty: not known).
    """
    items = failovers_of(app, instance_id)
    rows = (failover_row(f) for f in items)
    app.output({"failovers": items}, lambda: fmt.Table.of(FAILOVER_HEADERS, rows))


@click.command("replication")
@click.argument("instance_id", metavar="INSTANCE", type=INSTANCE_REF)
@click.option(
    "--synchronous/--asynchronous",
    default=None,
    help="The group's mode: with --synchronous a commit returns once a replica holds it.",
)
@click.option(
    "--auto-failover/--no-auto-failover",
    default=None,
    help="Whether a replica takes the place of a lost source by itself.",
)
@click.option(
    "--weight",
    type=click.IntRange(0, 1000),
    default=None,
    help="Rank of INSTANCE among equally advanced replicas when one is promoted (default 100).",
)
@click.pass_obj
def instance_replication(
    app: App,
    instance_id: str,
    synchronous: bool | None,
    auto_failover: bool | None,
    weight: int | None,
) -> None:
    """Set the replication of INSTANCE's group (its mode and automatic failover) and its
    own promotion weight; with no option, show them."""
    wanted = {
        key: value
        for key, value in (
            ("synchronous", synchronous),
            ("auto_failover", auto_failover),
            ("weight", weight),
        )
        if value is not None
    }
    if wanted:
        app.api.request("PUT", inst_path(instance_id), {"instance": {"replication": wanted}})
    inst = need(app.api.request("GET", inst_path(instance_id)), "instance")
    found = inst.get("replication")
    if not found:
        raise click.ClickException(f"instance {instance_id} is in no replication group")
    items = [(key, found.get(key)) for key in ("synchronous", "auto_failover", "weight")]
    endpoints = inst.get("endpoints") or {}
    items += [(key, endpoints.get(key)) for key in ("read_write", "read_only")]
    app.output({"replication": found}, lambda: fmt.Pairs.of(items))


COMMANDS = (
    instance_detach_replica,
    instance_promote,
    instance_eject,
    instance_failovers,
    instance_replication,
)
