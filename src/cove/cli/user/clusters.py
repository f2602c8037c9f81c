"""The ``cove cluster`` commands: create, list, show, grow, shrink, restart and delete."""

from __future__ import annotations

import click

from cove.cli import userfmt as fmt
from cove.cli.user.app import App
from cove.cli.user.client import ApiError, need
from cove.cli.user.refs import CLUSTER_REF, FLAVOR_NAME, INSTANCE_REF
from cove.cli.user.waiting import Seen, poll, wait_option, wait_timeout_option
from cove.cli.userfmt import Body

CLUSTER_HEADERS = ("ID", "Name", "Datastore", "Task", "Members", "Endpoint")


def _endpoint(cluster: Body) -> str:
    """Where clients reach the cluster: its load-balanced address and port."""
    ips = cluster.get("ip") or []
    if not ips:
        return ""
    port = fmt.DEFAULT_PORTS.get(str((cluster.get("datastore") or {}).get("type")), "")
    return f"{ips[0]}:{port}" if port else str(ips[0])


def _health(member: Body) -> str:
    """How the member last saw its cluster: its state and how many members it counts."""
    health = member.get("health")
    if not health:
        return ""
    return f"{health.get('state')} ({health.get('cluster_size')} members)"


def _datastore(cluster: Body) -> str:
    store = cluster.get("datastore") or {}
    return f"{store.get('type', '')} {store.get('version', '')}".strip()


def _row(cluster: Body) -> list[object]:
    members = cluster.get("instances") or []
    task = (cluster.get("task") or {}).get("name", "")
    return [
        cluster.get("id"),
        cluster.get("name"),
        _datastore(cluster),
        task,
        len(members),
        _endpoint(cluster),
    ]


def _show(app: App, cluster: Body) -> None:
    def render() -> fmt.Pairs:
        task = cluster.get("task") or {}
        items: list[tuple[str, object]] = [
            ("id", cluster.get("id")),
            ("name", cluster.get("name")),
            ("datastore", _datastore(cluster)),
            ("task", f"{task.get('name', '')}: {task.get('description', '')}"),
            ("endpoint", _endpoint(cluster) or "(not served yet)"),
            ("created", cluster.get("created")),
        ]
        for key in ("locality", "configuration"):
            if cluster.get(key):
                items.append((key, cluster[key]))
        members = cluster.get("instances") or []
        table = fmt.Table.of(
            [
                "Member",
                "Name",
                "Type",
                "Weight",
                "Status",
                "In cluster",
                "Flavor",
                "Size",
                "Address",
            ],
            (
                [
                    m.get("id"),
                    m.get("name"),
                    m.get("type"),
                    m.get("weight", ""),
                    m.get("status"),
                    _health(m),
                    (m.get("flavor") or {}).get("id"),
                    (m.get("volume") or {}).get("size"),
                    ", ".join(m.get("ip") or []),
                ]
                for m in members
            ),
        )
        return fmt.Pairs.of(items, table, "members")

    app.output({"cluster": cluster}, render)


def _wait(app: App, cluster_id: str, *, gone: bool, timeout: float) -> Body | None:
    """Poll the cluster until its task is NONE with every member ACTIVE (or, with ``gone``,
    until it no longer exists). Raises click.ClickException when a member is in ERROR, when
    ``timeout`` seconds pass, or on Ctrl-C."""

    def look() -> Seen[Body | None]:
        try:
            cluster: Body = need(app.api.get(f"clusters/{cluster_id}"), "cluster")
        except ApiError as exc:
            if gone and exc.code == 404:
                return Seen("DELETED", None, done=True)
            raise
        task = str((cluster.get("task") or {}).get("name", "UNKNOWN"))
        statuses = [str(m.get("status")) for m in cluster.get("instances") or []]
        failed = [m for m in cluster.get("instances") or [] if m.get("status") == "ERROR"]
        failure = None
        if failed and not gone:
            failure = (
                f"member {failed[0].get('id')} of cluster {cluster_id} is in ERROR "
                f"(see 'cove instance show {failed[0].get('id')}')"
            )
        ready = sum(s == "ACTIVE" for s in statuses)
        label = f"{task}, {ready}/{len(statuses)} members ACTIVE"
        done = not gone and task == "NONE" and ready == len(statuses)
        return Seen(label, dict(cluster), done=done, failure=failure)

    return poll(
        look,
        timeout=timeout,
        subject=f"cluster {cluster_id}",
        see=f"cove cluster show {cluster_id}",
    )


@click.group("cluster")
def cluster() -> None:
    """Clusters: several instances serving as one (MariaDB Galera, PostgreSQL primary and
    weighted replicas, Redis Cluster)."""


def _member(flavor: str, size: int, network: str | None) -> Body:
    item: Body = {"flavorRef": flavor, "volume": {"size": size}}
    if network:
        item["nics"] = [{"net-id": network}]
    return item


@cluster.command("create")
@click.argument("name")
@click.option("--datastore", required=True, help="Datastore type, e.g. mariadb.")
@click.option("--datastore-version", required=True, help="Datastore version name, e.g. 10.11.")
@click.option(
    "--flavor",
    required=True,
    type=FLAVOR_NAME,
    help="Flavor of every member, by name or id (see 'cove flavor list').",
)
@click.option("--size", type=click.IntRange(min=1), required=True, help="Volume size in GB.")
@click.option(
    "--members", type=click.IntRange(min=1), default=3, show_default=True, help="How many."
)
@click.option("--network", help="Network of every member, by id or name.")
@click.option(
    "--weight",
    "weights",
    type=click.IntRange(0, 1000),
    multiple=True,
    help="Promotion weight of the next member, in order (PostgreSQL; repeatable).",
)
@wait_option
@wait_timeout_option(1800)
@click.pass_obj
def cluster_create(
    app: App,
    name: str,
    datastore: str,
    datastore_version: str,
    flavor: str,
    size: int,
    members: int,
    network: str | None,
    weights: tuple[int, ...],
    wait: bool,
    wait_timeout: float,
) -> None:
    """Create a cluster NAME of --members instances alike (on PostgreSQL the first is the
    primary, the others its replicas, promoted heaviest --weight first)."""
    if len(weights) > members:
        raise click.UsageError(f"{len(weights)} --weight given for {members} members.")
    items = [_member(flavor, size, network) for _ in range(members)]
    for item, weight in zip(items, weights, strict=False):
        item["weight"] = weight
    body = {
        "name": name,
        "datastore": {"type": datastore, "version": datastore_version},
        "instances": items,
    }
    made = need(app.api.request("POST", "clusters", {"cluster": body}), "cluster")
    if wait:
        made = _wait(app, str(need(made, "id")), gone=False, timeout=wait_timeout) or made
    _show(app, made)


@cluster.command("list")
@click.pass_obj
def cluster_list(app: App) -> None:
    """List clusters."""
    items = app.api.paginate("clusters", "clusters")
    app.output({"clusters": items}, lambda: fmt.Table.of(CLUSTER_HEADERS, map(_row, items)))


@cluster.command("show")
@click.argument("cluster_id", metavar="CLUSTER", type=CLUSTER_REF)
@click.pass_obj
def cluster_show(app: App, cluster_id: str) -> None:
    """Show CLUSTER, its task, endpoint and members."""
    _show(app, need(app.api.get(f"clusters/{cluster_id}"), "cluster"))


def _act(app: App, cluster_id: str, body: Body, wait: bool, wait_timeout: float) -> None:
    shown = need(app.api.request("POST", f"clusters/{cluster_id}", body), "cluster")
    if wait:
        shown = _wait(app, cluster_id, gone=False, timeout=wait_timeout) or shown
    _show(app, shown)


@cluster.command("grow")
@click.argument("cluster_id", metavar="CLUSTER", type=CLUSTER_REF)
@click.option(
    "--flavor", required=True, type=FLAVOR_NAME, help="Flavor of the new members (the cluster's)."
)
@click.option("--size", type=click.IntRange(min=1), required=True, help="Volume size in GB.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--weight", type=click.IntRange(0, 1000), help="Their promotion weight (PostgreSQL).")
@wait_option
@wait_timeout_option(1800)
@click.pass_obj
def cluster_grow(
    app: App,
    cluster_id: str,
    flavor: str,
    size: int,
    count: int,
    weight: int | None,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Add --count members to CLUSTER."""
    items = [_member(flavor, size, None) for _ in range(count)]
    if weight is not None:
        for item in items:
            item["weight"] = weight
    body = {"grow": items}
    _act(app, cluster_id, body, wait, wait_timeout)


@cluster.command("shrink")
@click.argument("cluster_id", metavar="CLUSTER", type=CLUSTER_REF)
@click.argument("members", metavar="MEMBER...", nargs=-1, required=True, type=INSTANCE_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def cluster_shrink(
    app: App, cluster_id: str, members: tuple[str, ...], wait: bool, wait_timeout: float
) -> None:
    """Remove the MEMBER instances from CLUSTER."""
    body = {"shrink": [{"id": member} for member in members]}
    _act(app, cluster_id, body, wait, wait_timeout)


@cluster.command("restart")
@click.argument("cluster_id", metavar="CLUSTER", type=CLUSTER_REF)
@wait_option
@wait_timeout_option(1800)
@click.pass_obj
def cluster_restart(app: App, cluster_id: str, wait: bool, wait_timeout: float) -> None:
    """Restart every member of CLUSTER, one at a time (a Galera cluster keeps serving)."""
    _act(app, cluster_id, {"restart": {}}, wait, wait_timeout)


@cluster.command("delete")
@click.argument("cluster_id", metavar="CLUSTER", type=CLUSTER_REF)
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def cluster_delete(app: App, cluster_id: str, wait: bool, wait_timeout: float) -> None:
    """Delete CLUSTER and every member."""
    app.api.request("DELETE", f"clusters/{cluster_id}")
    if wait:
        _wait(app, cluster_id, gone=True, timeout=wait_timeout)
        app.done(f"Cluster {cluster_id} deleted.")
    else:
        app.done(f"Cluster {cluster_id} is being deleted.")
